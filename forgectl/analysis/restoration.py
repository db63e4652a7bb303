"""Undoing a global brightness or contrast disturbance: the numpy parts.

* :func:`classical_restore`, the blind baseline of the restoration table: the inverse of a
  global linear fit ``I' = g I + o`` (below).
* The decision checks that read the disturbance from the pixels (:func:`refine_decision`:
  darkest-value window, gain fingerprint) and the exact inverse of unclipped values
  (:func:`exact_inverse`), used by the learned restorer
  (:class:`forgectl.backends.restorer.Restorer`) around its network.

The facts dict says what was done: ``{"method", "type", "alpha", "beta", "confidence",
"restored", ...}`` (``alpha`` only for brightness, ``beta`` only for contrast).

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

from typing import Any

import numpy as np

from forgectl.analysis.disturbance import clipped_values

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


def image_quantiles(rgb: np.ndarray, levels: tuple[float, ...] = QUANTILE_LEVELS) -> np.ndarray:
    """Quantiles in [0, 1] of the pooled R, G, B values of (H, W, 3) uint8 pixels.

    Computed on a strided subsample of long side about :data:`QUANTILE_SIDE` (exact values: no
    averaging, so saturation stays visible).
    """
    check_rgb(rgb)
    step = max(1, -(-max(rgb.shape[:2]) // QUANTILE_SIDE))
    values = rgb[::step, ::step].reshape(-1).astype(np.float64) / 255.0
    return np.quantile(values, levels)


def check_rgb(rgb: np.ndarray) -> None:
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
    check_rgb(rgb)
    cands = np.arange(max(0.3, guess - span), guess + span + 1e-9, step)
    corr = gain_correlations(rgb, cands)
    if corr is None:
        return None, 0.0
    best = float(corr.max())
    if best < GAIN_FIT_MIN_CORRELATION:
        return None, round(best, 4)
    tied = cands[corr >= best - 1e-9]
    return round(float(np.median(tied)), 4), round(best, 4)


def gain_correlations(rgb: np.ndarray, cands: np.ndarray) -> np.ndarray | None:
    """Per candidate gain, the correlation of its level-multiplicity pattern with the
    histogram's (:func:`fit_contrast_gain`); None when the occupied range is under 32 levels.

    Args:
        rgb: (H, W, 3) uint8 pixels. cands: (K,) candidate gains. Returns (K,) in [-1, 1].
    """
    hist = np.bincount(rgb.reshape(-1), minlength=256).astype(np.float64)
    occupied = np.nonzero(hist)[0]
    lo, hi = max(int(occupied[0]), 1) + 4, min(int(occupied[-1]), 254) - 4
    if hi - lo < 32:
        return None
    observed = (hist / np.maximum(_moving_average(hist[None])[0], 1e-9))[lo:hi]
    levels = np.clip(np.round(_LEVELS[None, :] * cands[:, None]), 0, 255).astype(np.int64)
    mult = np.zeros((len(cands), 256))
    np.add.at(mult, (np.repeat(np.arange(len(cands)), 256), levels.reshape(-1)), 1.0)
    pattern = (mult / np.maximum(_moving_average(mult), 1e-9))[:, lo:hi]
    a = observed - observed.mean()
    b = pattern - pattern.mean(axis=1, keepdims=True)
    denom = np.sqrt((a**2).sum() * (b**2).sum(axis=1))
    return np.where(denom > 0, (b @ a) / np.maximum(denom, 1e-12), 0.0)


#: A gain above 1 without a histogram fingerprint must at least have clipped this share of
#: values to 255 (a gain of 1.5 clips every value above 170).
MIN_GAIN_SATURATION = 0.005
#: How far the image's own extreme may be from the classifier's shift and still replace it
#: (twice this when the extreme level holds clipped values: see :func:`snap_window`).
SHIFT_SNAP = 0.1
#: Share of values at the darkest (brightest) level that shows the photo's shadows (highlights)
#: were clipped at black (white) before a shift moved them there. On forgeries of held-out
#: photos 13..24 of each corpus source: photos that reach white hold 0.001-12 % of their values
#: there (most above 0.005 %), dim ones 0-0.002 % (one flat-coloured wallpaper 0.45 %).
EXTREME_SPIKE_MIN = 5e-5
#: Where a gain below 1 is looked for when the classifier says "darker", and the correlation its
#: fingerprint needs to overrule it. On 48 forgeries of held-out photos 13..60 (the restoration
#: table uses 1..12): gains of 0.6..0.8 reached >= 0.7 in 89 of 96 images; shifts (192 images,
#: alpha +-0.5 and +-U(0.2, 0.6)), gains above 1 and undisturbed images stayed <= 0.57.
LOW_GAIN_RANGE = (0.55, 0.9)
GAIN_SWITCH_MIN_CORRELATION = 0.7
#: How dark an undisturbed photo's darkest value is at most: 0.118 over held-out photos
#: 13..24 of every corpus source (most reach black; dim-less Dresden scenes do not). A gain
#: above 1 multiplies the darkest value, so it stays below ``beta`` times this; a brightening
#: shift lifts it to ``alpha``.
BLACK_LEVEL_MAX = 0.12


def low_gain_fingerprint(rgb: np.ndarray) -> dict[str, float] | None:
    """``{"beta", "correlation"}`` of a gain in :data:`LOW_GAIN_RANGE` whose peak pattern the
    histogram holds with a correlation of at least :data:`GAIN_SWITCH_MIN_CORRELATION`, else
    None.

    A gain below 1 merges 8-bit levels in a fixed pattern; nothing else that happens to a photo
    here does (a shift moves levels, JPEG smears the histogram). Measured on undisturbed images
    (``fit_contrast_gain`` over the range): 0 of the 940 corpus photos and 0 of casia1-dev's 332
    images (forged and authentic) reach 0.7 (max 0.55 and 0.61;
    ``benchmarks/gain_fingerprint_scan.py``), so a fingerprint this strong
    decides even where the classifier does not.

    Args:
        rgb: (H, W, 3) uint8 pixels.
    """
    lo, hi = LOW_GAIN_RANGE
    fitted, corr = fit_contrast_gain(rgb, (lo + hi) / 2, span=(hi - lo) / 2)
    if fitted is None or corr < GAIN_SWITCH_MIN_CORRELATION:
        return None
    return {"beta": fitted, "correlation": corr}


#: A weaker fingerprint that still decides a gain below 1 the classifier read, when no gain
#: fits near its reading: the best correlation over :data:`LOW_GAIN_RANGE` and its lead over
#: the best candidate more than :data:`WEAK_GAIN_SEPARATION` away. Chosen on forgeries of
#: held-out photos 13..24 of every corpus source (2 per photo, seed 7, shipped module; mean
#: error of the decided gain, a wrong type counting 1): lossless gains of 0.6 / 0.7 / 0.8
#: 0.015 / 0.004 / 0.010 -> 0.000 (the classifier's reading stood on 12 of 126, photos with
#: irregular histograms of their own); re-saved as JPEG 90 after the gain 0.138 / 0.263 /
#: 0.782 -> 0.115 / 0.258 / 0.782; undisturbed images and shifts unchanged. Not used to
#: choose, photos 25..36 (seed 8): JPEG 0.065 / 0.026 / 0.808 -> 0.036 / 0.033 / 0.808,
#: lossless 0.6 0.005 -> 0.000, the rest unchanged. It never lifts a veto: undisturbed JPEGs
#: often hold a weak fingerprint near 0.9 (allowed to lift vetoes, it made ``--restore on``
#: fire on 79 of casia1-dev's 332 images instead of 3).
WEAK_GAIN_MIN_CORRELATION = 0.3
WEAK_GAIN_MIN_LEAD = 0.03
WEAK_GAIN_SEPARATION = 0.02


def weak_gain_fingerprint(rgb: np.ndarray) -> dict[str, float] | None:
    """``{"beta", "correlation", "lead"}`` of the best gain in :data:`LOW_GAIN_RANGE` when its
    correlation reaches :data:`WEAK_GAIN_MIN_CORRELATION` and leads every candidate more than
    :data:`WEAK_GAIN_SEPARATION` away by :data:`WEAK_GAIN_MIN_LEAD`, else None. Only for
    deciding the strength of a gain the classifier already saw (undisturbed photos reach
    0.51 here: it cannot decide *whether* there was a gain).

    Args:
        rgb: (H, W, 3) uint8 pixels.
    """
    check_rgb(rgb)
    cands = np.arange(LOW_GAIN_RANGE[0], LOW_GAIN_RANGE[1] + 1e-9, GAIN_FIT_STEP)
    corr = gain_correlations(rgb, cands)
    if corr is None:
        return None
    i = int(corr.argmax())
    far = np.abs(cands - cands[i]) > WEAK_GAIN_SEPARATION
    lead = float(corr[i] - corr[far].max())
    if corr[i] < WEAK_GAIN_MIN_CORRELATION or lead < WEAK_GAIN_MIN_LEAD:
        return None
    return {"beta": round(float(cands[i]), 4), "correlation": round(float(corr[i]), 4),
            "lead": round(lead, 4)}


def snap_window(rgb: np.ndarray, level: int) -> float:
    """How far the darkest or brightest value (``level``, 8-bit) of (H, W, 3) uint8 pixels may be
    from a classifier's shift and still replace it: :data:`SHIFT_SNAP`, twice that when the level
    holds :data:`EXTREME_SPIKE_MIN` of the values (clipped shadows or highlights: that level was
    black or white before the shift, so it tells the shift exactly). On the held-out photos
    13..24 of each source (4 forgeries per kind, shifts of +-0.2, +-0.35, +-0.5, shipped
    module), mean error of the decided shift against a fixed window (``SHIFT_SNAP`` below,
    twice it above the darkest value): 0.017 -> 0.009 at +0.5, 0.020 -> 0.015 at +0.2, 0.016 ->
    0.012 at -0.5, never larger."""
    return 2 * SHIFT_SNAP if float((rgb == level).mean()) >= EXTREME_SPIKE_MIN else SHIFT_SNAP


def refine_decision(
    rgb: np.ndarray, kind: str, alpha: float | None, beta: float | None
) -> dict[str, Any]:
    """Check the classifier's decision against what that disturbance must leave in the pixels,
    and read its strength from them where they tell it exactly.

    * brightness ``alpha > 0``: no pixel can be darker than ``alpha``. If the darkest value
      is below ``alpha / 2`` the decision is vetoed; if it lies within :func:`snap_window` of
      ``alpha`` it becomes ``alpha``: photos almost always reach black (48 of 48 held-out
      photos 13..60 within 0.04), where the classifier reads large shifts short (median error
      0.09 on shifts of 0.5 and U(0.2, 0.6); the darkest value's: 0.002).
    * brightness ``alpha < 0``: mirrored, with the brightest value and ``1 + alpha`` (most
      photos reach white; dim ones do not, hence the narrow window unless highlights were
      clipped). A gain below 1 darkens too, and the classifier mistakes one for the other on
      dark photos: when the histogram holds a gain fingerprint in :data:`LOW_GAIN_RANGE` with
      a correlation of :data:`GAIN_SWITCH_MIN_CORRELATION`, the decision becomes that gain (an
      8-bit shift moves levels without merging them, so it leaves no such fingerprint).
    * contrast: :func:`fit_contrast_gain` around the classifier's beta, else a fingerprint in
      :data:`LOW_GAIN_RANGE` as strong as for the switch above, else (for a gain below 1 that
      no brightness check below vetoes) a :func:`weak_gain_fingerprint`. Without a fingerprint,
      a gain below 1 is vetoed when pixels are brighter than ``beta + SHIFT_SNAP``, a gain
      above 1 when under :data:`MIN_GAIN_SATURATION` of the values are at 255.

    Returns ``{"type", "alpha", "beta", "source", "veto"}``: ``source`` says where the strength
    came from (``classifier``, ``darkest``, ``brightest``, ``gain_fit``), ``veto`` is None or
    the reason the decision became ``none``; contrast adds ``beta_classifier``, ``gain_fit``
    (and ``switched_from`` when a darkening shift became a gain, or a gain a brightening shift).
    """
    check_rgb(rgb)
    out: dict[str, Any] = {"type": kind, "alpha": alpha, "beta": beta, "source": "classifier",
                           "veto": None}
    low, high = int(rgb.min()), int(rgb.max())
    darkest, brightest = low / 255.0, high / 255.0
    if kind == "brightness" and alpha is not None:
        if alpha > 0:
            if darkest < alpha / 2:
                out["veto"] = (
                    f"pixels at {darkest:.3f} are darker than a shift of {alpha:+.3f} allows"
                )
            elif abs(darkest - alpha) <= snap_window(rgb, low):
                out.update(alpha=round(darkest, 4), source="darkest")
        elif alpha < 0:
            gain = low_gain_fingerprint(rgb)
            if gain is not None:
                out.update(
                    type="contrast",
                    alpha=None,
                    beta=gain["beta"],
                    source="gain_fit",
                    switched_from={"type": "brightness", "alpha": alpha},
                    gain_fit=gain,
                )
            elif brightest > 1 + alpha / 2:
                out["veto"] = (
                    f"pixels at {brightest:.3f} are brighter than a shift of {alpha:+.3f} allows"
                )
            elif abs(brightest - 1 - alpha) <= snap_window(rgb, high):
                out.update(alpha=round(brightest - 1, 4), source="brightest")
    elif kind == "contrast" and beta is not None:
        fitted, corr = fit_contrast_gain(rgb, beta)
        if fitted is None and (gain := low_gain_fingerprint(rgb)) is not None:
            # The classifier's strength was outside the search around it (held-out photos: a
            # gain of 0.70 read as 0.89); a fingerprint this strong decides, as it does for a
            # darkening shift.
            fitted, corr = gain["beta"], gain["correlation"]
        if (fitted is None and beta < 1 and brightest <= beta + SHIFT_SNAP
                and (gain := weak_gain_fingerprint(rgb)) is not None
                and brightest <= gain["beta"] + SHIFT_SNAP):
            # Photos with irregular histograms of their own (held-out photos: a gain of 0.70
            # read as 0.76-0.93, correlation 0.33 at the true gain, below every threshold
            # above) still put their best candidate on the true gain. Only the strength of a
            # decision that stands anyway: undisturbed JPEGs hold weak fingerprints near 0.9.
            fitted, corr = gain["beta"], gain["correlation"]
        out.update(beta_classifier=beta, gain_fit={"beta": fitted, "correlation": corr})
        if fitted is not None:
            out.update(beta=fitted, source="gain_fit")
        elif beta > 1 and darkest > beta * BLACK_LEVEL_MAX:
            out.update(type="brightness", alpha=round(darkest, 4), beta=None, source="darkest",
                       switched_from={"type": "contrast", "beta": beta})
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
    check_rgb(rgb)
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
