"""Local noise-level estimation: wavelet HH sub-band, robust (MAD) sigma per overlapping block.

The finest diagonal wavelet sub-band (HH1) of a natural image is mostly sensor noise, so
``sigma = median(|HH|) / 0.6745`` (Donoho's MAD estimator) measures the noise standard deviation
of a block. Blocks are laid on the HH grid (half the image resolution): a ``block`` x ``block``
pixel block is a ``block/2`` x ``block/2`` window of HH coefficients.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

#: Median of |N(0, 1)|: turns the median absolute HH coefficient into a standard deviation.
MAD_TO_SIGMA = 0.6745

#: Luma at or beyond these levels is treated as clipped (no noise survives clipping).
CLIP_LOW, CLIP_HIGH = 2.0, 253.0

#: Upper bound on the window values materialised at once when taking block medians (memory).
_CHUNK_VALUES = 4_000_000


def wavelet_hh(plane: np.ndarray, wavelet: str = "db8", threads: int = 1) -> np.ndarray:
    """Finest-level diagonal detail (HH1) of a 2-D plane.

    The plane is mirrored at its borders before an orthogonal (periodized) transform so the
    coefficients near the borders see reflected image content, not the opposite border.

    Args:
        plane: (H, W) float plane (e.g. luma).
        wavelet: PyWavelets name of an orthogonal wavelet (``db8``, ``haar``, ...).
        threads: rows of each 1-D pass are split between this many threads.

    Returns:
        (ceil(H/2), ceil(W/2)) float32; coefficient ``[i, j]`` covers pixels ``[2i:2i+2, 2j:2j+2]``
        (plus the filter support).
    """
    import pywt

    if plane.ndim != 2:
        raise ValueError(f"plane must be (H, W), got {plane.shape}")
    h, w = plane.shape
    # Pad with an even margin so the periodized HH grid stays aligned with pixel pairs.
    pad = 2 * ((pywt.Wavelet(wavelet).dec_len + 1) // 2)
    padded = np.pad(plane.astype(np.float32), ((pad, pad + h % 2), (pad, pad + w % 2)), "reflect")

    def detail_along_rows(x: np.ndarray) -> np.ndarray:
        def part(rows: np.ndarray) -> np.ndarray:
            return pywt.dwt(rows, wavelet, mode="periodization", axis=1)[1]

        chunks = np.array_split(x, max(1, min(threads, len(x))), axis=0)
        if len(chunks) == 1:
            return part(x)
        with ThreadPoolExecutor(len(chunks)) as pool:
            return np.concatenate(list(pool.map(part, chunks)), axis=0)

    # HH of pywt.dwt2 (vertical pass, then horizontal on its detail), same numbers: only the
    # detail halves are computed, and the vertical pass runs on the transposed plane, where
    # each 1-D signal is contiguous (twice as fast as a strided pass).
    vertical = detail_along_rows(np.ascontiguousarray(padded.T))
    hh = detail_along_rows(np.ascontiguousarray(vertical.T))
    half = pad // 2
    return np.ascontiguousarray(
        hh[half : half + (h + 1) // 2, half : half + (w + 1) // 2], dtype=np.float32
    )


@dataclass(frozen=True)
class BlockGrid:
    """Overlapping square blocks on a plane.

    Attributes:
        size: block side in plane samples.
        stride: step between block origins in plane samples.
        rows, cols: number of blocks vertically and horizontally (at least 1 each).
    """

    size: int
    stride: int
    rows: int
    cols: int

    @classmethod
    def fit(cls, shape: tuple[int, int], size: int, stride: int) -> BlockGrid:
        """The grid of ``size`` blocks every ``stride`` samples covering an (H, W) plane; a plane
        smaller than one block gets a single block of the plane's smaller side."""
        h, w = shape
        size = max(2, min(size, h, w))
        stride = max(1, min(stride, size))
        return cls(size, stride, (h - size) // stride + 1, (w - size) // stride + 1)


def block_medians(values: np.ndarray, grid: BlockGrid, threads: int = 1) -> np.ndarray:
    """Median of ``values`` inside every block of ``grid``.

    Args:
        values: (H, W) float plane (no NaN).
        grid: blocks on that plane.
        threads: bands of block rows are split between this many threads.

    Returns:
        (rows, cols) float32 medians, the numbers ``np.median`` gives (middle value, or the
        mean of the two middle values). Work goes in bands of block rows so memory stays
        bounded (about ``_CHUNK_VALUES`` floats per thread) whatever the image size; each
        block's values are sorted, several times faster than numpy's median per block.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    s, st = grid.size, grid.stride
    n = s * s
    windows = sliding_window_view(values, (s, s))[::st, ::st][: grid.rows, : grid.cols]
    out = np.empty((grid.rows, grid.cols), np.float32)
    band = max(1, _CHUNK_VALUES // max(1, grid.cols * n))

    def one(r0: int) -> None:
        chunk = np.sort(windows[r0 : r0 + band].reshape(-1, grid.cols, n), axis=2)
        upper = chunk[:, :, n // 2]
        out[r0 : r0 + band] = upper if n % 2 else (chunk[:, :, n // 2 - 1] + upper) / 2

    starts = range(0, grid.rows, band)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(one, starts))
    else:
        for r0 in starts:
            one(r0)
    return out


def _block_sums(table: np.ndarray, grid: BlockGrid) -> np.ndarray:
    """Sum inside every block of ``grid`` from a summed-area ``table`` ((H + 1, W + 1), zero
    first row and column). Returns (rows, cols) in the table's dtype."""
    y0 = np.arange(grid.rows) * grid.stride
    x0 = np.arange(grid.cols) * grid.stride
    y1, x1 = y0 + grid.size, x0 + grid.size
    return (
        table[y1[:, None], x1[None, :]]
        - table[y0[:, None], x1[None, :]]
        - table[y1[:, None], x0[None, :]]
        + table[y0[:, None], x0[None, :]]
    )


def block_means(values: np.ndarray, grid: BlockGrid) -> np.ndarray:
    """Mean of ``values`` inside every block of ``grid``, via a summed-area table.

    Returns (rows, cols) float32.
    """
    table = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.float64)
    np.cumsum(np.cumsum(values, axis=0, dtype=np.float64), axis=1, out=table[1:, 1:])
    total = _block_sums(table, grid)
    return (total / float(grid.size * grid.size)).astype(np.float32)


def block_noise_sigma(hh: np.ndarray, grid: BlockGrid, threads: int = 1) -> np.ndarray:
    """MAD noise estimate ``median(|HH|) / 0.6745`` per block; (rows, cols) float32."""
    return block_medians(np.abs(hh), grid, threads) / MAD_TO_SIGMA


def clipped_fraction(luma_plane: np.ndarray, grid: BlockGrid) -> np.ndarray:
    """Fraction of clipped pixels (luma <= 2 or >= 253) per block of an HH-resolution ``grid``.

    Args:
        luma_plane: (H, W) luma at full resolution.
        grid: blocks on the (ceil(H/2), ceil(W/2)) HH grid.

    Returns:
        (rows, cols) float32 in [0, 1].
    """
    clipped = ((luma_plane <= CLIP_LOW) | (luma_plane >= CLIP_HIGH)).view(np.uint8)
    h, w = clipped.shape
    clipped = np.pad(clipped, ((0, h % 2), (0, w % 2)), "edge")
    # Clipped pixels per 2x2 pair (0..4), then per block from a summed-area table of those
    # small integers (exact in float64), so count / (4 size^2) is the old mean of quarters bit
    # for bit, without float copies of the full-resolution plane.
    pairs = clipped[0::2, 0::2] + clipped[0::2, 1::2] + clipped[1::2, 0::2] + clipped[1::2, 1::2]
    table = cv2.integral(pairs, sdepth=cv2.CV_64F)
    total = _block_sums(table, grid)
    return (total / float(4 * grid.size * grid.size)).astype(np.float32)


def grid_to_pixels(
    values: np.ndarray,
    grid: BlockGrid,
    scale: int,
    shape: tuple[int, int],
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Spread per-block values back onto an (H, W) pixel grid by bilinear interpolation between
    block centres (to the nearest whole pixel).

    Args:
        values: (rows, cols) per-block values.
        grid: the blocks, in units of ``scale`` pixels (``scale=2`` for the HH grid).
        scale: pixels per grid sample.
        shape: (H, W) of the output.
        origin: ``(y, x)`` pixel where the grid's first block starts.

    Returns:
        (H, W) float32; pixels beyond the outermost block centres take the nearest block's value.
    """
    h, w = shape
    step = scale * grid.stride  # pixels between neighbouring block centres
    rows, cols = values.shape
    # cv2.resize by ``step`` puts source sample r at output pixel step * r + step / 2 - 0.5;
    # the block centre is at origin + scale * size / 2 + step * r, hence an integer shift.
    up = cv2.resize(
        values.astype(np.float32), (cols * step, rows * step), interpolation=cv2.INTER_LINEAR
    )
    shift_y = int(round(origin[0] + scale * grid.size / 2.0 - step / 2.0))
    shift_x = int(round(origin[1] + scale * grid.size / 2.0 - step / 2.0))
    # Place ``up`` at (shift_y, shift_x) in the output; crop what overhangs, replicate edges.
    up = up[max(0, -shift_y) : max(0, -shift_y) + h, max(0, -shift_x) : max(0, -shift_x) + w]
    top, left = max(0, shift_y), max(0, shift_x)
    bottom, right = max(0, h - top - up.shape[0]), max(0, w - left - up.shape[1])
    out = np.pad(up, ((top, bottom), (left, right)), mode="edge")
    return np.ascontiguousarray(out[:h, :w])


def extent_weighted_score(block_heat: np.ndarray, threshold: float, full_extent: float) -> float:
    """Image-level score from per-block heat: the mean heat of the blocks at or above
    ``threshold``, scaled down while they cover less than ``full_extent`` of the blocks.

    A few outlier blocks (an edge, a patch of texture) thus give a low score, a coherent
    region of strong deviation a high one. Returns a float in [0, 1].
    """
    values = np.asarray(block_heat, np.float32).ravel()
    flagged = values >= threshold
    if values.size == 0 or not flagged.any():
        return 0.0
    strength = float(values[flagged].mean())
    return float(np.clip(strength * min(1.0, float(flagged.mean()) / full_extent), 0.0, 1.0))
