"""Undo a global brightness or contrast disturbance: the ReConWave-Net restoration front end.

Two restorers, both ``(H, W, 3) uint8 -> (restored uint8, facts)``:

* :func:`classical_restore`, the blind baseline of the restoration table: the inverse of a
  global linear fit ``I' = g I + o`` (below).
* :class:`Restorer`, the learned module (:class:`forgectl.nets.restoration.RestorationNet`):
  the classifier decides none / brightness / contrast and its strength from the whole image;
  when it sees a disturbance, the Swin restorer runs on overlapping tiles (blended), guided by
  that decision. Weights: ``weights/reconwave-restore-<config>.safetensors`` + model card.

The facts dict says what was done: ``{"method", "type", "alpha", "beta", "confidence",
"restored", ...}`` (``alpha`` only for brightness, ``beta`` only for contrast).

:func:`write_restoration` is what ``forgectl restore IMG --out DIR`` runs: it writes the
restored pixels as a lossless PNG and a JSON record, and never touches the input file.

**The classical baseline.** Brightness and contrast disturbances are both global linear maps
followed by clipping, so the baseline fits one map ``I' = g I + o`` and inverts it. It is blind
(it does not know the clean image), so it fits the disturbed image's *quantile function*
against a reference: :data:`REFERENCE_QUANTILES`, the mean quantile function of pooled RGB
values of 200 training-split corpus photos (``benchmarks/restore_table.py --fit-reference``).
Only quantile levels whose value is strictly inside (0, 255) enter the least-squares fit, so
saturated pixels (lost by clipping) do not bend the line; with fewer than
:data:`MIN_FIT_LEVELS` such levels the image is returned unchanged. ``g`` is bounded to
[0.25, 4]. Its known weakness is by design: it assumes every photo has the average tone
distribution, so it also "corrects" dark or bright scenes that were never disturbed (the
table's ``none`` row measures this).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.errors import InputError, UsageError, WeightsError
from forgectl.evaluation.perturb import clipped_values

if TYPE_CHECKING:
    from forgectl.nets.restoration import RestorationNet

#: Quantile levels of the classical fit.
QUANTILE_LEVELS = tuple(round(0.02 + 0.04 * i, 2) for i in range(25))
#: Mean quantile function (values in [0, 1]) of 200 training-split photos of ../shared/corpus
#: (pooled R, G, B; long side 512), measured by ``benchmarks/restore_table.py --fit-reference``.
REFERENCE_QUANTILES = (
    0.0697,
    0.1190,
    0.1545,
    0.1857,
    0.2138,
    0.2408,
    0.2674,
    0.2934,
    0.3198,
    0.3460,
    0.3719,
    0.3988,
    0.4261,
    0.4541,
    0.4838,
    0.5145,
    0.5462,
    0.5784,
    0.6120,
    0.6476,
    0.6856,
    0.7264,
    0.7693,
    0.8210,
    0.8945,
)
MIN_FIT_LEVELS = 5
GAIN_BOUNDS = (0.25, 4.0)
#: Long side of the subsample the quantiles are computed on (speed; exact pixel values).
QUANTILE_SIDE = 512
#: Stage 2 (``restore-tiny-ft``), fine-tuned from stage 1 (``reconwave-restore-tiny``).
DEFAULT_RESTORE_WEIGHTS = "reconwave-restore-tiny-ft.safetensors"
RESTORE_SCHEMA = "forgectl.restore/1"


def image_quantiles(rgb: np.ndarray, levels: tuple[float, ...] = QUANTILE_LEVELS) -> np.ndarray:
    """Quantiles in [0, 1] of the pooled R, G, B values of (H, W, 3) uint8 pixels.

    Computed on a strided subsample of long side about :data:`QUANTILE_SIDE` (exact values: no
    averaging, so saturation stays visible).
    """
    _check_rgb(rgb)
    step = max(1, -(-max(rgb.shape[:2]) // QUANTILE_SIDE))
    values = rgb[::step, ::step].reshape(-1).astype(np.float64) / 255.0
    return np.quantile(values, levels)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {rgb.shape} {rgb.dtype}")


def fit_global_linear(rgb: np.ndarray) -> tuple[float, float, int]:
    """``(gain, offset, levels used)`` of ``I' = gain * I + offset`` fitted blind (see module).

    ``levels used`` is 0 when too few unsaturated quantiles remain; then ``(1, 0)``.
    """
    q = image_quantiles(rgb)
    ref = np.asarray(REFERENCE_QUANTILES)
    inside = (q > 0.5 / 255) & (q < 254.5 / 255)
    n = int(inside.sum())
    if n < MIN_FIT_LEVELS:
        return 1.0, 0.0, 0
    gain, offset = np.polyfit(ref[inside], q[inside], 1)
    gain = float(np.clip(gain, *GAIN_BOUNDS))
    # Refit the offset for the bounded gain (unchanged when the bound is not hit).
    offset = float(np.mean(q[inside] - gain * ref[inside]))
    return gain, offset, n


def classical_restore(rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Blind inverse of a global linear fit (the restoration table's baseline).

    Args:
        rgb: (H, W, 3) uint8 disturbed image.

    Returns:
        ``(restored (H, W, 3) uint8, facts)``; facts hold the fitted ``gain`` and ``offset``
        (on [0, 1] values), the equivalent ``alpha`` / ``beta`` reading and how many quantile
        levels the fit used.
    """
    gain, offset, used = fit_global_linear(rgb)
    x = rgb.astype(np.float64) / 255.0
    restored = np.clip(np.round((x - offset) / gain * 255.0), 0, 255).astype(np.uint8)
    facts: dict[str, Any] = {
        "method": "classical",
        "rule": "inverse of a global linear fit of the quantile function to a reference",
        "gain": round(gain, 4),
        "offset": round(offset, 4),
        "fit_levels": used,
        "restored": used > 0,
    }
    return restored, facts


# --------------------------------------------------------------------------- gain fingerprint

#: Half-width of the search around the classifier's beta, and its step.
GAIN_FIT_SPAN = 0.15
GAIN_FIT_STEP = 0.0005
#: Minimum correlation between the histogram's peak/gap pattern and the one a gain predicts.
#: Set on the restoration table's 12 forgeries (first 12 held-out photos): true gains 0.6..2.2 on
#: lossless pixels gave >= 0.64; the same images JPEG-compressed after the gain, undisturbed and
#: brightened gave <= 0.49. Checked on 48 forgeries of held-out photos 13..60: 47 of 48 random
#: gains accepted, 0 of 144 images without a gain fingerprint.
GAIN_FIT_MIN_CORRELATION = 0.6
_LEVELS = np.arange(256)


def _moving_average(x: np.ndarray, width: int = 9) -> np.ndarray:
    """Centred moving average along the last axis (zero padded, like ``np.convolve(same)``)."""
    pad = width // 2
    c = np.cumsum(np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad + 1, pad)]), axis=-1)
    return (c[..., width:] - c[..., :-width]) / width


def fit_contrast_gain(
    rgb: np.ndarray, guess: float, span: float = GAIN_FIT_SPAN, step: float = GAIN_FIT_STEP
) -> tuple[float | None, float]:
    """Refine a contrast gain from the histogram's peaks and gaps: ``(beta or None, corr)``.

    An 8-bit gain ``round(beta * k)`` leaves a fingerprint in the histogram (the classic
    contrast-enhancement trace): with ``beta > 1`` some output levels are never reached (gaps),
    with ``beta < 1`` some receive two input levels (peaks). For each candidate beta within
    ``guess +- span`` the level multiplicities ``m_beta[j]`` are known exactly; the candidate
    whose ``m / local mean(m)`` pattern correlates best with ``h / local mean(h)`` of the
    observed histogram wins (ties: the middle of the tied run). Saturated levels and a 4-level
    margin at both ends of the occupied range are left out. ``beta`` is None when the best
    correlation is below :data:`GAIN_FIT_MIN_CORRELATION` (no fingerprint: the pixels were
    re-compressed or the gain is not what changed them) or the range is under 32 levels.

    Args:
        rgb: (H, W, 3) uint8 pixels (all channels pooled). guess: the classifier's beta.
    """
    _check_rgb(rgb)
    hist = np.bincount(rgb.reshape(-1), minlength=256).astype(np.float64)
    occupied = np.nonzero(hist)[0]
    lo, hi = max(int(occupied[0]), 1) + 4, min(int(occupied[-1]), 254) - 4
    if hi - lo < 32:
        return None, 0.0
    observed = (hist / np.maximum(_moving_average(hist[None])[0], 1e-9))[lo:hi]
    cands = np.arange(max(0.3, guess - span), guess + span + 1e-9, step)
    levels = np.clip(np.round(_LEVELS[None, :] * cands[:, None]), 0, 255).astype(np.int64)
    mult = np.zeros((len(cands), 256))
    np.add.at(mult, (np.repeat(np.arange(len(cands)), 256), levels.reshape(-1)), 1.0)
    pattern = (mult / np.maximum(_moving_average(mult), 1e-9))[:, lo:hi]
    a = observed - observed.mean()
    b = pattern - pattern.mean(axis=1, keepdims=True)
    denom = np.sqrt((a**2).sum() * (b**2).sum(axis=1))
    corr = np.where(denom > 0, (b @ a) / np.maximum(denom, 1e-12), 0.0)
    best = float(corr.max())
    if best < GAIN_FIT_MIN_CORRELATION:
        return None, round(best, 4)
    tied = cands[corr >= best - 1e-9]
    return round(float(np.median(tied)), 4), round(best, 4)


#: A gain above 1 without a histogram fingerprint must at least have clipped this share of
#: values to 255 (a gain of 1.5 clips every value above 170).
MIN_GAIN_SATURATION = 0.005
#: How far the image's own extreme may be from the classifier's shift and still replace it
#: (the darkest value may exceed a positive shift by twice this: see :func:`refine_decision`).
SHIFT_SNAP = 0.1
#: Where a gain below 1 is looked for when the classifier says "darker", and the correlation its
#: fingerprint needs to overrule it. On 48 forgeries of held-out photos 13..60 (the restoration
#: table uses 1..12): gains of 0.6..0.8 reached >= 0.7 in 89 of 96 images; shifts (192 images,
#: alpha +-0.5 and +-U(0.2, 0.6)), gains above 1 and undisturbed images stayed <= 0.57.
LOW_GAIN_RANGE = (0.55, 0.9)
GAIN_SWITCH_MIN_CORRELATION = 0.7


def refine_decision(
    rgb: np.ndarray, kind: str, alpha: float | None, beta: float | None
) -> dict[str, Any]:
    """Check the classifier's decision against what that disturbance must leave in the pixels,
    and read its strength from them where they tell it exactly.

    * brightness ``alpha > 0``: no pixel can be darker than ``alpha``. If the darkest value
      is below ``alpha / 2`` the decision is vetoed; if it lies in ``[alpha - SHIFT_SNAP,
      alpha + 2 SHIFT_SNAP]`` it becomes ``alpha``: photos almost always reach black (48 of 48
      held-out photos 13..60 within 0.04), where the classifier reads large shifts short
      (median error 0.09 on shifts of 0.5 and U(0.2, 0.6); the darkest value's: 0.002).
    * brightness ``alpha < 0``: mirrored, with the brightest value and ``1 + alpha`` (most
      photos reach white; dim ones do not, hence only the symmetric window). A gain below 1
      darkens too, and the classifier mistakes one for the other on dark photos: when the
      histogram holds a gain fingerprint in :data:`LOW_GAIN_RANGE` with a correlation of
      :data:`GAIN_SWITCH_MIN_CORRELATION`, the decision becomes that gain (an 8-bit shift
      moves levels without merging them, so it leaves no such fingerprint).
    * contrast: :func:`fit_contrast_gain` around the classifier's beta. Without a fingerprint,
      a gain below 1 is vetoed when pixels are brighter than ``beta + SHIFT_SNAP``, a gain
      above 1 when under :data:`MIN_GAIN_SATURATION` of the values are at 255.

    Returns ``{"type", "alpha", "beta", "source", "veto"}``: ``source`` says where the strength
    came from (``classifier``, ``darkest``, ``brightest``, ``gain_fit``), ``veto`` is None or
    the reason the decision became ``none``; contrast adds ``beta_classifier``, ``gain_fit``
    (and ``switched_from`` when a darkening shift became a gain).
    """
    _check_rgb(rgb)
    out: dict[str, Any] = {"type": kind, "alpha": alpha, "beta": beta, "source": "classifier",
                           "veto": None}
    darkest, brightest = float(rgb.min()) / 255.0, float(rgb.max()) / 255.0
    if kind == "brightness" and alpha is not None:
        if alpha > 0:
            if darkest < alpha / 2:
                out["veto"] = (
                    f"pixels at {darkest:.3f} are darker than a shift of {alpha:+.3f} allows"
                )
            elif -SHIFT_SNAP <= darkest - alpha <= 2 * SHIFT_SNAP:
                out.update(alpha=round(darkest, 4), source="darkest")
        elif alpha < 0:
            lo, hi = LOW_GAIN_RANGE
            fitted, corr = fit_contrast_gain(rgb, (lo + hi) / 2, span=(hi - lo) / 2)
            if fitted is not None and corr >= GAIN_SWITCH_MIN_CORRELATION:
                out.update(
                    type="contrast",
                    alpha=None,
                    beta=fitted,
                    source="gain_fit",
                    switched_from={"type": "brightness", "alpha": alpha},
                    gain_fit={"beta": fitted, "correlation": corr},
                )
            elif brightest > 1 + alpha / 2:
                out["veto"] = (
                    f"pixels at {brightest:.3f} are brighter than a shift of {alpha:+.3f} allows"
                )
            elif abs(brightest - 1 - alpha) <= SHIFT_SNAP:
                out.update(alpha=round(brightest - 1, 4), source="brightest")
    elif kind == "contrast" and beta is not None:
        fitted, corr = fit_contrast_gain(rgb, beta)
        out.update(beta_classifier=beta, gain_fit={"beta": fitted, "correlation": corr})
        if fitted is not None:
            out.update(beta=fitted, source="gain_fit")
        elif beta < 1 and brightest > beta + SHIFT_SNAP:
            out["veto"] = f"pixels at {brightest:.3f} are brighter than a gain of {beta:.3f} allows"
        elif beta > 1 and float((rgb >= 255).mean()) < MIN_GAIN_SATURATION:
            out["veto"] = f"a gain of {beta:.3f} would clip highlights, but few pixels are at 255"
    if out["veto"]:
        out.update(type="none", alpha=None, beta=None, source=None)
    return out


def exact_inverse(
    rgb: np.ndarray, kind: str, alpha: float | None, beta: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(inverse (H, W, 3) uint8, lost (H, W, 3) bool)`` of a decided disturbance.

    The inverse formula ``clip(I' - alpha)`` / ``clip(I' / beta)`` is exact (to 8-bit rounding)
    wherever the disturbance did not clip; ``lost`` (:func:`clipped_values`) marks the values
    it clipped, whose true value only the learned restorer can estimate. ``kind == "none"``:
    the input and no lost values.
    """
    _check_rgb(rgb)
    x = rgb.astype(np.float64) / 255.0
    if kind == "brightness" and alpha:
        inv = x - alpha
    elif kind == "contrast" and beta:
        inv = x / beta
    else:
        return rgb.copy(), np.zeros(rgb.shape, bool)
    lost = clipped_values(rgb, kind, alpha, beta)
    return np.clip(np.round(inv * 255.0), 0, 255).astype(np.uint8), lost


def lost_value_range(kind: str, alpha: float | None, beta: float | None) -> tuple[float, float]:
    """Where the clean value of a clipped pixel must lie, in [0, 1]: ``I + alpha >= 1`` gives
    ``[1 - alpha, 1]``, ``I + alpha <= 0`` gives ``[0, -alpha]``, ``beta I >= 1`` gives
    ``[1 / beta, 1]``; ``(0, 1)`` when nothing is known."""
    if kind == "brightness" and alpha:
        return (1.0 - alpha, 1.0) if alpha > 0 else (0.0, -alpha)
    if kind == "contrast" and beta and beta > 1:
        return 1.0 / beta, 1.0
    return 0.0, 1.0


# --------------------------------------------------------------------------- learned module


def load_restoration_net(weights: Path) -> tuple[RestorationNet, dict[str, Any]]:
    """The network and its config from ``weights`` and the model card next to it.

    The card's ``config["model"]`` (as the trainer writes it) or ``config`` is the network
    config. Raises :class:`WeightsError` for a missing file or card, or tensors that do not
    match the config.
    """
    import json

    from forgectl.backends.base import load_checked_state
    from forgectl.nets.restoration import RestorationNet

    weights = Path(weights)
    if not weights.is_file():
        raise WeightsError(f"restoration weights not found: {weights}")
    card_path = weights.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
        config = card["config"]
        config = config["model"] if "model" in config else config
        net = RestorationNet(config)
    except FileNotFoundError:
        raise WeightsError(f"model card not found: {card_path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"model card {card_path} is invalid: {exc}") from exc
    load_checked_state(net, weights)
    return net, card


@dataclass
class Classification:
    """What the classifier says about a whole image."""

    type: str
    alpha: float | None
    beta: float | None
    confidence: float
    probabilities: dict[str, float]
    condition: Any  # (1, 5) torch tensor passed to the restorer


class Restorer:
    """The learned restoration module: classify the whole image, then restore it in tiles.

    Args:
        weights: ``.safetensors`` of a ``RestorationNet`` with its model card (default
            ``weights/`` + :data:`DEFAULT_RESTORE_WEIGHTS`).
        tile: restorer tile size (multiple of the attention window); overlap: tile overlap
            (multiple of 8), blended linearly.
        min_confidence: restore only when the predicted class is not ``none`` and its
            probability reaches this.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        tile: int = 256,
        overlap: int = 32,
        min_confidence: float = 0.5,
    ) -> None:
        import torch

        from forgectl.backends.base import WEIGHTS_DIR, compute_threads

        self.weights = Path(weights) if weights else WEIGHTS_DIR / DEFAULT_RESTORE_WEIGHTS
        self.net, self.card = load_restoration_net(self.weights)
        torch.set_num_threads(compute_threads())
        window = self.net.restorer.window
        if tile < 2 * window or tile % window or tile % 8:
            raise UsageError(f"restore: tile must be a multiple of 8 and {window}, >= {2 * window}")
        if overlap < 0 or overlap % 8 or overlap >= tile // 2:
            raise UsageError("restore: overlap must be a multiple of 8, below half the tile")
        if not 0.0 <= min_confidence <= 1.0:
            raise UsageError("restore: min_confidence must be in [0, 1]")
        self.tile, self.overlap, self.min_confidence = tile, overlap, min_confidence

    def classify(self, rgb: np.ndarray) -> Classification:
        """Classifier decision for (H, W, 3) uint8 pixels."""
        import torch

        from forgectl.nets.restoration import DISTURBANCE_CLASSES, condition_from_prediction

        _check_rgb(rgb)
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()[None] / 255
        with torch.inference_mode():
            out = self.net.classifier(*self.net.classifier.features(x))
            probs = torch.softmax(out["logits"], dim=1)[0]
            cond = condition_from_prediction(out)
        k = int(probs.argmax())
        kind = DISTURBANCE_CLASSES[k]
        return Classification(
            type=kind,
            alpha=round(float(out["alpha"][0]), 4) if kind == "brightness" else None,
            beta=round(float(out["beta"][0]), 4) if kind == "contrast" else None,
            confidence=round(float(probs[k]), 4),
            probabilities={
                c: round(float(p), 4) for c, p in zip(DISTURBANCE_CLASSES, probs, strict=True)
            },
            condition=cond,
        )

    def restore(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(H, W, 3) uint8 -> (restored uint8 of the same shape, facts). Never changes ``rgb``.

        With no disturbance seen (class ``none``, or confidence below ``min_confidence``) the
        result is a copy of the input and ``facts["restored"]`` is False.
        """
        c = self.classify(rgb)
        facts: dict[str, Any] = {
            "method": "learned",
            "weights": self.weights.name,
            "type": c.type,
            "alpha": c.alpha,
            "beta": c.beta,
            "confidence": c.confidence,
            "probabilities": c.probabilities,
            "min_confidence": self.min_confidence,
        }
        if c.type == "none" or c.confidence < self.min_confidence:
            facts["restored"] = False
            return rgb.copy(), facts
        checked = refine_decision(rgb, c.type, c.alpha, c.beta)
        facts.update(checked)
        if checked["veto"]:
            facts["classifier_type"] = c.type
            facts["restored"] = False
            return rgb.copy(), facts
        facts["restored"] = True
        exact, lost = exact_inverse(rgb, facts["type"], facts["alpha"], facts["beta"])
        facts["clipped_fraction"] = round(float(lost.mean()), 4)
        if not lost.any():  # nothing was clipped: the inverse formula is the whole answer
            return exact, facts
        net = self._run_tiles(rgb, self._decided_condition(facts), lost.any(axis=2))
        lo, hi = lost_value_range(facts["type"], facts["alpha"], facts["beta"])
        # A clipped value's truth lies in [lo, hi]: projecting the network's estimate onto
        # that interval can only bring it closer.
        filled = np.clip(net, round(lo * 255), round(hi * 255)).astype(np.uint8)
        return np.where(lost, filled, exact), facts

    @staticmethod
    def _decided_condition(facts: dict[str, Any]) -> Any:
        """(1, 5) condition of the decision: one-hot class and its strength (what the
        restorer saw in the teacher-forced half of training), not the soft probabilities,
        whose mixture of inverses would blur an exact inverse."""
        import torch

        from forgectl.nets.restoration import DISTURBANCE_CLASSES, condition_from_truth

        kind = torch.tensor([DISTURBANCE_CLASSES.index(facts["type"])])
        alpha = torch.tensor([facts["alpha"] or 0.0])
        beta = torch.tensor([facts["beta"] or 1.0])
        return condition_from_truth(kind, alpha, beta)

    def _run_tiles(
        self, rgb: np.ndarray, condition: Any, needed: np.ndarray | None = None
    ) -> np.ndarray:
        """The restorer on blended tiles: (H, W, 3) uint8 -> (H, W, 3) uint8.

        ``needed`` (H, W) bool: only tiles holding a needed pixel run (the caller uses the
        output there alone; every tile covering such a pixel runs, so its blend is unchanged).
        """
        import torch

        from forgectl.nets.tiling import BlendAccumulator, plan_tiles

        h, w = rgb.shape[:2]
        plan = plan_tiles(h, w, self.tile, self.overlap, multiple=8)
        # Edge replication, not zeros: a black border would look like a disturbance edge.
        padded = np.pad(
            rgb, ((0, plan.padded_height - h), (0, plan.padded_width - w), (0, 0)), mode="edge"
        )
        accs = [BlendAccumulator(plan) for _ in range(3)]
        with torch.inference_mode():
            for t in plan.tiles:
                rows, cols = slice(t.y0, t.y0 + t.height), slice(t.x0, t.x0 + t.width)
                if needed is not None and not needed[rows, cols].any():
                    continue
                win = padded[rows, cols]
                x = torch.from_numpy(np.ascontiguousarray(win.transpose(2, 0, 1))).float()
                out = self.net.restorer(x[None] / 255.0, condition)[0].clamp(0, 1).numpy()
                for ch in range(3):
                    accs[ch].add(t, out[ch])
        planes = np.stack([a.result() for a in accs], axis=-1)
        return np.clip(np.round(planes * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- files


RESTORE_SUFFIXES = (".restored.png", ".restore.json")


def write_restoration(
    image_path: str | Path,
    out_dir: str | Path,
    restorer: Restorer | None = None,
    *,
    out_stem: str | Path | None = None,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """``forgectl restore IMG --out DIR``: ``<stem>.restored.png`` + ``<stem>.restore.json``.

    Args:
        image_path: the input (read only; never written). out_dir: created if missing.
        restorer: the learned module; None runs the classical baseline.
        out_stem: output path without suffix (default ``out_dir / <input stem>``; a batch
            passes :func:`forgectl.pipeline.plan_outputs` stems so equal names do not collide).
        max_pixels: refuse larger images (:func:`forgectl.intake.load_image`).

    Returns:
        The JSON record (also written).

    Raises:
        InputError: unreadable input, or an output path that would overwrite the input.
    """
    from forgectl.intake import load_image
    from forgectl.outputs import png_bytes, write_bytes, write_json

    src = Path(image_path)
    image = load_image(src, max_pixels)
    stem = Path(out_stem) if out_stem is not None else Path(out_dir) / src.stem
    png_path, json_path = (stem.with_name(stem.name + s) for s in RESTORE_SUFFIXES)
    for p in (png_path, json_path):
        if p.exists() and p.resolve() == src.resolve():
            raise InputError(f"refusing to overwrite the input {src}")
    if restorer is None:
        restored, facts = classical_restore(image.rgb)
    else:
        restored, facts = restorer.restore(image.rgb)
    write_bytes(png_path, png_bytes(np.ascontiguousarray(restored), compress_level=1))
    record = {
        "schema": RESTORE_SCHEMA,
        "input": {
            "path": str(src),
            "sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "format": image.format,
        },
        "output": str(png_path),
        "restoration": facts,
    }
    write_json(json_path, record)
    return record
