"""The backend contract: every method turns a :class:`ForensicImage` into a :class:`Result`.

:class:`Backend` holds what every method has: its :class:`MethodSpec`, its declared options
(checked in one place, :mod:`forgectl.backends.options`) and its threshold. Learned methods
build on :class:`forgectl.backends.learned.LearnedBackend` (weights, runtimes, tiling, export).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from forgectl.analysis.jpeg_history import attach_pixel_history
from forgectl.backends.options import Option, resolve_options
from forgectl.errors import UsageError
from forgectl.intake import ForensicImage

#: Where a learned network runs: ``onnx`` (the exported graph shipped beside the weights, in
#: onnxruntime, no torch: the default install), ``int8`` (the same in onnxruntime with the
#: statically quantized twin ``<stem>.int8.onnx``, for methods that ship one), ``torch``
#: (in-process PyTorch, the ``train`` extra), or ``auto``: int8, else onnx when that twin is
#: there, else torch (docs/EXPORT.md).
#: Classical methods always run in numpy/OpenCV.
RUNTIMES = ("auto", "torch", "onnx", "int8")


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


def clean_unit(values: np.ndarray) -> np.ndarray:
    """``values`` as float32 in [0, 1] with NaN and -inf at 0 and +inf at 1.

    Returns ``values`` itself when it already is (two reductions, no copy: a 12 MP
    ``nan_to_num`` + ``clip`` costs a quarter of a second), else a cleaned copy; the caller's
    array is never changed.
    """
    out = np.asarray(values, np.float32)
    # NaN makes min/max NaN and both comparisons False: such arrays take the cleaning path.
    if out.size == 0 or (out.min() >= 0.0 and out.max() <= 1.0):
        return out
    out = np.array(out, np.float32, copy=True)
    # fmax returns the non-NaN operand, so NaN becomes 0 in the same pass as the clip.
    np.fmax(out, 0.0, out=out)
    return np.fmin(out, 1.0, out=out)


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
        figures: named (h, w, 3) uint8 pictures for ``explain`` that are not maps of the image
            (e.g. a 2-D projection of features).
    """

    heatmap: np.ndarray
    mask: np.ndarray
    score: float
    applicable: bool = True
    note: str = ""
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        hm = np.asarray(self.heatmap)
        if hm.ndim != 2:
            raise ValueError(f"heatmap must be (H, W), got {hm.shape}")
        self.heatmap = clean_unit(hm)
        mask = np.asarray(self.mask).astype(bool)
        if mask.shape != hm.shape:
            raise ValueError(f"mask {mask.shape} and heatmap {hm.shape} differ in shape")
        self.mask = mask
        self.score = float(np.clip(np.nan_to_num(float(self.score)), 0.0, 1.0))
        for key, fig in self.figures.items():
            if fig.ndim != 3 or fig.shape[2] != 3 or fig.dtype != np.uint8:
                raise ValueError(f"figure {key!r} must be (h, w, 3) uint8, got {fig.shape}")

    @classmethod
    def from_heatmap(
        cls, heatmap: np.ndarray, threshold: float, score: float | None = None, **kw: Any
    ) -> Result:
        """Threshold a heatmap into a mask; the score defaults to the heatmap's 99th percentile
        (robust to a few hot pixels, yet high when a region is flagged)."""
        hm = clean_unit(np.asarray(heatmap))
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



class Backend:
    """Base class of every method. Subclasses set ``spec``, declare ``OPTIONS`` and implement
    :meth:`analyze`.

    ``localize`` is the public entry point: it checks applicability and the output contract,
    so subclasses cannot return a heatmap of the wrong size. Options given to the constructor
    are resolved against ``OPTIONS`` (unknown keys and bad values are usage errors) into
    ``self.options``; :meth:`check_options` adds checks that relate several options.
    """

    spec: ClassVar[MethodSpec]
    default_threshold: ClassVar[float] = 0.5
    #: The method's options (``-p KEY=VALUE``), listed by ``forgectl methods NAME``.
    OPTIONS: ClassVar[tuple[Option, ...]] = ()
    #: Runtimes the method runs on (``"auto"`` resolves to one of them); learned methods add
    #: ``"onnx"``.
    runtimes: ClassVar[tuple[str, ...]] = ("torch",)
    #: The weights file a learned method runs (None for classical methods).
    weights_path: Path | None = None
    #: For a method made of other methods: keep each member's full Result after the analysis,
    #: for :meth:`parts` (``explain`` sets it; otherwise the members' maps are freed once
    #: fused, which is most of such a method's memory on a large image).
    keep_parts: bool = False

    def __init__(
        self, weights: str | Path | None = None, threshold: float | None = None,
        runtime: str = "auto", **options: Any
    ) -> None:
        self.threshold = self.default_threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError("threshold must be in [0, 1]")
        if runtime not in RUNTIMES:
            raise UsageError(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
        if runtime == "auto":
            runtime = self.auto_runtime(weights)
        if runtime not in self.runtimes:
            raise UsageError(
                f"{self.spec.name} cannot run with --runtime {runtime} (only learned methods "
                "exported with `forgectl export` can)"
            )
        if weights is not None and self.spec.weights is None:
            raise UsageError(f"{self.spec.name} has no weights (--weights is for learned methods)")
        self.runtime = runtime
        self.options: dict[str, Any] = resolve_options(self.spec.name, self.OPTIONS, options)
        self.check_options()

    def auto_runtime(self, weights: str | Path | None) -> str:
        """What ``runtime="auto"`` means for this method (learned methods look for their ONNX
        twin; classical methods have one runtime)."""
        return self.runtimes[0]

    def check_options(self) -> None:
        """Checks that relate several options (each option's own range is declared)."""

    @property
    def runtime_label(self) -> str | None:
        """The runtime that records and reports name: ``torch``, ``onnx`` or ``int8`` for a
        learned method, None for numpy/OpenCV-only methods."""
        return self.runtime if "onnx" in self.runtimes else None

    @property
    def weights_id(self) -> str | None:
        """Name of the weights file the method runs (None for classical methods)."""
        return None

    @property
    def weights_sha256(self) -> str | None:
        return None

    def localize(self, image: ForensicImage) -> Result:
        """Analyse one image. Returns a Result whose maps match the image's (H, W)."""
        if self.spec.needs_jpeg or self.spec.uses_jpeg:
            # A PNG/TIFF that was a JPEG before keeps its quantization in the pixels: JPEG
            # methods read it from there (once per image; marked source="pixels"). Cropped
            # after that save, the grid is offset: run on the view padded back onto the grid.
            attach_pixel_history(image)
            if image.jpeg_grid_view is not None:
                return _crop(self.localize(image.jpeg_grid_view), image)
        if self.spec.needs_jpeg and not image.is_jpeg:
            return Result.not_applicable(
                image, f"{self.spec.name} needs JPEG data (DCT coefficients): input is "
                f"{image.format} and its pixels show no earlier JPEG save"
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

    def parts(self) -> list[tuple[str, Backend, Any]]:
        """For a method made of other methods, analysed with :attr:`keep_parts` set: (name,
        backend, output) per member of the last analysis, each output with a ``result`` and
        ``seconds``. Every other method: none."""
        return []

    def export_graph(self) -> Any:
        """The network and its contract for ``forgectl export`` (learned methods only)."""
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


def _crop(result: Result, image: ForensicImage) -> Result:
    """``result`` of the padded grid view of ``image`` cut back to ``image``'s pixels.

    The first block row and column of the view mix repeated edge pixels with the image's
    own, so they sit off the JPEG lattice and read as "compressed once": that evidence is
    made up by the padding, and those strips (8 - padding pixels wide) are left cold in every
    map (a method that smooths its evidence still spreads a little of it one block further).
    """
    view = image.jpeg_grid_view
    assert view is not None
    top, left = view.height - image.height, view.width - image.width
    window = (slice(top, top + image.height), slice(left, left + image.width))
    strips = ((slice(0, (8 - top) % 8), slice(None)), (slice(None), slice(0, (8 - left) % 8)))

    def cut(values: np.ndarray, cold: float | bool) -> np.ndarray:
        out = values[window].copy()
        for strip in strips:
            out[strip] = cold
        return out

    return Result(
        heatmap=cut(result.heatmap, 0.0),
        mask=cut(result.mask, False),
        score=result.score,
        applicable=result.applicable,
        note=result.note,
        maps={key: cut(m, 0.0) for key, m in result.maps.items()},
        facts={**result.facts,
               "jpeg_grid_offset": (image.pixel_history or {}).get("grid_offset")},
        figures=result.figures,
    )
