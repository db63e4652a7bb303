"""JPEG ghosts (Farid 2009): recompression error as a function of quality, per image region.

A region once saved at quality ``q1`` and later, inside a whole image, at ``q2 > q1`` changes
little when compressed again at ``q1``: its quantization already sits on the ``q1`` lattice. Its
recompression error therefore has a local minimum (a *ghost*) at ``q1``, which regions saved
only at ``q2`` do not have. The ghost survives only when the region's 8x8 grid matches the grid
of the recompression, so the search can shift the grid over the 64 phases.

Errors are kept per 8x8 block of the recompression grid (never per pixel for all qualities) so
memory stays bounded on large photos.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from forgectl.analysis.jpeg import luma
from forgectl.intake import encode_jpeg

BLOCK = 8

#: Recompression qualities scanned by default (Farid scans a range below the file's quality).
DEFAULT_QUALITIES: tuple[int, ...] = tuple(range(50, 100, 5))

#: Pillow's ``subsampling`` code for each chroma layout of the input file.
PIL_SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}

#: Rows of pixels differenced at once (bounds the float32 temporaries on large photos).
_ROW_BAND = 512


def recompression_error(
    rgb: np.ndarray,
    quality: int,
    subsampling: int = 2,
    phase: tuple[int, int] = (0, 0),
    channels: str = "luma",
) -> np.ndarray:
    """Mean squared recompression error of every 8x8 block.

    Args:
        rgb: (H, W, 3) uint8.
        quality: JPEG quality of the recompression.
        subsampling: Pillow chroma subsampling code (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0).
        phase: ``(dy, dx)`` in 0..7: the image is cropped by that much first, so the
            recompression grid starts at pixel ``(dy, dx)`` of the input.
        channels: ``"luma"`` (error of the JPEG luma Y) or ``"rgb"`` (mean over R, G, B, as in
            the paper). Subsampled chroma lives on a 16-pixel grid that an 8-pixel phase search
            cannot align, so chroma error can hide a ghost; luma keeps only the 8x8 grid.

    Returns:
        (BH, BW) float32 with ``BH = (H - dy) // 8``, ``BW = (W - dx) // 8``; block ``(i, j)``
        covers input pixels ``[dy + 8i : dy + 8i + 8, dx + 8j : dx + 8j + 8]``.
    """
    return error_stack(rgb, (quality,), subsampling, phase, channels)[0]


def error_stack(
    rgb: np.ndarray,
    qualities: tuple[int, ...] = DEFAULT_QUALITIES,
    subsampling: int = 2,
    phase: tuple[int, int] = (0, 0),
    channels: str = "luma",
    threads: int = 1,
) -> np.ndarray:
    """(Q, BH, BW) float32 block recompression errors, one plane per quality (see
    :func:`recompression_error`).

    The input's luma is computed once for all qualities, and the qualities run on ``threads``
    threads (Pillow's encoder, OpenCV's decoder and numpy release the GIL): the encode and
    decode of each quality dominate, and they are independent.
    """
    if channels not in ("luma", "rgb"):
        raise ValueError(f"channels must be 'luma' or 'rgb', got {channels!r}")
    dy, dx = phase
    src = np.ascontiguousarray(rgb[dy:, dx:])
    bh, bw = src.shape[0] // BLOCK, src.shape[1] // BLOCK
    if bh == 0 or bw == 0:
        return np.zeros((len(qualities), bh, bw), np.float32)
    band = _ROW_BAND - _ROW_BAND % BLOCK
    bands = [(y0, min(y0 + band, bh * BLOCK)) for y0 in range(0, bh * BLOCK, band)]
    # Same bands and arithmetic as one quality at a time, so the numbers do not change.
    source_luma = (
        [luma(src[y0:y1, : bw * BLOCK]) for y0, y1 in bands] if channels == "luma" else []
    )

    def one(quality: int) -> np.ndarray:
        data = np.frombuffer(encode_jpeg(src, quality, subsampling=subsampling), np.uint8)
        # Decoded straight to RGB: the same pixels as BGR reversed, without the strided copy.
        resaved = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)
        del data
        out = np.zeros((bh, bw), np.float32)
        for i, (y0, y1) in enumerate(bands):
            after = resaved[y0:y1, : bw * BLOCK]
            if channels == "luma":
                sq = np.square(source_luma[i] - luma(after))
            else:
                a = src[y0:y1, : bw * BLOCK].astype(np.float32) - after
                sq = np.einsum("hwc,hwc->hw", a, a) / 3.0
            out[y0 // BLOCK : y1 // BLOCK] = sq.reshape(-1, BLOCK, bw, BLOCK).mean(axis=(1, 3))
        return out

    planes = _map(one, qualities, threads)
    return np.stack(planes)


def _map(fn: Callable[[int], np.ndarray], items: tuple[int, ...], threads: int) -> list:
    """``[fn(x) for x in items]`` on up to ``threads`` threads, results in order."""
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def window_means(errors: np.ndarray, window: int) -> np.ndarray:
    """Average block errors over ``window`` x ``window`` blocks, one block apart.

    Args:
        errors: (Q, BH, BW) block errors.
        window: window side in blocks (2 = Farid's 16 x 16 pixels).

    Returns:
        (Q, BH - window + 1, BW - window + 1) float32 (at least 1 x 1).
    """
    q, bh, bw = errors.shape
    k = max(1, min(window, bh, bw))
    table = np.zeros((q, bh + 1, bw + 1), np.float64)
    np.cumsum(np.cumsum(errors, axis=1, dtype=np.float64), axis=2, out=table[:, 1:, 1:])
    total = table[:, k:, k:] - table[:, :-k, k:] - table[:, k:, :-k] + table[:, :-k, :-k]
    return (total / (k * k)).astype(np.float32)


def informative_windows(windows: np.ndarray, floor: float, factor: float) -> np.ndarray:
    """(R, C) bool: windows whose largest error over the scanned qualities exceeds
    ``factor * floor``.

    Flat windows change little at any quality, so their error curve is all floor and says
    nothing about their history; they are kept out of the reference and of the map. The largest
    error (not the one at the lowest quality) is used because a ghost region recompresses well
    near its own old quality, which may be the lowest one scanned.
    """
    return windows.max(axis=0) >= factor * floor


def normalized_log_error(
    windows: np.ndarray, floor: float = 0.25, reference: np.ndarray | None = None
) -> np.ndarray:
    """Per-quality normalisation: ``log(error + floor)`` minus its median over the image.

    Farid normalises each quality's difference map to the image's range; the median of the log
    does the same job robustly, so the image's own history (shared by most windows) cancels
    and a window stands out only where it behaves unlike the rest of the image. ``floor``
    (squared grey levels) keeps near-flat windows from producing large log swings.

    Args:
        windows: (Q, R, C) window errors.
        floor: added to the errors before the log.
        reference: optional (R, C) bool, the windows the median is taken over (default all).

    Returns:
        (Q, R, C) float32.
    """
    logs = np.log(windows.astype(np.float32) + np.float32(floor))
    ref = logs.reshape(len(logs), -1)
    if reference is not None and reference.any():
        ref = ref[:, reference.ravel()]
    return logs - np.median(ref, axis=1)[:, None, None]


def ghost_prominence(
    normalized: np.ndarray, qualities: tuple[int, ...], below: int
) -> tuple[np.ndarray, np.ndarray]:
    """How deep a local minimum each window's normalised error curve has, and where.

    Only qualities strictly inside the scanned range and below ``below`` (the image's last
    quality) can hold a ghost: a ghost needs the curve to rise on both sides of it, and a
    region saved at a higher quality than the final one leaves none.

    Args:
        normalized: (Q, R, C) from :func:`normalized_log_error`, qualities ascending.
        qualities: the Q scanned qualities.
        below: only qualities ``< below`` are candidates.

    Returns:
        ``(prominence, ghost_quality)``: (R, C) float32 prominence in log units (0 where no
        candidate exists or the curve has no dip), and (R, C) int32 quality of the deepest dip.
    """
    qs = np.asarray(qualities)
    if np.any(np.diff(qs) <= 0):
        raise ValueError("qualities must be strictly ascending")
    cands = [i for i in range(1, len(qs) - 1) if qs[i] < below]
    # The right-hand rise must come before the final quality, where every window dips.
    last = max(cands) + 1 if cands else 0
    best = np.zeros(normalized.shape[1:], np.float32)
    where = np.full(normalized.shape[1:], int(qs[0]), np.int32)
    for i in cands:
        left = normalized[:i].max(axis=0)
        right = normalized[i + 1 : last + 1].max(axis=0)
        dip = np.minimum(left, right) - normalized[i]
        better = dip > best
        best = np.where(better, dip, best)
        where = np.where(better, int(qs[i]), where)
    return best, where


def dominant_quality(errors: np.ndarray, qualities: tuple[int, ...]) -> int:
    """The quality whose recompression changes the image least (median over blocks).

    For an image last saved at ``q`` the median error drops to (near) zero at ``q``; a never
    compressed image gives a curve falling to the highest scanned quality.
    """
    curve = np.median(errors.reshape(len(errors), -1), axis=1)
    return int(qualities[int(np.argmin(curve))])


@dataclass(frozen=True)
class PhaseMaps:
    """Ghost evidence on one recompression grid phase, per window of the block grid.

    Attributes:
        dip: (R, C) float32 depth of the deepest extra minimum (log units): the window
            recompresses unusually well at ``dip_quality`` (a ghost). Kept on flat windows
            too: a flat curve has no dip, and a smoothed old save often is near-flat.
        dip_quality: (R, C) int32 quality of that minimum.
        bump: (R, C) float32 height of the highest extra maximum: the window lacks a minimum
            the rest of the image has at ``bump_quality`` (it does not share the image's ghost).
            Zero on flat windows, which cannot show any minimum.
        bump_quality: (R, C) int32 quality of that maximum.
        informative: (R, C) bool, windows with enough texture to carry evidence.
        image_ghost: quality at which the reference windows' median curve itself dips (the
            image's own earlier save), or None.
    """

    dip: np.ndarray
    dip_quality: np.ndarray
    bump: np.ndarray
    bump_quality: np.ndarray
    informative: np.ndarray
    image_ghost: int | None


def phase_maps(
    errors: np.ndarray,
    qualities: tuple[int, ...],
    below: int,
    window: int = 2,
    floor: float = 0.25,
    informative_factor: float = 4.0,
    image_ghost_depth: float = 0.1,
) -> PhaseMaps:
    """Ghost and missing-ghost evidence from one phase's block errors.

    Args:
        errors: (Q, BH, BW) from :func:`error_stack`, qualities ascending.
        qualities: the Q qualities.
        below: the image's last quality; only qualities below it can hold a ghost.
        window: window side in blocks.
        floor: see :func:`normalized_log_error`.
        informative_factor: see :func:`informative_windows`.
        image_ghost_depth: minimum dip (log units) of the median curve to report an image ghost.

    Returns:
        :class:`PhaseMaps` on the (BH - window + 1, BW - window + 1) window grid.
    """
    windows = window_means(errors, window)
    informative = informative_windows(windows, floor, factor=informative_factor)
    normalized = normalized_log_error(windows, floor, reference=informative)
    dip, dip_q = ghost_prominence(normalized, qualities, below)
    bump, bump_q = ghost_prominence(-normalized, qualities, below)
    ref = windows[:, informative] if informative.any() else windows.reshape(len(windows), -1)
    curve = np.median(np.log(ref + np.float32(floor)), axis=1)[:, None, None]
    depth, where = ghost_prominence(curve, qualities, below)
    image_ghost = int(where[0, 0]) if float(depth[0, 0]) >= image_ghost_depth else None
    zero = np.float32(0.0)
    return PhaseMaps(
        dip=dip,
        dip_quality=dip_q,
        bump=np.where(informative, bump, zero),
        bump_quality=bump_q,
        informative=informative,
        image_ghost=image_ghost,
    )
