"""The backend contract: every method turns a :class:`ForensicImage` into a :class:`Result`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from forgectl.errors import UsageError, WeightsError
from forgectl.intake import ForensicImage

#: Shipped weights live here (``<method>-<config>.safetensors`` + ``.json`` model card).
#: ``FORGECTL_WEIGHTS_DIR`` overrides it (for installs outside a checkout).
WEIGHTS_DIR = Path(
    os.environ.get("FORGECTL_WEIGHTS_DIR")
    or Path(__file__).resolve().parent.parent.parent / "weights"
)

#: Where a learned network runs: in-process PyTorch, or an exported ONNX graph in onnxruntime
#: (``forgectl export``, docs/EXPORT.md). Classical methods always run in numpy/OpenCV.
RUNTIMES = ("torch", "onnx")

#: One call of a method's network on named numpy inputs, returning named numpy outputs; the
#: names and shapes are the method's export contract (:meth:`Backend.export_graph`). A learned
#: backend's inference loop (tiling, padding, blending) calls only this, so the same loop runs
#: on torch, onnxruntime or a TorchScript file.
TileRunner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def compute_threads() -> int:
    """``FORGECTL_THREADS`` or 2 (the CPU budget of one forgectl process)."""
    try:
        return max(1, int(os.environ.get("FORGECTL_THREADS", "2")))
    except ValueError:
        raise UsageError("FORGECTL_THREADS must be a positive integer") from None


@dataclass(frozen=True)
class MethodSpec:
    """What a method is and what it needs, known without running it.

    Attributes:
        name: registry name (``forgectl localize --method NAME``).
        summary: one line for ``forgectl methods``.
        kind: ``"classical"`` (training-free) or ``"learned"``.
        needs_jpeg: True when the method only works on JPEG files (DCT coefficients/tables).
        uses_jpeg: True when the method uses JPEG internals if present (but not only).
        weights: default weights file name inside ``weights/`` (learned methods), else None.
        paper: citation of the method the backend implements.
        decides_mask: True when the method makes its own mask (e.g. clustering) rather than
            thresholding the heatmap.
    """

    name: str
    summary: str
    kind: str = "classical"
    needs_jpeg: bool = False
    uses_jpeg: bool = False
    weights: str | None = None
    paper: str = ""
    decides_mask: bool = False


@dataclass
class Result:
    """What a method says about one image.

    Attributes:
        heatmap: (H, W) float32 in [0, 1] at the input's resolution; higher = more likely
            manipulated.
        mask: (H, W) bool; ``heatmap >= threshold`` unless the method decides its own mask.
        score: image-level probability-like score in [0, 1] that the image is manipulated.
        applicable: False when the method cannot analyse this input (then heatmap is zeros).
        note: a short sentence for the user (why not applicable, what the method assumed).
        maps: extra named (H, W) float32 maps in [0, 1] for ``explain`` (e.g. raw residuals).
        facts: JSON-ready extras (gate decision, restoration applied, matches found, ...).
    """

    heatmap: np.ndarray
    mask: np.ndarray
    score: float
    applicable: bool = True
    note: str = ""
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hm = np.asarray(self.heatmap)
        if hm.ndim != 2:
            raise ValueError(f"heatmap must be (H, W), got {hm.shape}")
        self.heatmap = np.clip(np.nan_to_num(hm.astype(np.float32), nan=0.0), 0.0, 1.0)
        mask = np.asarray(self.mask).astype(bool)
        if mask.shape != hm.shape:
            raise ValueError(f"mask {mask.shape} and heatmap {hm.shape} differ in shape")
        self.mask = mask
        self.score = float(np.clip(np.nan_to_num(float(self.score)), 0.0, 1.0))

    @classmethod
    def from_heatmap(
        cls, heatmap: np.ndarray, threshold: float, score: float | None = None, **kw: Any
    ) -> Result:
        """Threshold a heatmap into a mask; the score defaults to the heatmap's 99th percentile
        (robust to a few hot pixels, yet high when a region is flagged)."""
        hm = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
        if score is None:
            score = float(np.percentile(hm, 99)) if hm.size else 0.0
        return cls(heatmap=hm, mask=hm >= threshold, score=score, **kw)

    @classmethod
    def not_applicable(cls, image: ForensicImage, note: str) -> Result:
        shape = (image.height, image.width)
        return cls(
            heatmap=np.zeros(shape, np.float32),
            mask=np.zeros(shape, bool),
            score=0.0,
            applicable=False,
            note=note,
        )

    @property
    def tampered_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


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


def load_checked_state(
    model: Any, path: Path, skip_prefixes: tuple[str, ...] = ()
) -> None:
    """Load safetensors weights into ``model`` (a ``torch.nn.Module``) and put it in eval mode.

    Tensors are cast to float32 (weights may ship as float16); keys starting with
    ``skip_prefixes`` (training-only heads) are dropped. Every remaining key and shape must
    match the model the card's config built.

    Raises:
        WeightsError: unreadable file, or missing / unexpected / mis-shaped tensors.
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for malformed files
        raise WeightsError(f"cannot read {path}: {exc}") from exc
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in state.items()
        if not (skip_prefixes and k.startswith(skip_prefixes))
    }
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{Path(path).name} does not match its model card: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors (first: "
            f"{(missing + unexpected + wrong)[0]})"
        )
    model.load_state_dict(state, strict=True)
    model.eval()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Backend:
    """Base class of every method. Subclasses set ``spec`` and implement :meth:`analyze`.

    ``localize`` is the public entry point: it checks applicability and the output contract,
    so subclasses cannot return a heatmap of the wrong size.
    """

    spec: ClassVar[MethodSpec]
    default_threshold: ClassVar[float] = 0.5
    #: Runtimes the method runs on. Learned methods that implement :meth:`torch_runner` and
    #: :meth:`export_graph` add ``"onnx"``; ``"torch"`` is the default for every method.
    runtimes: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(
        self, weights: str | Path | None = None, threshold: float | None = None,
        runtime: str = "torch", **options: Any
    ) -> None:
        self.threshold = self.default_threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        if runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
        if runtime not in self.runtimes:
            raise UsageError(
                f"{self.spec.name} cannot run with --runtime {runtime} (only learned methods "
                "exported with `forgectl export` can)"
            )
        self.runtime = runtime
        self.options = options
        self.weights_path: Path | None = None
        if self.spec.weights is not None:
            default = self.spec.weights
            if runtime == "onnx":  # the shipped weights' exported twin, if someone made it
                default = str(Path(default).with_suffix(".onnx"))
            self.weights_path = Path(weights) if weights else WEIGHTS_DIR / default
            if not self.weights_path.is_file():
                hint = "" if runtime == "torch" else (
                    f" (make it with: forgectl export --method {self.spec.name} --format onnx "
                    f"--out {self.weights_path})")
                raise WeightsError(f"weights file not found: {self.weights_path}{hint}")
            is_onnx = self.weights_path.suffix.lower() == ".onnx"
            if runtime == "onnx" and not is_onnx:
                raise UsageError(
                    f"--runtime onnx runs an exported model: pass --weights FILE.onnx (made by "
                    f"`forgectl export`), not {self.weights_path.name}"
                )
            if runtime == "torch" and is_onnx:
                raise UsageError(
                    f"{self.weights_path.name} is an exported ONNX model: add --runtime onnx"
                )
        self._weights_sha: str | None = None
        self._onnx: OnnxRunner | None = None
        self._runner: TileRunner | None = None
        self._runner_override: TileRunner | None = None

    @property
    def weights_id(self) -> str | None:
        return self.weights_path.name if self.weights_path else None

    @property
    def weights_sha256(self) -> str | None:
        if self.weights_path is None:
            return None
        if self._weights_sha is None:
            self._weights_sha = sha256_file(self.weights_path)
        return self._weights_sha

    def model_card(self) -> dict[str, Any] | None:
        """The weights' model card: the ``.json`` next to them, or for ``runtime="onnx"`` the
        card ``forgectl export`` embedded in the ``.onnx`` file."""
        if self.weights_path is None:
            return None
        if self.runtime == "onnx":
            return self.onnx_runner().card
        card = self.weights_path.with_suffix(".json")
        if not card.is_file():
            return None
        return json.loads(card.read_text())

    def localize(self, image: ForensicImage) -> Result:
        """Analyse one image. Returns a Result whose maps match the image's (H, W)."""
        if self.spec.needs_jpeg and not image.is_jpeg:
            return Result.not_applicable(
                image, f"{self.spec.name} needs a JPEG file (DCT coefficients); input is "
                f"{image.format}"
            )
        result = self.analyze(image)
        shape = (image.height, image.width)
        if result.heatmap.shape != shape:
            raise RuntimeError(
                f"{self.spec.name} returned a {result.heatmap.shape} heatmap for a {shape} image"
            )
        for key, m in result.maps.items():
            if m.shape != shape:
                raise RuntimeError(f"{self.spec.name} map {key!r} has shape {m.shape}")
        return result

    def analyze(self, image: ForensicImage) -> Result:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ runtimes and export

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
            self._runner = self.onnx_runner() if self.runtime == "onnx" else self.torch_runner()
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
        """The in-process PyTorch :data:`TileRunner` (learned methods with an export hook)."""
        raise UsageError(f"{self.spec.name} has no network to run")

    def export_graph(self) -> ExportGraph:
        """The per-tile network and its contract, for ``forgectl export`` (learned methods)."""
        raise UsageError(
            f"{self.spec.name} cannot be exported: only learned methods have a network"
        )

    def reading(self, result: Result) -> str:
        """One plain sentence interpreting ``result`` for the ``explain`` report.

        Methods override this with what their heatmap means; the default states the numbers.
        """
        if not result.applicable:
            return result.note or "not applicable to this input"
        return (
            f"score {result.score:.2f}; {100 * result.tampered_fraction:.1f}% of pixels above "
            f"threshold {self.threshold:.2f}"
        )
