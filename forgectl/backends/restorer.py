"""The learned restoration module of ReConWave-Net: classify the whole image, then restore it
in tiles (:class:`Restorer`). ``reconwave`` runs it before localizing; ``forgectl restore``
and the ``--restore`` stage run it alone.

The classifier (:class:`forgectl.nets.restoration.DisturbanceClassifier`) decides none /
brightness / contrast and its strength from features of the whole image; the numpy decision
checks (:func:`forgectl.analysis.restoration.refine_decision`) confirm or veto it from the
pixels; unclipped values are inverted exactly and only the clipped ones go through the Swin
restorer, on overlapping tiles (blended). Weights: ``weights/reconwave-restore-<config>
.safetensors`` + model card.

Both networks are called only through :data:`~forgectl.backends.learned.TileRunner`\\ s
(numpy in, numpy out), so one loop serves both runtimes: ``torch`` runs the graph modules
of :func:`restoration_networks` in PyTorch, ``onnx`` their ONNX twins beside the weights
(``<stem>.classifier.onnx``, ``<stem>.restorer.onnx``, written by ``forgectl export --method
reconwave --shipped``) in onnxruntime, with no torch import. ``auto`` (the default) takes
the twins when both are there. The classifier's input features (a thumbnail and global
statistics) are computed here in numpy for both runtimes (:func:`disturbance_features`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl import weights as W
from forgectl.analysis.disturbance import brightness, clipped_values, contrast
from forgectl.analysis.restoration import (
    check_rgb,
    exact_inverse,
    lost_value_range,
    low_gain_fingerprint,
    refine_decision,
)
from forgectl.backends.base import compute_threads
from forgectl.backends.learned import (
    AuxiliaryNetwork,
    ExportGraph,
    TileRunner,
    network_runner,
)
from forgectl.errors import UsageError, WeightsError, require_torch
from forgectl.tiling import Tile, blend_tiles, plan_tiles, round_up
from forgectl.weights import weights_dir

if TYPE_CHECKING:
    from forgectl.nets.restoration import RestorationNet

#: Stage 2 (``restore-tiny-ft``), fine-tuned from stage 1 (``reconwave-restore-tiny``).
DEFAULT_RESTORE_WEIGHTS = "reconwave-restore-tiny-ft.safetensors"
#: Names of the two networks (``AuxiliaryNetwork.name``, recorded in their twins' cards).
CLASSIFIER, RESTORER = "restore-classifier", "restore-restorer"
#: ONNX twin of each network: ``<weights stem><suffix>`` beside the weights.
TWIN_SUFFIXES = {CLASSIFIER: ".classifier.onnx", RESTORER: ".restorer.onnx"}
#: Runtimes of the module (``auto``: onnx when both twins exist, else torch).
RESTORE_RUNTIMES = ("auto", "torch", "onnx")
#: Classes of the classifier, in its output order (as ``nets.restoration``; repeated here so
#: the onnx runtime needs no torch module).
DISTURBANCE_CLASSES = ("none", "brightness", "contrast")
#: Global statistics: quantile levels and the subsample's long side (``nets.restoration``).
STAT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
STAT_SIDE = 256
#: Trace size of the restorer's export: multiples of the window (8) no parity sample has.
RESTORER_TRACE_SIZE = (72, 120)
#: Restorer parity tiles (height, width, disturbance, strength): the default tile, a tile
#: one window high (every row in the shifted blocks' wrap-around regions), odd shapes.
RESTORER_SAMPLES: tuple[tuple[int, int, str, float], ...] = (
    (256, 256, "contrast", 2.0), (64, 96, "brightness", -0.5), (8, 24, "brightness", 0.5),
    (40, 200, "contrast", 0.7),
)
#: Classifier parity images (height, width, disturbance, strength): features have a fixed
#: size, so these vary the content and the subsampling step instead.
CLASSIFIER_SAMPLES: tuple[tuple[int, int, str, float], ...] = (
    (384, 512, "none", 0.0), (200, 296, "brightness", 0.4), (120, 88, "contrast", 0.7),
    (600, 90, "brightness", -0.5),
)


def load_restoration_net(weights: Path) -> tuple[RestorationNet, dict[str, Any]]:
    """The network and its model card from ``weights`` (:func:`forgectl.weights.load_network`).

    Raises:
        WeightsError: a missing file or card, or tensors that do not match the card.
    """
    from forgectl.nets.restoration import RestorationNet

    return W.load_network(Path(weights), RestorationNet)


def inference_net(weights: Path) -> RestorationNet:
    """:func:`load_restoration_net` for the torch runtime, with PyTorch on the thread budget
    (``FORGECTL_THREADS``) as every learned method's network."""
    require_torch("the restoration module on the torch runtime")
    import torch

    torch.set_num_threads(compute_threads())
    return load_restoration_net(weights)[0]


def twin_path(weights: Path, network: str) -> Path:
    """The ONNX twin of one of the two networks of ``weights``
    (``reconwave-restore-tiny-ft.classifier.onnx`` ...)."""
    weights = Path(weights)
    return weights.with_name(weights.stem + TWIN_SUFFIXES[network])


def weights_digest(weights: Path, runtime: str) -> str:
    """The sha256 that names the restoration weights (``--resume`` settings): of the file, or
    on onnx, when only the card and the twins are installed (the torch-free package ships no
    ``.safetensors``), the one the card records, which the twins were exported from.

    Raises:
        WeightsError: neither is there.
    """
    weights = Path(weights)
    if weights.is_file():
        return W.sha256_file(weights)
    recorded = ((W.read_card(weights) or {}).get("weights") or {}).get("sha256")
    if runtime == "onnx" and isinstance(recorded, str):
        return recorded
    raise WeightsError(f"restoration weights not found: {weights}")


def restoration_available(weights: Path, runtime: str) -> bool:
    """Whether the module can run on ``runtime``: the ``.safetensors`` for torch; both twins
    and the card for onnx (the weights file itself is not needed there)."""
    weights = Path(weights)
    if runtime != "onnx":
        return weights.is_file()
    return W.card_path(weights).is_file() and all(
        twin_path(weights, n).is_file() for n in TWIN_SUFFIXES)


def resolve_runtime(runtime: str, weights: Path) -> str:
    """``torch`` or ``onnx`` for a requested runtime: ``auto`` is onnx when both twins of
    ``weights`` exist (no torch needed), else torch."""
    if runtime == "int8":  # the restoration networks ship no int8 twins: their float ones
        runtime = "onnx"
    if runtime not in RESTORE_RUNTIMES:
        raise UsageError(f"unknown runtime {runtime!r} (known: {', '.join(RESTORE_RUNTIMES)})")
    if runtime != "auto":
        return runtime
    return "onnx" if all(twin_path(weights, n).is_file() for n in TWIN_SUFFIXES) else "torch"


# ---------------------------------------------------------------------- classifier features


def _adaptive_bins(n: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of each bin of ``adaptive_avg_pool`` along an axis of length ``n``
    (PyTorch's rule: ``[floor(i n / bins), ceil((i + 1) n / bins))``)."""
    i = np.arange(bins)
    return (i * n) // bins, -((-(i + 1) * n) // bins)


def area_thumbnail(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, size, size) float32 in [0, 1]: ``F.adaptive_avg_pool2d`` of
    ``rgb / 255`` (what the classifier trained on), from exact integer sums."""
    h, w = rgb.shape[:2]
    r0, r1 = _adaptive_bins(h, size)
    c0, c1 = _adaptive_bins(w, size)
    # Row bins by slab sums (bins of a short axis overlap, so no reduceat), then column bins
    # from a running sum of those: memory stays O(size * W), not O(H * W) in int64.
    rows = np.stack([rgb[a:b].sum(axis=0, dtype=np.int64) for a, b in zip(r0, r1, strict=True)])
    run = np.concatenate([np.zeros((size, 1, 3), np.int64), rows.cumsum(axis=1)], axis=1)
    sums = run[:, c1] - run[:, c0]  # (size, size, 3)
    counts = ((r1 - r0)[:, None] * (c1 - c0)[None, :])[..., None]
    return (sums / counts / 255.0).astype(np.float32).transpose(2, 0, 1)


def _torch_quantiles(values: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """``torch.quantile(values, levels)`` (linear) in float32 arithmetic, as the classifier
    saw it in training: rank ``q (n - 1)``, then ``lerp`` between its two neighbours."""
    n = values.size
    ranks = np.asarray(levels, np.float32) * np.float32(n - 1)
    below = np.floor(ranks).astype(np.int64)
    above = np.minimum(np.ceil(ranks).astype(np.int64), n - 1)
    part = np.partition(values, np.unique(np.concatenate([below, above])))
    lo, hi = part[below], part[above]
    weight = ranks - below.astype(np.float32)
    # torch.lerp: start + w (end - start) for w < 0.5, end - (end - start)(1 - w) otherwise.
    return np.where(weight < 0.5, lo + weight * (hi - lo),
                    hi - (hi - lo) * (np.float32(1) - weight)).astype(np.float32)


def global_stats(rgb: np.ndarray, hist_bins: int) -> np.ndarray:
    """:func:`forgectl.nets.restoration.global_stats` of one image, in numpy: (H, W, 3) uint8
    -> (K,) float32, K = 28 + ``hist_bins`` (quantiles, per-channel mean, std, fractions at 0
    and 255, empty-level fraction, darkest and brightest value, grey-level histogram)."""
    if 256 % hist_bins:
        raise ValueError("hist_bins must divide 256")
    h, w = rgb.shape[:2]
    step = max(1, math.ceil(max(h, w) / STAT_SIDE))
    sub = rgb[::step, ::step].reshape(-1, 3).T  # (3, n) exact 8-bit levels
    counts = np.stack([np.bincount(c, minlength=256) for c in sub])  # (3, 256)
    occupied = counts > 0
    idx = np.arange(256)
    first = np.where(occupied, idx, 256).min(axis=1, keepdims=True)
    last = np.where(occupied, idx, -1).max(axis=1, keepdims=True)
    inside = (idx >= first) & (idx <= last)
    empty = ((~occupied & inside).sum(1).astype(np.float32)
             / np.maximum(inside.sum(1), 1).astype(np.float32))
    full = rgb.reshape(-1, 3)
    n = np.float32(full.shape[0])
    low = (full == 0).sum(0).astype(np.float32) / n  # torch: rgb / 255 <= 0.5 / 255
    high = (full == 255).sum(0).astype(np.float32) / n
    darkest = full.min(0).astype(np.float32) / np.float32(255)
    brightest = full.max(0).astype(np.float32) / np.float32(255)
    unit = sub.astype(np.float32) / np.float32(255)
    quantiles = _torch_quantiles(unit.reshape(-1), STAT_QUANTILES)
    mean = sub.mean(axis=1, dtype=np.float64) / 255.0
    std = sub.std(axis=1, dtype=np.float64) / 255.0
    hist = counts.sum(0).reshape(hist_bins, 256 // hist_bins).sum(1).astype(np.float32)
    hist = hist / hist.sum()
    return np.concatenate([quantiles, mean, std, low, high, empty, darkest, brightest,
                           hist]).astype(np.float32)


def disturbance_features(rgb: np.ndarray, size: int, hist_bins: int) -> dict[str, np.ndarray]:
    """The classifier's feeds for (H, W, 3) uint8 pixels: ``thumb (1, 3, size, size)`` and
    ``stats (1, K)`` float32, equal (to float rounding) to
    :func:`forgectl.nets.restoration.disturbance_features` of ``rgb / 255``.

    In numpy so that both runtimes share it: the features are fixed formulas, not learned,
    and an ONNX graph of them (a 12 MP input, quantiles, histograms) would gain nothing.
    """
    return {"thumb": area_thumbnail(rgb, size)[None],
            "stats": global_stats(rgb, hist_bins)[None]}


def decided_condition(kind: str, alpha: float | None, beta: float | None) -> np.ndarray:
    """(1, 5) float32 condition of a decision: one-hot class and its strength
    (:func:`forgectl.nets.restoration.condition_from_truth`)."""
    cond = np.zeros((1, 5), np.float32)
    cond[0, DISTURBANCE_CLASSES.index(kind)] = 1.0
    if kind == "brightness":
        cond[0, 3] = alpha or 0.0
    elif kind == "contrast":
        cond[0, 4] = np.log(np.float32(max(beta or 1.0, 1e-3)))
    return cond


# ---------------------------------------------------------------------- networks and export


def network_config(weights: Path) -> dict[str, Any]:
    """The restoration network config of ``weights``' model card (``classifier``,
    ``restorer``)."""
    return W.network_config(W.read_card(Path(weights)), Path(weights))


def classifier_graph(net: RestorationNet) -> ExportGraph:
    """The classifier's graph: ``(thumb, stats) -> (probabilities, alpha, beta, condition)``."""
    from forgectl.nets.restoration import ClassifierGraph

    clf = net.classifier
    rng = np.random.default_rng(0)
    example = disturbance_features(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8),
                                   clf.size, clf.hist_bins)
    k = example["stats"].shape[1]
    contract = {
        "inputs": {
            "thumb": {"shape": [1, 3, clf.size, clf.size], "dtype": "float32",
                      "meaning": "adaptive average pooling of the whole image (rgb / 255) to "
                      f"{clf.size} x {clf.size} (aspect not kept)"},
            "stats": {"shape": [1, k], "dtype": "float32",
                      "meaning": "global statistics of the whole image "
                      "(forgectl.backends.restorer.global_stats)"},
        },
        "outputs": {
            "probabilities": {"shape": [1, 3], "dtype": "float32",
                              "meaning": "softmax over none, brightness, contrast"},
            "alpha": {"shape": [1], "dtype": "float32",
                      "meaning": "brightness shift I' = clip(I + alpha), in [-0.6, 0.6]"},
            "beta": {"shape": [1], "dtype": "float32",
                     "meaning": "contrast gain I' = clip(beta I), in [0.5, 2.5]"},
            "condition": {"shape": [1, 5], "dtype": "float32",
                          "meaning": "[probabilities, alpha, log beta]: the restorer's "
                          "condition input"},
        },
        "constraints": ["batch 1", "features of the whole image, never of a crop"],
    }
    return ExportGraph(
        module=ClassifierGraph(clf).eval(),
        input_names=("thumb", "stats"),
        output_names=("probabilities", "alpha", "beta", "condition"),
        dynamic_axes={},
        example=example,
        contract=contract,
    )


def restorer_graph(net: RestorationNet) -> ExportGraph:
    """The restorer's per-tile graph: ``(image, condition) -> restored``."""
    from forgectl.nets.restoration import RestorerGraph

    window = net.restorer.window
    h, w = RESTORER_TRACE_SIZE
    rng = np.random.default_rng(0)
    example = {"image": rng.random((1, 3, h, w), dtype=np.float32),
               "condition": decided_condition("brightness", -0.3, None)}
    contract = {
        "inputs": {
            "image": {"shape": [1, 3, "height", "width"], "dtype": "float32",
                      "meaning": "a tile of the disturbed image, RGB channels first, rgb / 255"},
            "condition": {"shape": [1, 5], "dtype": "float32",
                          "meaning": "[p_none, p_brightness, p_contrast, alpha, log beta]; "
                          "forgectl passes the decided disturbance one-hot"},
        },
        "outputs": {
            "restored": {"shape": [1, 3, "height", "width"], "dtype": "float32",
                         "meaning": "the restored tile in [0, 1] (forgectl uses it only "
                         "where the disturbance clipped)"},
        },
        "constraints": [
            f"height and width multiples of {window} (the attention window)",
            f"max(height, width) > {window} (the shifted blocks always shift)",
            "batch 1; forgectl pads tiles by edge replication",
        ],
    }
    return ExportGraph(
        module=RestorerGraph(net.restorer).eval(),
        input_names=("image", "condition"),
        output_names=("restored",),
        dynamic_axes={"image": {2: "height", 3: "width"},
                      "restored": {2: "height", 3: "width"}},
        example=example,
        contract=contract,
    )


def _disturb(rgb: np.ndarray, kind: str, value: float) -> np.ndarray:
    if kind == "brightness":
        return brightness(rgb, value)
    return contrast(rgb, value) if kind == "contrast" else rgb


def classifier_samples(config: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """Parity feeds of the classifier: features of disturbed photo-like images."""
    from forgectl.synth.scenes import natural_image

    clf = config["classifier"]
    return [disturbance_features(_disturb(natural_image(h, w, seed=i), kind, value),
                                 clf["size"], clf["hist_bins"])
            for i, (h, w, kind, value) in enumerate(CLASSIFIER_SAMPLES)]


def restorer_samples() -> list[dict[str, np.ndarray]]:
    """Parity feeds of the restorer: disturbed photo-like tiles with their decided condition,
    at several sizes (none of them the trace size)."""
    from forgectl.synth.scenes import natural_image

    feeds = []
    for i, (h, w, kind, value) in enumerate(RESTORER_SAMPLES):
        tile = _disturb(natural_image(h, w, seed=10 + i), kind, value)
        feeds.append({
            "image": np.ascontiguousarray(tile.transpose(2, 0, 1), np.float32)[None] / 255.0,
            "condition": decided_condition(kind, value if kind == "brightness" else None,
                                           value if kind == "contrast" else None),
        })
    return feeds


def restoration_networks(
    weights: Path, load: Callable[[], RestorationNet] | None = None
) -> tuple[AuxiliaryNetwork, AuxiliaryNetwork]:
    """The classifier and the restorer of ``weights`` as auxiliary networks (what ``forgectl
    export --method reconwave --shipped`` exports beside the localizer, and what either
    runtime runs).

    ``load``: returns the PyTorch network (default: loads ``weights`` once, shared by both).
    """
    weights = Path(weights)
    loaded: list[RestorationNet] = []

    def net() -> RestorationNet:
        if load is not None:
            return load()
        if not loaded:
            loaded.append(inference_net(weights))
        return loaded[0]

    return (
        AuxiliaryNetwork(CLASSIFIER, weights, twin_path(weights, CLASSIFIER),
                         graph=lambda: classifier_graph(net()),
                         samples=lambda: classifier_samples(network_config(weights))),
        AuxiliaryNetwork(RESTORER, weights, twin_path(weights, RESTORER),
                         graph=lambda: restorer_graph(net()), samples=restorer_samples),
    )


# ---------------------------------------------------------------------- the module


@dataclass
class Classification:
    """What the classifier says about a whole image."""

    type: str
    alpha: float | None
    beta: float | None
    confidence: float
    probabilities: dict[str, float]
    condition: np.ndarray  # (1, 5) float32, the classifier's soft condition
    #: The strength heads' outputs whatever the class (``decide(force=True)`` needs them).
    alpha_head: float = 0.0
    beta_head: float = 1.0


class Restorer:
    """The learned restoration module: classify the whole image, then restore it in tiles.

    Args:
        weights: ``.safetensors`` of a ``RestorationNet`` with its model card (default
            ``weights/`` + :data:`DEFAULT_RESTORE_WEIGHTS`).
        tile: restorer tile size (multiple of the attention window); overlap: tile overlap
            (multiple of 8), blended linearly.
        min_confidence: restore only when the predicted class is not ``none`` and its
            probability reaches this.
        runtime: ``auto`` (the ONNX twins when both exist beside ``weights``, else torch),
            ``onnx`` (no torch import) or ``torch``.
        runners: network name -> its :data:`TileRunner` (``reconwave`` passes its
            ``auxiliary_runner``); default: :func:`network_runner` on
            :func:`restoration_networks`.

    Raises:
        UsageError: bad tile/overlap/confidence or runtime. WeightsError: missing or damaged
            weights, card or twins.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        tile: int = 256,
        overlap: int = 32,
        min_confidence: float = 0.5,
        runtime: str = "auto",
        runners: Callable[[str], TileRunner] | None = None,
    ) -> None:
        self.weights = Path(weights) if weights else weights_dir() / DEFAULT_RESTORE_WEIGHTS
        if self.weights.suffix.lower() == ".onnx":  # the module is two files, named by these
            raise UsageError(f"restore: pass the .safetensors weights, not {self.weights.name} "
                             "(their ONNX twins are found beside them)")
        self.runtime = resolve_runtime(runtime, self.weights)
        # On onnx the twins and the card are enough (network_runner names a missing twin).
        if self.runtime == "torch" and not self.weights.is_file():
            raise WeightsError(f"restoration weights not found: {self.weights}")
        #: The weights' model card (the ``.json`` beside them; each twin embeds it too).
        self.card: dict[str, Any] = W.read_card(self.weights) or {}
        config = W.network_config(self.card, self.weights)
        self.thumb_size = int(config["classifier"]["size"])
        self.hist_bins = int(config["classifier"]["hist_bins"])
        self.window = window = int(config["restorer"]["window"])
        if tile < 2 * window or tile % window or tile % 8:
            raise UsageError(f"restore: tile must be a multiple of 8 and {window}, >= {2 * window}")
        if overlap < 0 or overlap % 8 or overlap >= tile // 2:
            raise UsageError("restore: overlap must be a multiple of 8, below half the tile")
        if not 0.0 <= min_confidence <= 1.0:
            raise UsageError("restore: min_confidence must be in [0, 1]")
        self.tile, self.overlap, self.min_confidence = tile, overlap, min_confidence
        self._net: RestorationNet | None = None
        if runners is None:
            networks = {a.name: a for a in restoration_networks(self.weights, self._load)}

            def runners(name: str) -> TileRunner:
                return network_runner(networks[name], self.runtime, "reconwave")

        # Both loaded now, so a missing or damaged file fails here rather than on the first
        # image that needs the restorer.
        self._classifier = runners(CLASSIFIER)
        self._restorer = runners(RESTORER)

    def _load(self) -> RestorationNet:
        """The PyTorch network, loaded once (the torch runtime's graphs wrap it)."""
        if self._net is None:
            self._net = inference_net(self.weights)
        return self._net

    @property
    def net(self) -> RestorationNet:
        """The PyTorch network of the weights (loads torch; the torch runtime runs it)."""
        return self._load()

    def classify(self, rgb: np.ndarray) -> Classification:
        """Classifier decision for (H, W, 3) uint8 pixels."""
        check_rgb(rgb)
        out = self._classifier(disturbance_features(rgb, self.thumb_size, self.hist_bins))
        probs = np.asarray(out["probabilities"], np.float32)[0]
        alpha, beta = float(out["alpha"][0]), float(out["beta"][0])
        k = int(probs.argmax())
        kind = DISTURBANCE_CLASSES[k]
        return Classification(
            type=kind,
            alpha=round(alpha, 4) if kind == "brightness" else None,
            beta=round(beta, 4) if kind == "contrast" else None,
            confidence=round(float(probs[k]), 4),
            probabilities={
                c: round(float(p), 4) for c, p in zip(DISTURBANCE_CLASSES, probs, strict=True)
            },
            condition=np.asarray(out["condition"], np.float32),
            alpha_head=round(alpha, 4),
            beta_head=round(beta, 4),
        )

    def restore(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(H, W, 3) uint8 -> (restored uint8 of the same shape, facts). Never changes ``rgb``.

        With no disturbance seen (class ``none``, or confidence below ``min_confidence``) the
        result is a copy of the input and ``facts["restored"]`` is False.
        """
        facts = self.decide(rgb)
        return self.apply(rgb, facts), facts

    def decide(self, rgb: np.ndarray, force: bool = False) -> dict[str, Any]:
        """The decision alone (classifier, then the pixel checks): the facts of :meth:`restore`
        without running the restorer network, so a caller that will not use restored pixels
        pays only for the classifier.

        ``force``: when the classifier says ``none`` or is below ``min_confidence``, try its
        likeliest disturbance anyway (``--restore on``: the user says the photo was edited);
        the pixel checks can still veto it. ``facts["forced"]`` says when that happened.
        """
        c = self.classify(rgb)
        facts: dict[str, Any] = {
            "method": "learned",
            "weights": self.weights.name,
            "runtime": self.runtime,
            "type": c.type,
            "alpha": c.alpha,
            "beta": c.beta,
            "confidence": c.confidence,
            "probabilities": c.probabilities,
            "min_confidence": self.min_confidence,
        }
        kind, alpha, beta = c.type, c.alpha, c.beta
        gain = None
        if kind == "none" or c.confidence < self.min_confidence:
            # A gain below 1 leaves an exact fingerprint in the histogram that no undisturbed
            # image here shows; it decides where the classifier is unsure or sees nothing
            # (dim photos with black areas are read as darkening shifts or as clean).
            gain = low_gain_fingerprint(rgb)
            if gain is not None:
                facts["overruled"] = {"type": c.type, "confidence": c.confidence}
            elif not force:
                facts["restored"] = False
                return facts
            else:
                kind = max(("brightness", "contrast"), key=lambda k: c.probabilities[k])
                alpha = c.alpha_head if kind == "brightness" else None
                beta = c.beta_head if kind == "contrast" else None
                facts["forced"] = {"type": kind, "alpha": alpha, "beta": beta}
        checked = (
            {"type": "contrast", "alpha": None, "beta": gain["beta"], "source": "gain_fit",
             "veto": None, "gain_fit": gain}
            if gain is not None
            else refine_decision(rgb, kind, alpha, beta)
        )
        facts.update(checked)
        if checked["veto"]:
            facts["classifier_type"] = kind
            facts["restored"] = False
            return facts
        facts["restored"] = True
        lost = clipped_values(rgb, facts["type"], facts["alpha"], facts["beta"])
        facts["clipped_fraction"] = round(float(lost.mean()), 4)
        return facts

    def apply(self, rgb: np.ndarray, facts: dict[str, Any]) -> np.ndarray:
        """Restore ``rgb`` as :meth:`decide` decided (a copy of it when nothing was decided):
        the exact inverse where nothing clipped, the restorer network's fill (projected onto
        the interval the clean value must lie in) where it did."""
        if not facts.get("restored"):
            return rgb.copy()
        exact, lost = exact_inverse(rgb, facts["type"], facts["alpha"], facts["beta"])
        if not lost.any():  # nothing was clipped: the inverse formula is the whole answer
            return exact
        net = self._run_tiles(rgb, self._decided_condition(facts), lost.any(axis=2))
        lo, hi = lost_value_range(facts["type"], facts["alpha"], facts["beta"])
        # A clipped value's truth lies in [lo, hi]: projecting the network's estimate onto
        # that interval can only bring it closer.
        filled = np.clip(net, round(lo * 255), round(hi * 255)).astype(np.uint8)
        return np.where(lost, filled, exact)

    @staticmethod
    def _decided_condition(facts: dict[str, Any]) -> np.ndarray:
        """(1, 5) condition of the decision: one-hot class and its strength (what the
        restorer saw in the teacher-forced half of training), not the soft probabilities,
        whose mixture of inverses would blur an exact inverse."""
        return decided_condition(facts["type"], facts["alpha"], facts["beta"])

    def _run_tiles(
        self, rgb: np.ndarray, condition: np.ndarray, needed: np.ndarray | None = None
    ) -> np.ndarray:
        """The restorer on blended tiles: (H, W, 3) uint8 -> (H, W, 3) uint8.

        ``needed`` (H, W) bool: only tiles holding a needed pixel run (the caller uses the
        output there alone; every tile covering such a pixel runs, so its blend is unchanged).
        """
        h, w = rgb.shape[:2]
        # A tile must span more than one window (the graph's contract: its shifted blocks
        # always shift): an image that pads to a single window is planned one row taller.
        single = max(round_up(h, 8), round_up(w, 8)) <= self.window
        plan = plan_tiles(self.window + 1 if single else h, w, self.tile, self.overlap,
                          multiple=8)
        # Edge replication, not zeros: a black border would look like a disturbance edge.
        padded = np.pad(
            rgb, ((0, plan.padded_height - h), (0, plan.padded_width - w), (0, 0)), mode="edge"
        )
        cond = np.asarray(condition, np.float32).reshape(1, 5)

        def predict(t: Tile) -> np.ndarray | None:
            rows, cols = slice(t.y0, t.y0 + t.height), slice(t.x0, t.x0 + t.width)
            if needed is not None and not needed[rows, cols].any():
                return None
            x = np.ascontiguousarray(padded[rows, cols].transpose(2, 0, 1), np.float32)[None]
            return np.asarray(self._restorer({"image": x / np.float32(255.0),
                                              "condition": cond})["restored"])[0]

        planes = blend_tiles(plan, predict, channels=3).transpose(1, 2, 0)[:h, :w]
        return np.clip(np.round(planes * 255.0), 0, 255).astype(np.uint8)
