"""The shared machinery of learned methods: weights, runtimes, tiling, export.

A learned method is a network, a recipe and a small backend. The backend subclasses
:class:`LearnedBackend` and supplies:

- :meth:`~LearnedBackend.build_network`: the network for a model card's config;
- :meth:`~LearnedBackend.torch_runner` (optional): its network call as a :data:`TileRunner`
  (numpy feeds in, numpy outputs out); the default runs :meth:`export_graph`'s module, so the
  torch and exported paths are the same graph;
- :meth:`~LearnedBackend.export_graph`: the per-tile network and its contract;
- ``analyze``: inputs -> feeds per tile -> :meth:`~LearnedBackend.blend` (the one tiling
  loop, also for feature maps at a stride: whole-image methods such as clustering blend
  features and then decide once) -> :class:`Result`.

Everything else is here once: the lazy, digest-checked weights load (:mod:`forgectl.weights`),
the runtime choice (torch, or an exported ONNX file in onnxruntime with no torch import), the
``tile``/``overlap`` options and their checks, the thread budget.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from forgectl import weights as W
from forgectl.backends.base import Backend, compute_threads
from forgectl.backends.options import Option, require
from forgectl.errors import UsageError, WeightsError, require_torch
from forgectl.tiling import Tile, TilePlan, blend_tiles, plan_tiles

if TYPE_CHECKING:
    import torch

#: One call of a method's network on named numpy inputs, returning named numpy outputs; the
#: names and shapes are the method's export contract (:meth:`LearnedBackend.export_graph`). A
#: learned backend's inference loop (tiling, padding, blending) calls only this, so the same
#: loop runs on torch, onnxruntime or a TorchScript file.
TileRunner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def twin_name(weights: str | Path, runtime: str) -> Path:
    """The file a runtime runs for shipped weights ``weights``: ``<stem>.onnx`` for onnx,
    ``<stem>.int8.onnx`` (statically quantized from it) for int8, the weights for torch."""
    weights = Path(weights)
    suffix = {"onnx": ".onnx", "int8": ".int8.onnx"}.get(runtime)
    return weights if suffix is None else weights.with_suffix(suffix)


@dataclass(frozen=True)
class ExportGraph:
    """What a learned backend hands ``forgectl export``: its per-tile network and contract.

    Attributes:
        module: a ``torch.nn.Module`` in eval mode; ``module(*tensors)`` with the inputs in
            ``input_names`` order returns a tuple in ``output_names`` order. It must be free of
            Python control flow on tensor values (it is traced).
        input_names, output_names: names of the graph's inputs and outputs (the
            :data:`TileRunner` feed and result keys).
        dynamic_axes: ``{name: {axis: label}}`` of the axes that may change between calls.
        example: numpy feeds to trace with, at a size none of the parity samples has, so a
            shape frozen into the graph fails the parity check instead of passing it.
        contract: JSON-ready description of inputs, outputs and constraints, embedded in the
            exported file's model card (documented in docs/EXPORT.md).
    """

    module: Any
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    example: dict[str, np.ndarray]
    contract: dict[str, Any]


@dataclass(frozen=True)
class AuxiliaryNetwork:
    """A network a learned method runs besides its tiled one (MUN's noise extractor,
    ReConWave's restoration networks), from weights of its own.

    Its ONNX twin ``twin`` sits beside the weights; ``forgectl export --method M --shipped``
    writes it (parity-checked against PyTorch on ``samples``) and
    :meth:`LearnedBackend.auxiliary_runner` runs it when the method runs on onnx, so the
    method as a whole needs no torch.

    Attributes:
        name: a label unique within the method (``noiseprint``), recorded in the twin's card.
        weights: its ``.safetensors`` file (model card beside it).
        twin: its ``.onnx`` file.
        graph: builds the export graph from ``weights`` (imports torch; called only to export
            or to run on torch).
        samples: feeds for the parity check, at several sizes.
    """

    name: str
    weights: Path
    twin: Path
    graph: Callable[[], ExportGraph]
    samples: Callable[[], list[dict[str, np.ndarray]]]


def module_runner(graph: ExportGraph) -> TileRunner:
    """``graph.module`` in PyTorch as a :data:`TileRunner` (feeds in its input order)."""
    import torch

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in graph.input_names]
        with torch.inference_mode():
            outs = graph.module(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return {n: o.float().numpy() if o.is_floating_point() else o.numpy()
                for n, o in zip(graph.output_names, outs, strict=True)}

    return run


def network_runner(aux: AuxiliaryNetwork, runtime: str, method: str) -> TileRunner:
    """``aux`` (an auxiliary network of ``method``) as a :data:`TileRunner`: its ONNX twin,
    checked to be that network's export, on ``runtime="onnx"``; else its graph module in
    PyTorch. Backends reach it through :meth:`LearnedBackend.auxiliary_runner`; callers
    without a backend (``forgectl restore``, the ``--restore`` stage) call it directly.

    Raises:
        WeightsError: the twin is missing or is not that network's export.
    """
    if runtime != "onnx":
        return module_runner(aux.graph())
    if not aux.twin.is_file():
        raise WeightsError(f"{method} on onnx needs {aux.twin} (make it with: forgectl export "
                           f"--method {method} --shipped)")
    runner = OnnxRunner(aux.twin)
    made_for = ((runner.card or {}).get("export") or {}).get("network")
    if made_for != aux.name:
        raise WeightsError(f"{aux.twin.name} is not the export of {method}'s {aux.name} "
                           f"network; export it again with `forgectl export --method {method} "
                           "--shipped`")
    return runner


class OnnxRunner:
    """An exported graph in onnxruntime: a :data:`TileRunner` that needs no torch.

    ``model`` is a ``.onnx`` path or the serialized bytes; ``card`` is the model card that
    ``forgectl export`` embedded (metadata key ``model_card``), or None.

    Threads: ``FORGECTL_THREADS`` (default 2) intra-op, one inter-op, and no spin-waiting, so
    the worker threads sleep between runs instead of burning the cores they were given.
    """

    def __init__(self, model: Path | bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or compute_threads()
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3  # warnings about unused initializers are noise to users
        name = "the exported model" if isinstance(model, bytes) else str(model)
        #: The file's sha256 when its folder's SHA256SUMS checked it (records reuse it).
        self.sha256: str | None = None
        if not isinstance(model, bytes):
            self.sha256 = W.check_recorded_sha256(Path(model))  # a damaged twin is refused
        try:
            source = model if isinstance(model, bytes) else str(model)
            self.session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own (multi-line) types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(f"cannot load ONNX model {name}: {first}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.card: dict[str, Any] | None = (
                json.loads(meta["model_card"]) if "model_card" in meta else None
            )
        except ValueError as exc:
            raise WeightsError(f"model card in {name} is not JSON: {exc}") from exc

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise WeightsError(f"ONNX model expects inputs {self.input_names}, missing {missing}")
        arrays = {n: np.ascontiguousarray(feeds[n]) for n in self.input_names}
        return dict(zip(self.output_names, self.session.run(self.output_names, arrays),
                        strict=True))


def tiling_options(tile: int = 384, overlap: int = 64, multiple: int = 32) -> tuple[Option, ...]:
    """The ``tile`` and ``overlap`` options every tiled learned method has."""
    return (
        Option("tile", tile, f"tile size in pixels (multiple of {multiple}); larger images "
               "are cut into overlapping tiles", minimum=64, maximum=4096, multiple_of=multiple),
        Option("overlap", overlap, "tile overlap in pixels (multiple of 8, below half the "
               "tile)", minimum=0, maximum=2048, multiple_of=8),
    )


def flip_option(default: bool = False) -> Option:
    """The ``flip`` option of methods that can average in the mirrored image's heatmap."""
    return Option("flip", default, "test-time augmentation: also analyze the left-right "
                  "mirrored image and average the two heatmaps (about twice the time)")


def average_with_mirror(
    heat: np.ndarray, rgb: np.ndarray, heatmap_of: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``heat`` averaged with the heatmap of the left-right mirrored image, mirrored back.

    Only whole 8x8 blocks are mirrored (columns ``[0, W // 8 * 8)``): block edges then land on
    block edges, so a JPEG grid, and the traces a method reads from it, stay where a mirrored
    JPEG would have them; the last ``W mod 8`` columns keep the single pass.

    Args:
        heat: (H, W) float heatmap of ``rgb``.
        rgb: (H, W, 3) uint8 image ``heat`` was computed from.
        heatmap_of: (H, w8, 3) uint8 mirrored image -> its (H, w8) heatmap.

    Returns:
        (H, W) float32, a new array.
    """
    if heat.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap {heat.shape} does not match image {rgb.shape[:2]}")
    w8 = rgb.shape[1] // 8 * 8
    out = np.array(heat, np.float32)
    if w8 == 0:
        return out
    other = np.asarray(heatmap_of(np.ascontiguousarray(rgb[:, :w8][:, ::-1])), np.float32)
    out[:, :w8] = 0.5 * (out[:, :w8] + other[:, ::-1])
    return out


class LearnedBackend(Backend):
    """Base of learned methods: see the module docstring for what a subclass supplies.

    Class attributes:
        multiple: network input sizes must be multiples of this (the encoder's last stride).
        training_only_prefixes: state-dict keys of training-only heads, dropped on load.
    """

    runtimes: ClassVar[tuple[str, ...]] = ("torch", "onnx")
    multiple: ClassVar[int] = 32
    training_only_prefixes: ClassVar[tuple[str, ...]] = ()
    OPTIONS: ClassVar[tuple[Option, ...]] = tiling_options()

    def __init__(
        self, weights: str | Path | None = None, threshold: float | None = None,
        runtime: str = "auto", **options: Any
    ) -> None:
        super().__init__(weights=weights, threshold=threshold, runtime=runtime, **options)
        runtime = self.runtime
        default = self.spec.weights
        if default is None:
            raise TypeError(f"{type(self).__name__}.spec names no weights file")
        if runtime != "torch":  # the shipped weights' exported twin (forgectl export --shipped)
            default = str(twin_name(default, runtime))
        self.weights_path = Path(weights) if weights else W.weights_dir() / default
        if not self.weights_path.is_file():
            hint = "" if runtime == "torch" else (
                f" (make it with: forgectl export --method {self.spec.name} "
                f"{'--int8 --calibration DIR' if runtime == 'int8' else '--shipped'})")
            raise WeightsError(f"weights file not found: {self.weights_path}{hint}")
        is_onnx = self.weights_path.suffix.lower() == ".onnx"
        if self.engine == "onnx" and not is_onnx:
            raise UsageError(
                f"--runtime onnx runs an exported model: pass --weights FILE.onnx (made by "
                f"`forgectl export`), not {self.weights_path.name}"
            )
        if runtime == "torch" and is_onnx:
            raise UsageError(
                f"{self.weights_path.name} is an exported ONNX model: add --runtime onnx"
            )
        if self.engine == "torch":  # refused before any image: not one internal error per image
            require_torch(f"{self.spec.name} on the torch runtime (--runtime torch, or "
                          f"--weights {self.weights_path.name})")
        self._weights_sha: str | None = None
        self._card: dict[str, Any] | None = None
        self._model: Any = None
        self._onnx: OnnxRunner | None = None
        self._runner: TileRunner | None = None
        self._runner_override: TileRunner | None = None
        self._auxiliary: dict[str, TileRunner] = {}
        self._norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def auto_runtime(self, weights: str | Path | None) -> str:
        """``--weights FILE`` runs on what the file is (``.onnx``: onnx); the shipped weights
        run on their int8 twin when the method has one, else on their ONNX twin when it is
        there (no torch needed either way), else on torch."""
        if weights is not None:
            return "onnx" if Path(weights).suffix.lower() == ".onnx" else "torch"
        for runtime in ("int8", "onnx"):
            if runtime in self.runtimes and (
                    W.weights_dir() / twin_name(str(self.spec.weights), runtime)).is_file():
                return runtime
        return "torch"

    @property
    def engine(self) -> str:
        """What runs the network: ``onnx`` (onnxruntime, for the onnx and int8 runtimes) or
        ``torch``."""
        return "torch" if self.runtime == "torch" else "onnx"

    def check_options(self) -> None:
        if "tile" in self.options:
            tile, overlap = self.options["tile"], self.options["overlap"]
            require(tile % self.multiple == 0,
                    f"{self.spec.name}: tile must be a multiple of {self.multiple}")
            require(overlap < tile // 2,
                    f"{self.spec.name}: overlap must be below half the tile ({tile // 2})")

    # ------------------------------------------------------------------ weights

    @property
    def weights_id(self) -> str | None:
        return self.weights_path.name

    @property
    def weights_sha256(self) -> str | None:
        if self._weights_sha is None:
            checked = self._onnx.sha256 if self._onnx is not None else None
            self._weights_sha = checked or W.sha256_file(self.weights_path)
        return self._weights_sha

    def model_card(self) -> dict[str, Any]:
        """The weights' model card: the ``.json`` next to them, or for ``runtime="onnx"`` the
        card ``forgectl export`` embedded in the ``.onnx`` file."""
        if self._card is None:
            if self.engine == "onnx":
                self._card = self.onnx_runner().card or {}
            else:
                self._card = W.read_card(self.weights_path) or {}
        return self._card

    def model_config(self) -> dict[str, Any]:
        """The network config of the model card."""
        return W.network_config(self.model_card(), self.weights_path)

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` per RGB channel of the network's ``image`` input, for pixels scaled
        to [0, 1]. With ``runtime="onnx"`` they come from the contract embedded in the exported
        file, so that path never imports torch; else from :meth:`torch_normalization`."""
        if self._norm is None:
            if self.engine == "onnx":
                try:
                    spec = self.model_card()["export"]["inputs"]["image"]
                    self._norm = tuple(spec["mean"]), tuple(spec["std"])
                except (KeyError, TypeError) as exc:
                    raise WeightsError(f"{self.weights_path.name}: model card has no input "
                                       f"normalization ({exc!r})") from exc
            else:
                self._norm = self.torch_normalization()
        return self._norm

    def torch_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` of the encoder the card's config names (``encoder``)."""
        from forgectl.nets.encoders import encoder_entry

        entry = encoder_entry(self.model_config()["encoder"])
        return tuple(entry.mean), tuple(entry.std)

    def build_network(self, config: dict[str, Any]) -> torch.nn.Module:
        """A network for ``config`` with random (never pretrained) weights."""
        raise NotImplementedError

    def model(self) -> Any:
        """The network with the shipped (or ``--weights``) weights, loaded once."""
        if self._model is None:
            import torch

            torch.set_num_threads(compute_threads())
            self._model, self._card = W.load_network(
                self.weights_path, self.build_network, self.training_only_prefixes)
        return self._model

    # ------------------------------------------------------------------ runtimes

    def onnx_runner(self) -> OnnxRunner:
        """The session of the exported model (``runtime="onnx"``), checked to be this method's."""
        if self._onnx is None:
            runner = OnnxRunner(self.weights_path)
            made_for = ((runner.card or {}).get("export") or {}).get("method")
            if made_for != self.spec.name:
                what = f"method {made_for!r}" if made_for else "no forgectl model card"
                raise WeightsError(
                    f"{self.weights_path.name} was not exported for {self.spec.name} ({what}); "
                    "export it with `forgectl export`"
                )
            self._onnx = runner
        return self._onnx

    def tile_runner(self) -> TileRunner:
        """The network call the inference loop uses: an override set by :meth:`running`, else
        the exported graph (``runtime="onnx"``), else the method's :meth:`torch_runner`."""
        if self._runner_override is not None:
            return self._runner_override
        if self._runner is None:
            self._runner = self.onnx_runner() if self.engine == "onnx" else self.torch_runner()
        return self._runner

    @contextmanager
    def running(self, runner: TileRunner) -> Iterator[None]:
        """Inside the block, run the network through ``runner`` (the export parity check runs
        the exported file through the method's own tiling and blending this way)."""
        previous, self._runner_override = self._runner_override, runner
        try:
            yield
        finally:
            self._runner_override = previous

    def torch_runner(self) -> TileRunner:
        """The in-process PyTorch :data:`TileRunner`: the export graph's module, run on the
        feeds in its input order (methods with a faster torch path override this)."""
        return module_runner(self.export_graph())

    # ------------------------------------------------------------------ int8 twin
    # Methods that list "int8" in ``runtimes`` supply these two; ``forgectl export --int8``
    # (forgectl.export.quantize_int8) uses them to quantize the onnx twin.

    def int8_float_nodes(self, graph: Any) -> list[str]:
        """Names of the nodes of the onnx twin ``graph`` (``onnx.ModelProto``) kept in float."""
        raise NotImplementedError(f"{self.spec.name} has no int8 recipe")

    def calibration_feeds(self, image: Any, rng: np.random.Generator, count: int
                          ) -> list[dict[str, np.ndarray]]:
        """``count`` network feeds from ``image`` (a ForensicImage) to calibrate int8 ranges."""
        raise NotImplementedError(f"{self.spec.name} has no int8 recipe")

    # ------------------------------------------------------------------ auxiliary networks

    def auxiliary_networks(self) -> tuple[AuxiliaryNetwork, ...]:
        """The networks this method runs besides its tiled one (none by default)."""
        return ()

    def auxiliary_runner(self, name: str) -> TileRunner:
        """The auxiliary network ``name`` as a :data:`TileRunner`, loaded once: its ONNX twin
        (checked to be that network's export) with ``runtime="onnx"``, else PyTorch."""
        if name not in self._auxiliary:
            aux = {a.name: a for a in self.auxiliary_networks()}.get(name)
            if aux is None:
                raise KeyError(f"{self.spec.name} has no auxiliary network {name!r}")
            # Auxiliary networks have no int8 twins: int8 runs them on their float twins.
            self._auxiliary[name] = network_runner(aux, self.engine, self.spec.name)
        return self._auxiliary[name]

    def parity_output(self, image: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """What ``forgectl export`` compares between PyTorch and the exported file: the
        heatmap (and facts) by default; methods that decide after the network (clustering)
        compare the network's blended output instead."""
        result = self.localize(image)
        return result.heatmap, result.facts

    # ------------------------------------------------------------------ tiling

    def plan(self, height: int, width: int) -> TilePlan:
        """How an image of this size is padded and cut (the ``tile``/``overlap`` options)."""
        return plan_tiles(height, width, self.options["tile"], self.options["overlap"],
                          self.multiple)

    def blend(
        self,
        plan: TilePlan,
        feeds: Callable[[Tile], dict[str, np.ndarray]],
        output: str = "mask",
        channels: int | None = None,
        stride: int = 1,
    ) -> np.ndarray:
        """Run the network on every tile and blend one output.

        Args:
            plan: from :meth:`plan`.
            feeds: a tile -> the network's inputs for it.
            output: the output to blend; ``(1, 1, h, w)`` maps (``channels=None``) or
                ``(1, C, h, w)`` feature stacks, at ``stride``.

        Returns:
            (H', W') or (C, H', W') float32 over the image (``H' = ceil(H / stride)``).
        """
        run = self.tile_runner()

        def predict(tile: Tile) -> np.ndarray:
            out = np.asarray(run(feeds(tile))[output], np.float32)
            return out[0, 0] if channels is None else out[0]

        return blend_tiles(plan, predict, channels, stride)
