"""Non-aligned JPEG grid analysis: content whose 8x8 compression grid is shifted.

Content cut from a JPEG and pasted at a position that is not a multiple of 8 keeps its old
compression grid, now offset from the grid of the image around it. On the grid a JPEG used, block
DCT coefficients cluster on multiples of the quantization steps; on any other origin they do not
(the integer-periodicity idea behind Bianchi & Piva's NA-DJPG detector). For every local window
we measure that periodicity for all 64 possible grid origins, express each as a z-score against
the other origins, and flag windows where an origin other than the image's dominant one (and
other than the file's own (0, 0) grid) stands out. Grids present all over the image (the host's
history) are discounted, so only a *local* grid anomaly makes a region hot.

Works on pixels (PNG or JPEG input alike): a JPEG history is what it looks for. Blind to pasted
content that was never JPEG-compressed or that was pasted on the image's own grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import cv2
import numpy as np

from forgectl.analysis.jpeg import BLOCK, blocks_to_pixels, dct_matrix, luma
from forgectl.backends.base import Backend, MethodSpec, Result, compute_threads
from forgectl.backends.options import Option, require
from forgectl.intake import ForensicImage

#: Median z over the image above which a grid counts as the image's own (visible everywhere).
_VISIBLE_GRID_Z = 2.0

#: DCT positions used: DC and the three lowest AC keep most of the periodicity after a resave.
POSITIONS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))

#: Bytes of one (rows, columns, 64) float32 work array per tile: the cosines, window sums and
#: running maximum of a tile stay in the CPU caches across the 15 steps and 4 frequencies,
#: which is most of the speed of :func:`grid_z_scores` on a 12 MP photo.
_TILE_BYTES = 1 << 20


class GridBackend(Backend):
    """Local JPEG grid origin map: windows whose grid differs from the image's are hot."""

    spec = MethodSpec(
        name="grid",
        summary="JPEG grid alignment: map content whose 8x8 compression grid is shifted",
        kind="classical",
        needs_jpeg=False,
        uses_jpeg=False,
        paper=(
            "T. Bianchi, A. Piva, 'Detection of non-aligned double JPEG compression based on "
            "integer periodicity maps', IEEE TIFS 2012; W. Li, Y. Yuan, N. Yu, 'Passive "
            "detection of doctored JPEG image via block artifact grid extraction', Signal "
            "Processing 2009"
        ),
    )

    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("window", 8, "side, in 8x8 blocks, of the local window (8 -> 64 pixels)",
               minimum=1),
        Option("min_step", 2, "smallest quantization step searched (DC and low AC)", minimum=2),
        Option("max_step", 16, "largest step searched (about IJG quality 50 for DC)", minimum=2),
        Option("z_low", 4.0, "local z-score mapped to heat 0 (the noise maximum over 62 origins "
               "is ~5)"),
        Option("z_high", 8.0, "local z-score mapped to heat 1 (above z_low)"),
        Option("ubiquitous_z", 2.0, "origins whose median z over the image exceeds this are the "
               "host's"),
    )

    def check_options(self) -> None:
        opt = self.options
        require(opt["min_step"] <= opt["max_step"], "grid needs 2 <= min_step <= max_step")
        require(opt["z_high"] > opt["z_low"], "grid option z_high must exceed z_low")

    def analyze(self, image: ForensicImage) -> Result:
        h, w = image.height, image.width
        window = self.options["window"]
        if min(h, w) < 8 * (window + 1):
            return Result.from_heatmap(
                np.zeros((h, w), np.float32),
                self.threshold,
                score=0.0,
                note=f"image smaller than {8 * (window + 1)} pixels: grid says nothing here",
                facts={"global_grid_offset": None, "global_grid_strength": 0.0},
            )
        steps = range(self.options["min_step"], self.options["max_step"] + 1)
        threads = compute_threads()
        z = grid_z_scores(luma(image.rgb), POSITIONS, steps, window, threads)  # (CH, CW, 64)

        # The image's dominant grid and any origin present over most of it are the host's
        # history, not a local anomaly: discount each origin by its typical z over the image.
        typical = _origin_medians(z, threads)
        dominant = int(np.argmax(typical))
        excluded = typical > self.options["ubiquitous_z"]
        excluded[[0, dominant]] = True
        if excluded.all():  # every origin is image-wide: nothing can stand out locally
            anomaly = np.zeros(z.shape[:2], np.float32)
            origin = np.zeros(z.shape[:2], np.int64)
        else:
            # z minus each origin's typical level, excluded origins at -inf; in place (z is
            # not needed afterwards) to spare another (CH, CW, 64) array.
            z += np.where(excluded, -np.inf, -np.maximum(typical, 0.0)).astype(np.float32)
            anomaly = z.max(axis=2)
            origin = z.argmax(axis=2)
        del z  # 48 MB on 12 MP: freed before the full-size maps are made

        z_low, z_high = self.options["z_low"], self.options["z_high"]
        cells = np.clip((anomaly - z_low) / (z_high - z_low), 0.0, 1.0).astype(np.float32)
        heat = blocks_to_pixels(cells, h, w)
        flagged = cells >= self.threshold
        offsets = np.bincount(origin[flagged], minlength=64) if flagged.any() else None
        # The pixel map repeats each cell over its pixels: its statistics come from the cells
        # weighted by their pixel counts (exactly; no pass over 12 M pixels).
        pixels = _cell_pixels(cells.shape, h, w)
        fraction = float(pixels[flagged].sum() / (h * w))
        minority = float(np.clip((1.0 - fraction) / 0.5, 0.0, 1.0))
        # 98th percentile: a region must cover about 2% of the image to carry the score.
        score = _pixel_percentile(cells, pixels, heat, 98) * minority
        facts = {
            "global_grid_offset": [dominant // 8, dominant % 8],
            "global_grid_strength": round(float(typical[dominant]), 2),
            "image_grid_aligned": dominant == 0,
            "local_grid_offset": (
                [int(np.argmax(offsets)) // 8, int(np.argmax(offsets)) % 8]
                if offsets is not None
                else None
            ),
            "max_local_z": round(float(anomaly.max()), 2),
            "origins_discounted": int(excluded.sum()),
        }
        return Result.from_heatmap(
            heat,
            self.threshold,
            score=score,
            facts=facts,
            maps={"local_grid_z": blocks_to_pixels(np.clip(anomaly / 20.0, 0, 1), h, w)},
            note=(
                f"dominant JPEG grid at offset (row {dominant // 8}, column {dominant % 8})"
                f", strength z={typical[dominant]:.1f}"
                if typical[dominant] >= _VISIBLE_GRID_Z
                else "no image-wide JPEG grid visible; only pasted JPEG content can show up"
            ),
        )

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note
        f = result.facts
        if f.get("global_grid_offset") is None:
            return result.note
        dy, dx = f["global_grid_offset"]
        strength = f["global_grid_strength"]
        where = (
            "No image-wide JPEG grid is visible"
            if strength < _VISIBLE_GRID_Z
            else f"The image's JPEG grid starts at row {dy}, column {dx}"
        )
        pct = 100 * result.tampered_fraction
        if pct < 0.5:
            return f"{where}; no region carries a shifted grid."
        ly, lx = f.get("local_grid_offset") or (0, 0)
        return (
            f"{where}; {pct:.1f}% of the image carries a grid at offset ({ly}, {lx}), as content "
            "pasted from another JPEG off the 8-pixel grid would."
        )


def _cell_pixels(shape: tuple[int, int], height: int, width: int) -> np.ndarray:
    """(CH, CW) int64: pixels each cell covers in :func:`blocks_to_pixels` (8 x 8, the last
    row and column of cells also the pixels beyond them)."""
    rows = np.bincount(np.minimum(np.arange(height) // BLOCK, shape[0] - 1), minlength=shape[0])
    cols = np.bincount(np.minimum(np.arange(width) // BLOCK, shape[1] - 1), minlength=shape[1])
    return np.outer(rows, cols)


def _pixel_percentile(
    cells: np.ndarray, pixels: np.ndarray, heat: np.ndarray, q: float
) -> float:
    """``np.percentile(heat, q)`` where ``heat`` repeats each cell over ``pixels`` of them.

    numpy interpolates between the order statistics at ``floor((n - 1) q / 100)`` and the
    next; when the neighbourhood of that rank holds one value (nearly always: every value
    comes 64 times or more) that value is the answer, read off the sorted cells. Otherwise
    numpy does it on the full map.
    """
    n = heat.size
    rank = int(np.floor((n - 1) * (q / 100.0)))
    order = np.argsort(cells, axis=None, kind="stable")
    values = cells.ravel()[order]
    ends = np.cumsum(pixels.ravel()[order])  # values[i] fills ranks ends[i-1] .. ends[i] - 1
    around = np.clip(np.arange(rank - 1, rank + 3), 0, n - 1)
    found = values[np.searchsorted(ends, around, side="right")]
    if np.all(found == found[0]):
        return float(found[0])
    return float(np.percentile(heat, q))


def _robust_z(evidence: np.ndarray) -> np.ndarray:
    """z-score of each grid origin against the 64 origins of the same window (median / MAD)."""
    centre = _median_last(evidence)
    spread = 1.4826 * _median_last(np.abs(evidence - centre))
    return (evidence - centre) / (spread + 1e-3)


def _median_last(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=-1, keepdims=True)`` (same numbers): sorting 64 values per cell
    is about ten times faster than numpy's partition-based median along a short axis."""
    ordered = np.sort(values, axis=-1)
    n = values.shape[-1]
    upper = ordered[..., n // 2 : n // 2 + 1]
    if n % 2:
        return upper
    return (ordered[..., n // 2 - 1 : n // 2] + upper) / 2


def _origin_medians(z: np.ndarray, threads: int = 1) -> np.ndarray:
    """(64,) median of each origin's z over all cells: ``np.median(z.reshape(-1, 64),
    axis=0)``, by partitions (numpy's median adds NaN checks and copies that cost as much again
    on 12 MP; z holds no NaN), the origins split between ``threads`` threads."""
    values = z.reshape(-1, z.shape[-1])
    n = len(values)
    kth = sorted({(n - 1) // 2, n // 2})

    def medians(origins: np.ndarray) -> np.ndarray:
        middle = np.partition(values[:, origins], kth, axis=0)
        if n % 2:
            return middle[n // 2]
        return (middle[n // 2 - 1] + middle[n // 2]) / 2

    groups = np.array_split(np.arange(values.shape[1]), max(1, threads))
    return np.concatenate(_map(medians, groups, threads))


def _map(fn: Callable, items: Iterable, threads: int) -> list:
    """``[fn(x) for x in items]``, on ``threads`` threads (numpy and OpenCV release the GIL)."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def _reflect(index: np.ndarray, size: int) -> np.ndarray:
    """OpenCV's BORDER_REFLECT (``cba|abcd|dcb``) for indices at most one period outside."""
    index = np.where(index < 0, -index - 1, index)
    return np.where(index >= size, 2 * size - 1 - index, index)


def _window_sums(x: np.ndarray, k: int, axis: int) -> np.ndarray:
    """``out[i] = x[i] + ... + x[i + k - 1]`` along ``axis`` (length ``n - k + 1``), in a new
    array.

    Sums of 2, 4, 8, ... neighbours are built by doubling and combined along the binary digits
    of ``k``: log2(k) passes over the array instead of OpenCV's box filter, which has no fast
    path for 64 channels.
    """

    lead = (slice(None),) * axis  # the axes before ``axis``

    def part(a: np.ndarray, start: int, stop: int) -> np.ndarray:
        return a[(*lead, slice(start, stop))]

    m = x.shape[axis] - k + 1
    total: np.ndarray | None = None
    offset, span, sums = 0, 1, x  # sums[i] = x[i] + ... + x[i + span - 1]
    while True:
        if k & 1:
            term = part(sums, offset, offset + m)
            total = term if total is None else total + term
            offset += span
        k >>= 1
        if not k:
            break
        n = sums.shape[axis]
        sums = part(sums, 0, n - span) + part(sums, span, n)
        span *= 2
    assert total is not None
    # Never a view of ``x``: callers update the sums in place.
    return total.copy() if np.shares_memory(total, x) else total


def grid_z_scores(
    plane: np.ndarray,
    positions: Sequence[tuple[int, int]],
    steps: Sequence[int],
    window: int,
    threads: int = 1,
) -> np.ndarray:
    """``_robust_z(grid_periodicity(plane, positions, steps, window))``, computed fast.

    :func:`forgectl.analysis.jpeg.grid_periodicity` is the readable reference; this gives the
    same numbers up to float32 rounding (tests pin it) with about half its CPU time on a
    12 MP photo (2 s instead of 4.7 s, most of that in page faults of its full-size
    temporaries), and on ``threads`` threads:

    - work goes tile by tile (squares of cells, plus the window's halo) so each tile's arrays
      stay in cache across all steps and frequencies, and tiles run on ``threads`` threads;
    - the window mean is a sum by doubling (see :func:`_window_sums`), scaled once at the end;
    - ``cos(2 pi c / s)`` for a step ``s`` whose double ``2 s`` is also searched comes from
      ``cos(2 pi c / 2s)`` by ``cos 2x = 2 cos^2 x - 1`` (8 of the 15 default steps need
      ``np.cos``), and the ``-1`` is dropped where it cancels against the mean over the 64
      origins that is subtracted right after;
    - the two medians of the robust z sort each cell's 64 values once (:func:`_median_last`).

    Returns:
        (CH, CW, 64) float32 robust z-scores, CH = (H - 7) // 8, CW = (W - 7) // 8.
    """
    h, w = plane.shape
    ch, cw = (h - 7) // BLOCK, (w - 7) // BLOCK
    if ch < 1 or cw < 1:
        raise ValueError(f"plane must be at least 15 x 15, got {plane.shape}")
    before = window // 2  # cv2.blur's anchor: the window covers [i - k // 2, i + k - 1 - k // 2]
    after = window - 1 - before
    mat = dct_matrix().astype(np.float32)
    scale = {s: np.float32(2.0 * np.pi / s) for s in steps}
    # Chains s, s/2, s/4, ... (largest first): each cosine after the first comes from the one
    # before it, so only one is held at a time; the max over steps is order-free.
    chains: list[list[int]] = []
    for s in sorted(scale, reverse=True):
        if not any(s in chain for chain in chains):
            chain = [s]
            while chain[-1] % 2 == 0 and chain[-1] // 2 in scale:
                chain.append(chain[-1] // 2)
            chains.append(chain)
    # Square tiles whose (rows, columns, 64) float32 arrays, halo included, take about
    # _TILE_BYTES: a square has the least halo (recomputed rows and columns) for its size.
    side = max(4, int(np.sqrt(_TILE_BYTES / (64 * 4))) - window + 1)
    # A small image is one tile: there OpenCV's box filter with its own reflected borders is
    # as fast as the sums by doubling, and padding the borders by hand would cost up to 40 %.
    whole = side >= ch and side >= cw
    if whole:
        side = max(ch, cw)
    z = np.empty((ch, cw, 64), np.float32)

    def tile(origin: tuple[int, int]) -> None:
        a0, b0 = origin
        a1, b1 = min(ch, a0 + side), min(cw, b0 + side)
        if whole:
            rows, cols = np.arange(ch), np.arange(cw)
        else:
            rows = _reflect(np.arange(a0 - before, a1 + after), ch)
            cols = _reflect(np.arange(b0 - before, b1 + after), cw)
        r0, r1 = int(rows.min()), int(rows.max()) + 1
        c0, c1 = int(cols.min()), int(cols.max()) + 1
        strip = np.subtract(
            plane[BLOCK * r0 : BLOCK * r1 + BLOCK - 1, BLOCK * c0 : BLOCK * c1 + BLOCK - 1],
            np.float32(128.0),
            dtype=np.float32,
        )
        total = np.zeros((a1 - a0, b1 - b0, 64), np.float32)
        for u, v in positions:
            # The 8x8 kernel of window_dct (not two 8-tap passes): the DC coefficient reaches
            # ~1000, where float32 rounding moves cos(2 pi c / s) by ~1e-3 and the z-scores by
            # ~0.03; the same kernel keeps them within ~1e-4 of the reference.
            kernel = np.outer(mat[u], mat[v])
            coef = cv2.filter2D(strip, cv2.CV_32F, kernel, anchor=(0, 0))
            # (rows, cols, 64): channel 8 r + c holds the coefficients of the grid with origin
            # (r, c), as grid_periodicity stacks them; then the window's reflected borders.
            n_r, n_c = r1 - r0, c1 - c0
            grids = coef[: BLOCK * n_r, : BLOCK * n_c].reshape(n_r, BLOCK, n_c, BLOCK)
            grids = grids.transpose(0, 2, 1, 3).reshape(n_r, n_c, 64)
            if not whole:
                grids = grids[(rows - r0)[:, None], (cols - c0)[None, :]]
            best: np.ndarray | None = None
            for chain in chains:
                for i in range(len(chain)):
                    if i == 0:
                        periodic = np.multiply(grids, scale[chain[0]])
                        np.cos(periodic, out=periodic)
                    else:  # cos 2x = 2 cos^2 x - 1, from the previous (doubled) step
                        periodic = np.multiply(periodic, periodic)
                        periodic += periodic
                        if i + 1 < len(chain):  # the next step needs the true cosine
                            periodic -= 1
                        # else the -1 cancels against the mean over origins below
                    if whole:  # window means, as grid_periodicity
                        sums = cv2.blur(periodic, (window, window),
                                        borderType=cv2.BORDER_REFLECT)
                    else:  # window sums; scaled to means at the end
                        sums = _window_sums(_window_sums(periodic, window, 1), window, 0)
                    mean = cv2.reduce(sums.reshape(-1, 64), 1, cv2.REDUCE_SUM)
                    mean *= np.float32(1.0 / 64)
                    sums -= mean.reshape(sums.shape[0], sums.shape[1], 1)
                    if best is None:
                        best = sums
                    else:
                        np.maximum(best, sums, out=best)
            assert best is not None
            total += best
        if not whole:
            total *= np.float32(1.0 / (window * window))
        z[a0:a1, b0:b1] = _robust_z(total)

    origins = [(a0, b0) for a0 in range(0, ch, side) for b0 in range(0, cw, side)]
    _map(tile, origins, threads)
    return z
