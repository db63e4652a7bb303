"""JPEG-domain building blocks: 8x8 block DCT, zigzag order, double-quantization histogram models
and per-grid-origin quantization periodicity.

Conventions follow the JPEG file (and :class:`forgectl.intake.JpegData`): a coefficient block is
indexed ``[u, v]`` (vertical, then horizontal frequency) in natural order, and the DCT is the
orthonormal 8x8 DCT-II that JPEG uses, so ``dct_coefficient * 1`` and ``quantized * step`` are in
the same units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

BLOCK = 8

#: Rows converted at once by :func:`luma`.
_LUMA_ROWS = 256

#: A cumulative distribution function evaluated elementwise.
Cdf = Callable[[np.ndarray], np.ndarray]


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """(n, n) float64 orthonormal DCT-II matrix ``D``: block coefficients are ``D @ b @ D.T``."""
    k = np.arange(n)
    mat = np.sqrt(2.0 / n) * np.cos((2 * k[None, :] + 1) * k[:, None] * np.pi / (2 * n))
    mat[0] /= np.sqrt(2.0)
    return mat


def zigzag_order(n: int = BLOCK) -> list[tuple[int, int]]:
    """The JPEG zigzag scan as ``(u, v)`` natural-order positions, DC first."""
    cells = [(u, v) for u in range(n) for v in range(n)]
    # Anti-diagonals s = u + v; odd diagonals run top-right to bottom-left (u increasing),
    # even ones bottom-left to top-right (u decreasing), as in ITU-T T.81 Figure 5.
    return sorted(cells, key=lambda c: (c[0] + c[1], c[0] if (c[0] + c[1]) % 2 else -c[0]))


def low_frequency_ac(count: int) -> list[tuple[int, int]]:
    """The first ``count`` AC positions in zigzag order (DC excluded), ``1 <= count <= 63``."""
    if not 1 <= count <= 63:
        raise ValueError(f"count must be in 1..63, got {count}")
    return zigzag_order()[1 : 1 + count]


#: BT.601 full-range luma weights of R, G, B (JPEG's Y, as libjpeg).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 JPEG luma Y (BT.601 full range, as libjpeg)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got {rgb.shape}")
    weights = np.array(LUMA_WEIGHTS, np.float32)
    out = np.empty(rgb.shape[:2], np.float32)
    # In bands of rows: each pixel's value is the same as from one product over the whole
    # image, without a float32 copy of all three channels (144 MB on 12 MP, mostly page
    # faults).
    for y0 in range(0, rgb.shape[0], _LUMA_ROWS):
        band = slice(y0, y0 + _LUMA_ROWS)
        np.matmul(rgb[band].astype(np.float32), weights, out=out[band])
    return out


def block_dct(plane: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """8x8 DCT of every whole block of ``plane`` on a grid starting at ``offset``.

    Args:
        plane: (H, W) float pixel plane (e.g. :func:`luma`).
        offset: ``(dy, dx)`` origin of the block grid in pixels.

    Returns:
        (BH, BW, 8, 8) float32 coefficients of the level-shifted (-128) blocks; partial blocks
        at the right and bottom border are dropped.
    """
    dy, dx = offset
    sub = plane[dy:, dx:]
    bh, bw = sub.shape[0] // BLOCK, sub.shape[1] // BLOCK
    blocks = sub[: bh * BLOCK, : bw * BLOCK].astype(np.float32) - 128.0
    blocks = blocks.reshape(bh, BLOCK, bw, BLOCK).transpose(0, 2, 1, 3)
    mat = dct_matrix().astype(np.float32)
    return np.einsum("ui,abij,vj->abuv", mat, blocks, mat, optimize=True)


def clipped_blocks(rgb: np.ndarray, bh: int, bw: int, margin: int = 1) -> np.ndarray:
    """(BH, BW) bool: the 8x8 block holds a pixel with a channel within ``margin - 1`` of 0
    or 255 (``margin`` 1: exactly 0 or 255). Blocks past the image's edge count its pixels
    only. A decoder clipped such pixels, so the block is off its quantization lattice."""
    # inRange is 0 where some channel is outside margin..255-margin: one pass over uint8,
    # where numpy's min and max over a length-3 axis took over a second on 12 MP.
    low, high = margin, 255 - margin
    extreme = cv2.inRange(np.ascontiguousarray(rgb), (low,) * 3, (high,) * 3) == 0
    padded = np.zeros((8 * bh, 8 * bw), bool)
    rows, cols = min(extreme.shape[0], 8 * bh), min(extreme.shape[1], 8 * bw)
    padded[:rows, :cols] = extreme[:rows, :cols]
    return padded.reshape(bh, 8, bw, 8).any(axis=(1, 3))


def block_plane(coefficients: np.ndarray, u: int, v: int) -> np.ndarray:
    """(BH, BW) values of frequency ``(u, v)`` from an (8*BH, 8*BW) natural-order plane."""
    return coefficients[u::BLOCK, v::BLOCK]


def blocks_to_pixels(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Spread per-block values onto pixels: block ``(i, j)`` covers ``[8i:8i+8, 8j:8j+8]``.

    Args:
        values: (BH, BW) per-block values.
        height, width: output size; pixels past the last block row/column take its value.

    Returns:
        (H, W) float32.
    """
    bh, bw = values.shape
    src = values.astype(np.float32)
    # Whole blocks by broadcasting into an (rows, 8, cols, 8) view (a fancy-index gather of
    # every pixel was ~5x slower on 12 MP), then the last block row/column repeated.
    full_h, full_w = min(bh, height // BLOCK), min(bw, width // BLOCK)
    out = np.empty((height, width), np.float32)
    core = out[: full_h * BLOCK, : full_w * BLOCK].reshape(full_h, BLOCK, full_w, BLOCK)
    core[...] = src[:full_h, None, :full_w, None]
    if full_w * BLOCK < width:
        cols = np.minimum(np.arange(full_w * BLOCK, width) // BLOCK, bw - 1)
        out[: full_h * BLOCK, full_w * BLOCK :] = np.repeat(src[:full_h, cols], BLOCK, axis=0)
    if full_h * BLOCK < height:
        rows = np.minimum(np.arange(full_h * BLOCK, height) // BLOCK, bh - 1)
        cols = np.minimum(np.arange(width) // BLOCK, bw - 1)
        out[full_h * BLOCK :] = src[rows[:, None], cols[None, :]]
    return out


# --------------------------------------------------------------------------- double quantization


@dataclass(frozen=True)
class StepFit:
    """Result of fitting the double-quantization mixture to one frequency's histogram.

    Attributes:
        primary_step: estimated first quantization step ``Q1`` (equals the file's step when no
            double quantization is seen).
        authentic_fraction: mixture weight ``alpha`` of the double-quantized component.
        gain_per_coefficient: log-likelihood gain (nats per coefficient) of the best mixture over
            plain single compression.
        separation: total-variation distance between the two component histograms; how much a
            single coefficient can tell them apart.
        log_ratio: (2X+1,) float64 ``log p(x | single) - log p(x | double)`` for ``x = -X..X``.
    """

    primary_step: int
    authentic_fraction: float
    gain_per_coefficient: float
    separation: float
    log_ratio: np.ndarray


def smoothed_cdf(
    values: np.ndarray, bandwidth: float | None = None, resolution: float = 0.25
) -> Cdf:
    """Gaussian-kernel estimate ``F(t)`` of the CDF of ``values`` (vectorised callable).

    The raw empirical CDF of a few thousand coefficients is itself noisy enough for the mixture
    fit to mistake its bumps for a double-quantization comb; a kernel estimate removes that.
    ``bandwidth`` defaults to Silverman's rule with a robust spread (at least 0.5).
    """
    data = np.asarray(values, np.float64).ravel()
    n = len(data)
    if n == 0:
        return lambda t: np.zeros_like(np.asarray(t, np.float64))
    if bandwidth is None:
        q75, q25 = np.percentile(data, [75, 25])
        spread = min(float(data.std()), float(q75 - q25) / 1.34) or float(data.std()) or 1.0
        bandwidth = max(0.5, 0.9 * spread * n**-0.2)
    lo = float(data.min()) - 5 * bandwidth
    hi = float(data.max()) + 5 * bandwidth
    edges = np.arange(lo, hi + resolution, resolution)
    hist = np.histogram(data, bins=edges)[0].astype(np.float64)
    radius = int(np.ceil(4 * bandwidth / resolution))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) * resolution / bandwidth) ** 2)
    density = np.convolve(hist, taps / taps.sum(), mode="same")
    cdf_at_edges = np.concatenate([[0.0], np.cumsum(density)]) / max(density.sum(), 1e-12)

    def cdf(t: np.ndarray) -> np.ndarray:
        return np.interp(t, edges, cdf_at_edges, left=0.0, right=1.0)

    return cdf


def single_quantized_pmf(cdf: Cdf, step: int, half_range: int) -> np.ndarray:
    """P(round(c / step) = x) for ``x = -X..X`` given the CDF of unquantized values ``c``.

    Returns (2X+1,) float64, renormalised over the window.
    """
    x = np.arange(-half_range, half_range + 1, dtype=np.float64)
    pmf = cdf((x + 0.5) * step) - cdf((x - 0.5) * step)
    return pmf / max(pmf.sum(), 1e-12)


def double_quantized_pmf(
    cdf: Cdf, first: int, second: int, half_range: int, sigma: float
) -> np.ndarray:
    """P(x) after quantizing with ``first``, decoding, and quantizing again with ``second``.

    The decode to integer pixels adds a roughly Gaussian error of ``sigma`` coefficient units
    between the two quantizations (Bianchi & Piva's model of the rounding error), so a first
    reconstruction point ``k * first`` spreads over neighbouring second-step bins.

    Returns (2X+1,) float64, renormalised over the window.
    """
    # Imported here, not at the top: scipy.special takes 0.2 s to import, which every
    # command that merely lists the methods would pay.
    from scipy.special import ndtr

    x = np.arange(-half_range, half_range + 1, dtype=np.float64)
    reach = (half_range + 1) * second + 4.0 * sigma
    kmax = int(np.ceil(reach / first)) + 1
    k = np.arange(-kmax, kmax + 1, dtype=np.float64)
    p_first = cdf((k + 0.5) * first) - cdf((k - 0.5) * first)  # (K,)
    centre = k[:, None] * first
    upper = ndtr(((x[None, :] + 0.5) * second - centre) / sigma)
    lower = ndtr(((x[None, :] - 0.5) * second - centre) / sigma)
    pmf = p_first @ (upper - lower)
    return pmf / max(pmf.sum(), 1e-12)


def fit_primary_step(
    quantized: np.ndarray,
    unquantized_cdf: Cdf,
    step: int,
    candidates: range,
    half_range: int,
    sigma: float = 0.8,
    alphas: np.ndarray | None = None,
    skip_zero: bool = True,
) -> StepFit:
    """Fit ``h(x) ~ alpha * p_double(x; Q1) + (1 - alpha) * p_single(x)`` over ``Q1`` and alpha.

    Args:
        quantized: integer coefficients of one frequency (any shape) as stored in the file.
        unquantized_cdf: CDF of that frequency's unquantized values (e.g. from calibration).
        step: the file's quantization step ``Q2`` for this frequency.
        candidates: first steps ``Q1`` to try.
        half_range: histogram window ``x = -X..X``; values outside are ignored.
        sigma: decode rounding error in coefficient units.
        alphas: grid of mixture weights (default 0, 0.025, ..., 1).
        skip_zero: fit on the bins ``x != 0`` only. Flat areas fill the zero bin, and
            calibration (whose shifted blocks straddle the file's own block edges) under-predicts
            it, so a huge ``Q1`` that sends everything to zero would otherwise "explain" the
            excess as double compression.

    Returns:
        the :class:`StepFit` with the highest likelihood (ties go to the smaller ``Q1``).
        ``log_ratio`` compares the two full models (zero bin included) for the chosen ``Q1``:
        the zero bin is unreliable for *choosing* ``Q1`` but still informative per block.
    """
    if alphas is None:
        alphas = np.linspace(0.0, 1.0, 41)
    keep = np.ones(2 * half_range + 1, bool)
    if skip_zero:
        keep[half_range] = False

    def restrict(pmf: np.ndarray) -> np.ndarray:
        pmf = np.where(keep, pmf, 0.0)
        return pmf / max(pmf.sum(), 1e-12)

    values = np.asarray(quantized).ravel()
    inside = np.abs(values) <= half_range
    hist = np.bincount(values[inside] + half_range, minlength=2 * half_range + 1).astype(float)
    hist[~keep] = 0.0
    total = max(hist.sum(), 1.0)
    single_full = single_quantized_pmf(unquantized_cdf, step, half_range)
    single = restrict(single_full)
    floor = 1e-6
    ll_single = float(hist @ np.log(single + floor))
    best: tuple[float, int, float, np.ndarray] = (ll_single, step, 0.0, single_full)
    for first in candidates:
        if first == step:
            continue
        raw = double_quantized_pmf(unquantized_cdf, first, step, half_range, sigma)
        if raw[keep].sum() < 1e-3:  # (almost) everything lands in skipped bins: no pattern
            continue
        double = restrict(raw)
        mix = alphas[:, None] * double[None, :] + (1.0 - alphas[:, None]) * single[None, :]
        ll = np.log(mix + floor) @ hist
        i = int(np.argmax(ll))
        if ll[i] > best[0] + 1e-9:
            best = (float(ll[i]), first, float(alphas[i]), raw)
    ll_best, first, alpha, double_full = best
    return StepFit(
        primary_step=int(first),
        authentic_fraction=alpha,
        gain_per_coefficient=(ll_best - ll_single) / total,
        separation=float(0.5 * np.abs(restrict(double_full) - single).sum()),
        log_ratio=np.log(single_full + floor) - np.log(double_full + floor),
    )


# --------------------------------------------------------------------------- grid periodicity


def window_dct(plane: np.ndarray, u: int, v: int) -> np.ndarray:
    """DCT coefficient ``(u, v)`` of the 8x8 window whose top-left pixel is at every position.

    Args:
        plane: (H, W) float luma.

    Returns:
        (H - 7, W - 7) float32; ``out[y, x]`` is coefficient (u, v) of ``plane[y:y+8, x:x+8] -
        128``, so ``out[r::8, c::8]`` are the coefficients of the block grid with origin (r, c).
    """
    if plane.shape[0] < BLOCK or plane.shape[1] < BLOCK:
        raise ValueError(f"plane must be at least 8x8, got {plane.shape}")
    mat = dct_matrix().astype(np.float32)
    kernel = np.outer(mat[u], mat[v])
    out = cv2.filter2D(
        plane.astype(np.float32) - 128.0,
        cv2.CV_32F,
        kernel,
        anchor=(0, 0),
        borderType=cv2.BORDER_REPLICATE,
    )
    return out[: plane.shape[0] - BLOCK + 1, : plane.shape[1] - BLOCK + 1]


def grid_periodicity(
    plane: np.ndarray,
    positions: list[tuple[int, int]],
    steps: range,
    window: int,
) -> np.ndarray:
    """Local evidence, for each of the 64 possible 8x8 grid origins, that the content was once
    quantized on that grid (the integer periodicity of Bianchi & Piva's NA-DJPG analysis).

    On the grid a JPEG used, the block DCT coefficients sit near multiples ``k * Q`` of the
    quantization step, so ``cos(2 pi c / Q)`` averages well above what any other grid origin
    gives. For each origin ``(r, c)``, frequency and candidate step we average that cosine over a
    ``window x window`` neighbourhood of blocks, subtract the mean over the 64 origins (which
    removes what the content's own distribution contributes), keep the best step, and sum over
    frequencies.

    Args:
        plane: (H, W) float luma, H and W >= 8.
        positions: DCT positions ``(u, v)`` to use (DC and low AC are the most robust).
        steps: candidate quantization steps (at least 2).
        window: side, in blocks, of the averaging neighbourhood.

    Returns:
        (CH, CW, 64) float32, CH = (H - 7) // 8, CW = (W - 7) // 8; channel ``8 * r + c`` is
        the origin ``(r, c)``; cell ``(a, b)`` is about the block at pixel ``(8a, 8b)``.
    """
    h, w = plane.shape
    ch, cw = (h - 7) // BLOCK, (w - 7) // BLOCK
    total = np.zeros((ch, cw, 64), np.float32)
    for u, v in positions:
        coef = window_dct(plane, u, v)
        # (CH, CW, 64): the coefficients of every origin's block grid, cropped to a common size.
        grids = np.stack(
            [coef[r::BLOCK, c::BLOCK][:ch, :cw] for r in range(BLOCK) for c in range(BLOCK)],
            axis=2,
        )
        del coef
        best = np.full((ch, cw, 64), -np.inf, np.float32)
        for step in steps:
            periodic = np.cos(grids * np.float32(2.0 * np.pi / step))
            periodic = cv2.blur(periodic, (window, window), borderType=cv2.BORDER_REFLECT)
            periodic -= periodic.mean(axis=2, keepdims=True)
            np.maximum(best, periodic, out=best)
        total += best
    return total
