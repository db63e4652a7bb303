"""Library side of `forgectl export`: a learned method's per-tile network as ONNX or TorchScript.

What is exported is the network one call of the backend's inference loop runs (its
:meth:`~forgectl.backends.base.Backend.export_graph`: inputs, outputs, dynamic axes, contract),
not the loop itself: tiling, padding, the per-image gate decision and blending stay in the
backend, which runs the exported file through the same loop (``localize --runtime onnx``).

Steps: trace a copy of the network with a few blocks rewritten into exactly equivalent,
trace-friendly forms (:func:`exportable_copy`), serialize it in memory, load it back with its
runtime (onnxruntime / ``torch.jit.load``), run the backend on synthetic sample images once on
PyTorch and once on the exported file, and write the file (atomically, with the model card
embedded) only if every heatmap agrees within the tolerance. Contract: docs/EXPORT.md.

Heavy libraries (torch, onnx, onnxruntime) are imported inside functions.
"""

from __future__ import annotations

import contextlib
import io
import json
import types
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl import __version__
from forgectl.backends.base import Backend
from forgectl.backends.learned import (
    AuxiliaryNetwork,
    ExportGraph,
    LearnedBackend,
    OnnxRunner,
    TileRunner,
)
from forgectl.errors import ForgectlError, UsageError
from forgectl.intake import ForensicImage, image_from_array
from forgectl.synth.scenes import natural_image
from forgectl.weights import record_sha256

if TYPE_CHECKING:
    import torch

FORMATS = ("onnx", "torchscript")
#: ONNX opset of the TorchScript-based exporter (onnxruntime >= 1.18 runs it).
OPSET = 17
#: Largest allowed |heatmap difference| between the exported file and PyTorch (issue #7).
DEFAULT_TOLERANCE = 1e-4
#: Parity samples: (height, width, JPEG quality, or None for a pixel-only image). Together they
#: cover a tiled image (gate over two tiles, blending), a padded single tile on the gate route
#: and an input without JPEG data (RGB route); none has the trace size.
SAMPLES: tuple[tuple[int, int, int | None], ...] = ((384, 512, 90), (200, 296, 75), (120, 88, None))
#: Key of the model card in ONNX metadata_props / file name in TorchScript's extra files.
ONNX_CARD_KEY = "model_card"
TORCHSCRIPT_CARD_FILE = "model_card.json"


class ExportError(ForgectlError):
    """The network could not be exported (tracing or serialization failed)."""


class ParityError(ExportError):
    """The exported file's heatmaps differ from PyTorch's by more than the tolerance."""


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how well it matched PyTorch."""

    path: Path
    format: str
    method: str
    weights: str | None
    tolerance: float
    max_abs_diff: float
    samples: list[dict[str, Any]] = field(default_factory=list)
    size_bytes: int = 0


# ---------------------------------------------------------------------- sample images


def sample_images(sizes: Sequence[tuple[int, int, int | None]] | None = None
                  ) -> list[ForensicImage]:
    """Synthetic parity inputs (default :data:`SAMPLES`): real JPEGs (true DCT coefficients
    and tables) or pixel-only images."""
    sizes = SAMPLES if sizes is None else sizes
    images = []
    for i, (h, w, quality) in enumerate(sizes):
        kind = f"q{quality}.jpg" if quality else "png"
        images.append(image_from_array(natural_image(h, w, seed=i), name=f"sample{i}-{h}x{w}-"
                                       f"{kind}", jpeg_quality=quality))
    return images


# ---------------------------------------------------------------------- trace-friendly blocks
# Rewrites of nets/ blocks that compute the same function in a form a trace keeps general.
# nets/ keeps the forms that are fastest in PyTorch; the parity check proves each rewrite.


def _pool_matrix(n: Any, bins: int) -> torch.Tensor:
    """(bins, n) float32 averaging weights of ``adaptive_avg_pool`` along one axis.

    Bin i averages ``[floor(i n / bins), ceil((i + 1) n / bins))``, PyTorch's rule. Built from
    the traced size ``n``, so the graph stays exact for every input size (the exporter's own
    adaptive pooling bakes the kernel of the trace size in, or refuses dynamic sizes).
    """
    import torch

    i = torch.arange(bins)
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
    j = torch.arange(n)
    inside = (j[None] >= start[:, None]) & (j[None] < end[:, None])
    return inside.float() / (end - start)[:, None].float()


def _pyramid_pooling_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """``PyramidPooling.forward`` with pooling as matrix products and an always-run resize.

    ``resize_to`` skips the resize when sizes already match, a Python branch a trace freezes
    at the trace size; resizing to the same size is the identity, so it always runs here.
    """
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2], x.shape[-1]
    pooled = []
    for bins, branch in zip(self.bins, self.branches, strict=True):
        p = torch.einsum("ph,bchw,qw->bcpq", _pool_matrix(h, bins), x, _pool_matrix(w, bins))
        pooled.append(F.interpolate(branch(p), size=(h, w), mode="bilinear",
                                    align_corners=False))
    return self.fuse(torch.cat([x, *pooled], dim=1))


def _dynamic_filter_forward(self: Any, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``DynamicWeightFilter.forward`` for batch 1 (the export contract).

    The original folds the batch into the channels so the kernel's shape depends on the batch
    size, and the ONNX exporter refuses convolutions whose kernel shape is not static.
    """
    import torch
    import torch.nn.functional as F

    k = self.kernel_size
    alpha = self.mixing(x, g)  # (1, num_basis)
    kernel = torch.einsum("bn,nckij->bckij", alpha, self.basis).reshape(self.channels, 1, k, k)
    bias = (alpha @ self.basis_bias).reshape(self.channels)
    y = F.conv2d(x, kernel, bias, padding=self.dilation * (k // 2), dilation=self.dilation,
                 groups=self.channels)
    return x + self.pointwise(y)


def _attention_forward(self: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       need_weights: bool = False, **_: Any) -> tuple[torch.Tensor, None]:
    """``nn.MultiheadAttention.forward`` (batch first, eval) as plain matmuls.

    PyTorch's implementation reshapes with the sequence length as a Python int, which a trace
    freezes; splitting heads with ``unflatten`` on the channel axis keeps lengths symbolic.
    """
    import torch
    import torch.nn.functional as F

    heads = self.num_heads
    dim = self.embed_dim // heads
    wq, wk, wv = self.in_proj_weight.chunk(3)
    bq, bk, bv = self.in_proj_bias.chunk(3)
    q = F.linear(query, wq, bq).unflatten(-1, (heads, dim)).transpose(1, 2)
    k = F.linear(key, wk, bk).unflatten(-1, (heads, dim)).transpose(1, 2)
    v = F.linear(value, wv, bv).unflatten(-1, (heads, dim)).transpose(1, 2)
    attn = torch.softmax(q @ k.transpose(-2, -1) * dim ** -0.5, dim=-1)
    return self.out_proj((attn @ v).transpose(1, 2).flatten(2)), None


def exportable_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` (eval mode) with its blocks in trace-friendly form.

    The original stays untouched: it is the PyTorch reference of the parity check.
    """
    import copy

    from torch import nn

    from forgectl.nets.decoders import DynamicWeightFilter, PyramidPooling

    clone = copy.deepcopy(module).eval()
    for sub in clone.modules():
        if isinstance(sub, PyramidPooling):
            sub.forward = types.MethodType(_pyramid_pooling_forward, sub)
        elif isinstance(sub, DynamicWeightFilter):
            sub.forward = types.MethodType(_dynamic_filter_forward, sub)
        elif isinstance(sub, nn.MultiheadAttention):
            plain = (sub.batch_first and sub._qkv_same_embed_dim and sub.in_proj_bias is not None
                     and sub.bias_k is None and not sub.add_zero_attn)
            if not plain:
                raise ExportError("cannot export a MultiheadAttention that is not batch-first "
                                  "with packed projections and biases")
            sub.forward = types.MethodType(_attention_forward, sub)
    return clone


# ---------------------------------------------------------------------- serialization


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _example_args(graph: ExportGraph) -> tuple[torch.Tensor, ...]:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(graph.example[n]))
                 for n in graph.input_names)


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the warnings of tracing and TorchScript that users can do nothing about: trace
    warnings on shape checks (they hold for any valid input; parity runs other sizes), the
    exporter's notes, torch.jit's deprecation notices."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1")
        warnings.filterwarnings("ignore", message=r"The feature will be removed",
                                category=DeprecationWarning, module=r"torch\.onnx")
        # torch marks the torch.jit API deprecated; the TorchScript format still loads and runs
        # (docs/EXPORT.md recommends ONNX for that reason).
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


def onnx_bytes(graph: ExportGraph, module: torch.nn.Module) -> bytes:
    """Trace ``module`` into an ONNX model (bytes) with the graph's names and dynamic axes.

    Uses the TorchScript-based exporter (``dynamo=False``): it traces through the shape
    checks and needs no extra package (the dynamo exporter needs onnxscript).
    """
    import torch

    buf = io.BytesIO()
    try:
        with torch.no_grad(), _quiet_tracing():
            torch.onnx.export(
                module, _example_args(graph), buf, dynamo=False, opset_version=OPSET,
                input_names=list(graph.input_names), output_names=list(graph.output_names),
                dynamic_axes={k: dict(v) for k, v in graph.dynamic_axes.items()},
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types, with pages of graph dump
        raise ExportError(f"ONNX export failed: {_first_line(exc)}") from exc
    return buf.getvalue()


def with_onnx_card(model_bytes: bytes, card: dict[str, Any], node_names: bool = True) -> bytes:
    """The ONNX model with ``card`` as JSON in metadata_props[``model_card``], checked.

    ``node_names=False`` clears the nodes' names: optional in ONNX, and the exporter's module
    paths took 101 kB of mun's twin (26,218,466 -> 26,117,153 bytes). Only an int8 twin needs
    them, to pick the nodes it keeps in float (:meth:`LearnedBackend.int8_float_nodes`).
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    if not node_names:
        for node in model.graph.node:
            node.name = ""
    onnx.helper.set_model_props(model, {ONNX_CARD_KEY: json.dumps(card, sort_keys=True),
                                        "forgectl_version": __version__})
    model.doc_string = f"forgectl {card.get('export', {}).get('method', '')} per-tile network; " \
        "contract in the model_card metadata (docs/EXPORT.md)"
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ExportError(f"exported ONNX model is invalid: {_first_line(exc)}") from exc
    return model.SerializeToString()


def torchscript_module(graph: ExportGraph, module: torch.nn.Module) -> torch.jit.ScriptModule:
    """Trace ``module`` into TorchScript (sizes stay symbolic in a trace, as for ONNX)."""
    import torch

    try:
        with torch.no_grad(), _quiet_tracing():
            return torch.jit.trace(module, _example_args(graph), check_trace=False)
    except Exception as exc:
        raise ExportError(f"TorchScript export failed: {_first_line(exc)}") from exc


def torchscript_bytes(script: torch.jit.ScriptModule, card: dict[str, Any]) -> bytes:
    """Serialized TorchScript with ``card`` as the extra file ``model_card.json``."""
    import torch

    buf = io.BytesIO()
    with _quiet_tracing():
        torch.jit.save(script, buf, _extra_files={TORCHSCRIPT_CARD_FILE: json.dumps(
            card, sort_keys=True)})
    return buf.getvalue()


class TorchScriptRunner:
    """A TorchScript file as a :data:`~forgectl.backends.learned.TileRunner`."""

    def __init__(self, model: Path | bytes, input_names: Sequence[str],
                 output_names: Sequence[str]) -> None:
        import torch

        source = io.BytesIO(model) if isinstance(model, bytes) else str(model)
        extra = {TORCHSCRIPT_CARD_FILE: ""}
        with _quiet_tracing():
            self.module = torch.jit.load(source, map_location="cpu", _extra_files=extra)
        self.module.eval()
        self.card = json.loads(extra[TORCHSCRIPT_CARD_FILE]) if extra[TORCHSCRIPT_CARD_FILE] \
            else None
        self.input_names, self.output_names = list(input_names), list(output_names)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        with torch.inference_mode():
            outs = self.module(*args)
        # A graph with one output returns the tensor itself, not a 1-tuple.
        outs = outs if isinstance(outs, tuple | list) else (outs,)
        return {n: o.numpy() for n, o in zip(self.output_names, outs, strict=True)}


def read_card(path: Path) -> dict[str, Any] | None:
    """The model card embedded in an exported ``.onnx`` or TorchScript file, or None."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                 .metadata_props}
        return json.loads(props[ONNX_CARD_KEY]) if ONNX_CARD_KEY in props else None
    import torch

    extra = {TORCHSCRIPT_CARD_FILE: ""}
    with _quiet_tracing():
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[TORCHSCRIPT_CARD_FILE]) if extra[TORCHSCRIPT_CARD_FILE] else None


# ---------------------------------------------------------------------- parity and export


def check_parity(backend: Backend, runner: TileRunner, images: Sequence[ForensicImage],
                 tolerance: float = DEFAULT_TOLERANCE, label: str = "exported") -> list[dict]:
    """Run ``backend`` on each image with PyTorch and with ``runner`` through the same
    tiling, gate and blending; compare heatmaps.

    Returns one ``{"image", "size", "max_abs_diff", "modality"}`` row per image.

    Raises:
        ParityError: a heatmap differs by more than ``tolerance`` (or is not finite).
    """
    rows = []
    for image in images:
        ref, ref_facts = backend.parity_output(image)
        with backend.running(runner):
            got, got_facts = backend.parity_output(image)
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        worst = float(diff.max()) if diff.size else 0.0
        routes = (ref_facts.get("modality"), got_facts.get("modality"))
        rows.append({"image": image.name, "size": [image.height, image.width],
                     "max_abs_diff": worst, "modality": routes[0]})
        if not np.isfinite(worst) or worst > tolerance:
            route = "" if routes[0] == routes[1] else f", gate chose {routes[1]} not {routes[0]}"
            raise ParityError(
                f"{label} model differs from PyTorch on {image.name}: max |heatmap diff| "
                f"{worst:.2e} > tolerance {tolerance:.0e}{route}; nothing written"
            )
    return rows


def export_model(
    backend: Backend,
    fmt: str,
    out: Path,
    tolerance: float = DEFAULT_TOLERANCE,
    images: Sequence[ForensicImage] | None = None,
) -> ExportReport:
    """Export ``backend``'s network to ``out`` as ``fmt`` after checking parity on ``images``.

    Args:
        backend: a learned method on the torch runtime (its weights are what gets exported).
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: file to write (``.onnx`` for ONNX); written atomically, and only on success.
        tolerance: largest allowed |heatmap difference| per pixel.
        images: parity inputs (default: :func:`sample_images`).

    Raises:
        UsageError: bad format/output, or a method that cannot be exported.
        ExportError / ParityError: the export failed or does not match PyTorch.
    """
    from forgectl.outputs import write_bytes

    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    out = Path(out)
    if fmt == "onnx" and out.suffix.lower() != ".onnx":
        raise UsageError(f"--out must end in .onnx for ONNX (got {out.name})")
    if backend.spec.kind != "learned":
        raise UsageError(f"{backend.spec.name} is a classical method: it has no network to "
                         "export")
    if backend.runtime != "torch":
        raise UsageError("export starts from the PyTorch weights (runtime torch)")
    if backend.weights_path is not None and out.resolve() == backend.weights_path.resolve():
        raise UsageError(f"--out {out} would overwrite the weights being exported")
    if not tolerance >= 0:
        raise UsageError("tolerance must be >= 0")

    graph = backend.export_graph()
    module = exportable_copy(graph.module)
    images = list(images) if images is not None else sample_images()

    import torch

    card = dict(backend.model_card() or {})
    card["export"] = {
        "format": fmt,
        "method": backend.spec.name,
        "forgectl_version": __version__,
        "torch_version": torch.__version__,
        "opset": OPSET if fmt == "onnx" else None,
        "source_weights": backend.weights_id,
        "source_weights_sha256": backend.weights_sha256,
        "input_names": list(graph.input_names),
        "output_names": list(graph.output_names),
        "dynamic_axes": {k: {str(a): n for a, n in v.items()}
                         for k, v in graph.dynamic_axes.items()},
        **graph.contract,
    }

    runner: OnnxRunner | TorchScriptRunner
    names = "int8" in backend.runtimes
    if fmt == "onnx":
        data = with_onnx_card(onnx_bytes(graph, module), card, node_names=names)
        runner = OnnxRunner(data)
    else:
        data = torchscript_bytes(torchscript_module(graph, module), card)
        runner = TorchScriptRunner(data, graph.input_names, graph.output_names)
    # Parity runs on the serialized bytes as loaded back, i.e. the file users will get.
    rows = check_parity(backend, runner, images, tolerance, label=f"exported {fmt}")
    worst = max((r["max_abs_diff"] for r in rows), default=0.0)
    card["export"]["parity"] = {"tolerance": tolerance, "max_abs_diff": worst, "samples": rows,
                                "reference": "the PyTorch backend, same tiling and blending"}
    # Only metadata changes from here on: the graph is the one just checked.
    if isinstance(runner, TorchScriptRunner):
        data = torchscript_bytes(runner.module, card)
    else:
        data = with_onnx_card(data, card, node_names=names)
    write_bytes(out, data)
    record_sha256(out)
    return ExportReport(path=out, format=fmt, method=backend.spec.name,
                        weights=backend.weights_id, tolerance=tolerance, max_abs_diff=worst,
                        samples=rows, size_bytes=len(data))


def export_auxiliary(backend: LearnedBackend, aux: AuxiliaryNetwork,
                     tolerance: float = DEFAULT_TOLERANCE) -> ExportReport:
    """Export one of ``backend``'s auxiliary networks to its ONNX twin (``aux.twin``), after
    checking every float output against PyTorch on ``aux.samples()``.

    Raises:
        ExportError / ParityError: the export failed or does not match PyTorch.
    """
    import torch

    from forgectl import weights as W
    from forgectl.backends.learned import module_runner
    from forgectl.outputs import write_bytes

    graph = aux.graph()
    module = exportable_copy(graph.module)
    card = dict(W.read_card(aux.weights) or {})
    card["export"] = {
        "format": "onnx",
        "method": backend.spec.name,
        "network": aux.name,
        "forgectl_version": __version__,
        "torch_version": torch.__version__,
        "opset": OPSET,
        "source_weights": aux.weights.name,
        "source_weights_sha256": W.sha256_file(aux.weights),
        "input_names": list(graph.input_names),
        "output_names": list(graph.output_names),
        "dynamic_axes": {k: {str(a): n for a, n in v.items()}
                         for k, v in graph.dynamic_axes.items()},
        **graph.contract,
    }
    data = with_onnx_card(onnx_bytes(graph, module), card)
    reference, exported = module_runner(graph), OnnxRunner(data)
    rows = []
    for i, feeds in enumerate(aux.samples()):
        ref, got = reference(feeds), exported(feeds)
        worst = 0.0
        for name, value in ref.items():
            if np.issubdtype(value.dtype, np.floating):
                diff = np.abs(value.astype(np.float64) - got[name].astype(np.float64))
                worst = max(worst, float(diff.max()) if diff.size else 0.0)
            elif not np.array_equal(value, got[name]):
                worst = float("inf")
        shape = [list(v.shape) for v in feeds.values()]
        rows.append({"sample": i, "shapes": shape, "max_abs_diff": worst})
        if not np.isfinite(worst) or worst > tolerance:
            raise ParityError(f"exported {aux.name} network of {backend.spec.name} differs from "
                              f"PyTorch: max |diff| {worst:.2e} > tolerance {tolerance:.0e}; "
                              "nothing written")
    worst = max((r["max_abs_diff"] for r in rows), default=0.0)
    card["export"]["parity"] = {"tolerance": tolerance, "max_abs_diff": worst, "samples": rows,
                                "reference": "the same network in PyTorch, same feeds"}
    data = with_onnx_card(data, card)
    write_bytes(aux.twin, data)
    record_sha256(aux.twin)
    return ExportReport(path=aux.twin, format="onnx", method=backend.spec.name,
                        weights=aux.weights.name, tolerance=tolerance, max_abs_diff=worst,
                        samples=rows, size_bytes=len(data))


def shipped_twin(backend: Backend) -> Path:
    """Where a learned method's shipped ONNX twin lives: beside its shipped weights."""
    from forgectl.weights import weights_dir

    if backend.spec.weights is None:
        raise UsageError(f"{backend.spec.name} ships no weights")
    return weights_dir() / Path(backend.spec.weights).with_suffix(".onnx")


def export_shipped(backend: LearnedBackend,
                   tolerance: float = DEFAULT_TOLERANCE) -> list[ExportReport]:
    """Write the ONNX twins of a learned method's shipped weights and of its auxiliary
    networks into the weights folder, each parity-checked; what the default (onnx) runtime
    runs. Replaces older twins (each written atomically)."""
    reports = [export_model(backend, "onnx", shipped_twin(backend), tolerance=tolerance)]
    for aux in backend.auxiliary_networks():
        reports.append(export_auxiliary(backend, aux, tolerance))
    return reports


# ---------------------------------------------------------------------- int8 twin

#: How ``quantize_int8`` quantizes (recorded in the int8 twin's card). Chosen in the study of
#: issue #20 (benchmarks/omni_speed.py): static QDQ ran 0.73-0.84 x the fp32 time per tile on
#: 2 cores, dynamic int8 (ConvInteger) 4-5 x slower.
INT8_SETTINGS: dict[str, Any] = {
    "tool": "onnxruntime.quantization.quantize_static",
    "format": "QDQ",
    "per_channel": True,
    "reduce_range": False,
    "weights": "QInt8, symmetric (per output channel)",
    "activations": "QUInt8, asymmetric (per tensor)",
    "calibration": "Percentile 99.999, asymmetric ranges, batches of 8 feeds",
    "op_types": ["Conv", "MatMul", "Add (residual only: both inputs from Conv/Add)"],
    "preprocess": "quant_pre_process(skip_symbolic_shape=True)",
}
#: Largest mean |heatmap difference| from the float twin allowed on each parity sample. omni
#: measured 0.008-0.014 on the JPEG samples and 0.043 on the small PNG one (RGB route, not
#: calibrated on); its casia1-dev F1 is in docs/PERFORMANCE.md.
INT8_TOLERANCE = 0.06
#: Calibration: feeds per image, and images used at most.
CALIBRATION_PER_IMAGE = 2
CALIBRATION_IMAGES = 48


class CalibrationFeeds:
    """The calibration reader onnxruntime asks for (``CalibStridedMinMax`` needs len and
    set_range)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._it = iter(feeds)

    def __len__(self) -> int:
        return len(self.feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = iter(self.feeds[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


def calibration_images(folder: Path, limit: int = CALIBRATION_IMAGES, seed: int = 1234
                       ) -> list[Path]:
    """Up to ``limit`` JPEG files below ``folder``, a seeded random choice (pristine photos:
    never a benchmark set)."""
    files = sorted(p for p in Path(folder).rglob("*")
                   if p.suffix.lower() in {".jpg", ".jpeg"} and p.is_file())
    if not files:
        raise UsageError(f"no JPEG files below {folder} to calibrate with")
    np.random.default_rng(seed).shuffle(files)
    return files[:limit]


def quantize_int8(backend: LearnedBackend, calibration: Sequence[Path], out: Path,
                  tolerance: float = INT8_TOLERANCE,
                  images: Sequence[ForensicImage] | None = None) -> ExportReport:
    """Statically quantize ``backend``'s onnx twin to int8 (QDQ) and write it to ``out``.

    Activation ranges come from :meth:`LearnedBackend.calibration_feeds` of the
    ``calibration`` photos; the nodes :meth:`LearnedBackend.int8_float_nodes` names stay in
    float. The result is compared with the float twin through the method's own tiling on
    ``images`` (default :func:`sample_images`): a mean |heatmap difference| above
    ``tolerance`` fails and nothing is written. The card is the twin's, plus ``quantization``
    (settings, calibration data, the comparison) and ``export.precision = "int8"``.

    Raises:
        UsageError: the method has no int8 recipe, or the backend is not on its onnx twin.
        ParityError: the quantized model is too far from the float one.
    """
    import tempfile

    from forgectl import weights as W
    from forgectl.errors import require_torch
    from forgectl.intake import load_image
    from forgectl.outputs import write_bytes

    if "int8" not in backend.runtimes:
        raise UsageError(f"{backend.spec.name} has no int8 recipe (methods with one: omni)")
    if backend.runtime != "onnx":
        raise UsageError("--int8 starts from the float ONNX twin (runtime onnx)")
    require_torch("forgectl export --int8")  # the train extra brings the onnx package
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rng = np.random.default_rng(1)
    feeds: list[dict[str, np.ndarray]] = []
    for path in calibration:
        feeds += backend.calibration_feeds(load_image(path), rng, CALIBRATION_PER_IMAGE)
    feeds = feeds[: len(feeds) // 8 * 8]
    if not feeds:
        raise UsageError("too few calibration photos (at least 4 are needed)")
    source = backend.weights_path
    with tempfile.TemporaryDirectory() as tmp:
        pre, quantized = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        kept = backend.int8_float_nodes(onnx.load(str(pre)))
        # onnxruntime prints its calibration progress on stdout, which is the user's.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(pre), str(quantized), CalibrationFeeds(feeds),
                quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "MatMul", "Add"],
                per_channel=True, reduce_range=False, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=kept,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                               "CalibStridedMinMax": 8, "CalibTensorRangeSymmetric": False,
                               "CalibPercentile": 99.999},
            )
        model = onnx.load(str(quantized))
    del model.metadata_props[:]
    data = model.SerializeToString()

    runner = OnnxRunner(data)
    rows = []
    for image in (images if images is not None else sample_images()):
        ref, _ = backend.parity_output(image)
        with backend.running(runner):
            got, _ = backend.parity_output(image)
        diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
        row = {"image": image.name, "size": [image.height, image.width],
               "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max())}
        rows.append(row)
        if not row["mean_abs_diff"] <= tolerance:
            raise ParityError(f"int8 model differs from the float twin on {image.name}: mean "
                              f"|heatmap diff| {row['mean_abs_diff']:.3f} > {tolerance}; "
                              "nothing written")
    card = json.loads(json.dumps(backend.model_card()))
    card["export"]["precision"] = "int8"
    card["quantization"] = {
        **INT8_SETTINGS,
        "source": source.name,
        "source_sha256": W.sha256_file(source),
        "kept_float": list(getattr(backend, "INT8_KEPT_FLOAT", ())),
        "kept_float_nodes": len(kept),
        "calibration_data": f"{len(feeds)} feeds ({CALIBRATION_PER_IMAGE} random tiles each) "
                            f"from {len(calibration)} photos: "
                            + ", ".join(sorted(p.name for p in calibration)[:8])
                            + (" ..." if len(calibration) > 8 else ""),
        "comparison": {"tolerance_mean_abs_diff": tolerance, "samples": rows,
                       "reference": "the float onnx twin, same tiling and blending"},
    }
    data = with_onnx_card(data, card)
    write_bytes(out, data)
    record_sha256(Path(out))
    return ExportReport(path=Path(out), format="onnx (int8)", method=backend.spec.name,
                        weights=source.name, tolerance=tolerance,
                        max_abs_diff=max(r["mean_abs_diff"] for r in rows), samples=rows,
                        size_bytes=len(data))

