"""A JPEG history read from pixels: was this PNG/TIFF/BMP once a JPEG, and with which table?

A JPEG decoded and saved losslessly (a PNG re-save, a TIFF export, a crop of either) keeps
its quantization in the pixels: on the file's 8x8 grid, every DCT coefficient of the luma is
an integer multiple of its step, up to the small error of decoding (integer IDCT, colour
conversion and rounding to 8 bits, about 0.3-0.5 in coefficient units). Following Fan & de
Queiroz (2003, "Identification of bitmap compression history: JPEG detection and quantizer
estimation"), this module finds the grid origin whose blocks sit on a lattice, then per
frequency the step that explains the coefficients as "lattice + small error" best, checks
that the lattice is there on that grid and *not* on the grid 4 pixels away (where no
quantizer reached: natural or posterized content looks the same on both), and rebuilds the Y
coefficients a JPEG file would have held. JPEG-domain methods (``dq``, ``ghost``, omni's DCT
stream) then run on the PNG as on the JPEG it was; on an offset grid (a crop after the save)
they run on the image padded back onto that grid (``ForensicImage.jpeg_grid_view``).

Quality 100 (all steps 1) cannot be told from no compression.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from forgectl.analysis.jpeg import (
    BLOCK,
    block_dct,
    clipped_blocks,
    dct_matrix,
    luma,
    zigzag_order,
)
from forgectl.intake import ForensicImage, JpegData, estimate_ijg_quality, ijg_table

#: Largest step searched (IJG quality 1 reaches 255; steps above 120 are rare and their
#: coefficients almost all zero, so they are filled from the fitted IJG table instead).
MAX_STEP = 120
#: Coefficients off zero a step needs before it can be estimated at a frequency.
MIN_SUPPORT = 40
#: Lattice strength (mean of cos(2 pi d / q) over coefficients off zero) that counts as
#: quantized: a step q with decoding error sigma gives exp(-2 pi^2 sigma^2 / q^2), 0.55 for
#: q = 2 at sigma = 0.35, 0.76 for q = 3; unquantized coefficients give about 0.
MIN_STRENGTH = 0.5
#: Of the first 16 zigzag positions (DC and 15 AC), how many must show a step >= 2.
MIN_QUANTIZED = 4
#: Summed lattice strength over those positions on the grid searched minus the same steps on
#: the grid 4 pixels away in both directions, where no quantizer reached.
MIN_EVIDENCE = 3.0
#: Median off-lattice share (:func:`off_lattice_share`) above which the last save was finer
#: than the lattice (steps of 1 over an earlier save's lattice): measured 0.16-0.38 on CASIA
#: v1 files saved at quality ~100 over an earlier JPEG; on single IJG saves of corpus photos
#: at q60/80/92, at most 0.12 for 125 of 126 (a dark photo: 0.30), and 0.08-0.15 after an
#: IJG q100 re-save.
FINER_LAST_SAVE = 0.2
#: Blocks per grid origin and the largest step of the quick search for a shifted grid.
OFFSET_SAMPLE_BLOCKS = 300
OFFSET_MAX_STEP = 24
OFFSET_POSITIONS = 10
#: Robust z-score (median / MAD over the 64 origins) the best origin needs to be checked.
OFFSET_MIN_Z = 10.0
#: Origins within this share of the best score's lead over the median are checked in full.
OFFSET_NEAR_BEST = 0.8
#: Blocks sampled for the estimate (all of them on small images).
SAMPLE_BLOCKS = 6000


@dataclass(frozen=True)
class StepEstimate:
    """Per-frequency result of :func:`estimate_steps`.

    Attributes:
        steps: (8, 8) int32 best step per position (1 where none could be tested).
        strength: (8, 8) float32 lattice strength of that step (see :data:`MIN_STRENGTH`).
        support: (8, 8) int32 coefficients off zero under that step.
    """

    steps: np.ndarray
    strength: np.ndarray
    support: np.ndarray

    def determined(self) -> np.ndarray:
        """(8, 8) bool: a step >= 2 with enough support and a clear lattice."""
        return (self.support >= MIN_SUPPORT) & (self.strength >= MIN_STRENGTH) & (self.steps >= 2)


def lattice_strength(values: np.ndarray, step: int) -> tuple[float, int]:
    """``(mean cos(2 pi d / step), count)`` over the coefficients ``d`` off zero under ``step``
    (``|d| >= step / 2``): near 1 when they sit on multiples of ``step``."""
    off_zero = values[np.abs(values) >= step / 2.0]
    if off_zero.size == 0:
        return 0.0, 0
    return float(np.cos(off_zero * (2.0 * np.pi / step)).mean()), int(off_zero.size)


def _best_step(values: np.ndarray) -> tuple[int, float, int]:
    """``(step, strength, support)`` for one frequency's coefficients ``values`` (N,).

    The step with the strongest lattice wins: its divisors are weaker (the same error is a
    larger share of a smaller step), its multiples miss the odd multiples, and a neighbour (13
    for 12) drifts off the lattice as the multiple grows. Where an earlier save's step shows
    through a finer last one (a re-save at a higher quality), the earlier, coarser lattice
    can be the stronger: the pixels say what they hold, not what the last file stored.
    """
    magnitude = np.sort(np.abs(values))
    if magnitude.size < MIN_SUPPORT:
        return 1, 0.0, int(magnitude.size)
    # A step q is testable only if MIN_SUPPORT coefficients sit off zero under it (|d| >= q/2).
    cap = int(min(MAX_STEP, 2.0 * magnitude[-MIN_SUPPORT]))
    best = (1, 0.0, 0)
    for q in range(2, cap + 1):
        strength, support = lattice_strength(values, q)
        if support >= MIN_SUPPORT and strength > best[1]:
            best = (q, strength, support)
    return best


def estimate_steps(coefficients: np.ndarray) -> StepEstimate:
    """Quantization steps that explain block DCT coefficients as multiples plus small error.

    Args:
        coefficients: (N, 8, 8) float DCT coefficients of N blocks (natural order).
    """
    steps = np.ones((BLOCK, BLOCK), np.int32)
    strength = np.zeros((BLOCK, BLOCK), np.float32)
    support = np.zeros((BLOCK, BLOCK), np.int32)
    for u in range(BLOCK):
        for v in range(BLOCK):
            steps[u, v], strength[u, v], support[u, v] = _best_step(
                coefficients[:, u, v].astype(np.float64)
            )
    return StepEstimate(steps=steps, strength=strength, support=support)


def _sample_blocks(plane: np.ndarray, rgb: np.ndarray, offset: tuple[int, int],
                   rng: np.random.Generator, limit: int = 0) -> np.ndarray:
    """(N, 8, 8) DCT of up to ``limit`` (default SAMPLE_BLOCKS) unclipped blocks of the grid
    at ``offset``."""
    limit = limit or SAMPLE_BLOCKS
    dy, dx = offset
    bh, bw = (plane.shape[0] - dy) // BLOCK, (plane.shape[1] - dx) // BLOCK
    if bh <= 0 or bw <= 0:
        return np.zeros((0, BLOCK, BLOCK), np.float32)
    clipped = clipped_blocks(rgb[dy : dy + BLOCK * bh, dx : dx + BLOCK * bw], bh, bw)
    rows, cols = np.nonzero(~clipped)
    if rows.size > limit:
        pick = rng.choice(rows.size, limit, replace=False)
        rows, cols = rows[pick], cols[pick]
    return _dct_at(plane, dy + BLOCK * rows, dx + BLOCK * cols)


def _dct_at(plane: np.ndarray, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """(N, 8, 8) level-shifted DCT of the 8x8 blocks whose corners are ``(top, left)``."""
    if top.size == 0:
        return np.zeros((0, BLOCK, BLOCK), np.float32)
    ys = top[:, None, None] + np.arange(BLOCK)[None, :, None]
    xs = left[:, None, None] + np.arange(BLOCK)[None, None, :]
    blocks = plane[ys, xs] - 128.0  # (N, 8, 8), level-shifted as the encoder does
    mat = dct_matrix().astype(np.float32)
    return np.einsum("ui,nij,vj->nuv", mat, blocks, mat, optimize=True)


@dataclass(frozen=True)
class PixelHistory:
    """What :func:`jpeg_history_from_pixels` found.

    Attributes:
        table: (8, 8) int32 luminance table (estimated where determined, IJG-filled elsewhere),
            or None when no JPEG history was found.
        evidence: summed lattice strength of the quantized positions among the first 16
            zigzag ones, aligned grid minus the grid shifted by (4, 4).
        quantized: of those 16 positions, how many showed a step >= 2 on the aligned grid.
        determined: positions (of 64) whose step was estimated (the rest were filled).
        off_lattice: :func:`off_lattice_share` (a last save finer than the lattice when at
            least :data:`FINER_LAST_SAVE`; the table is then all ones).
        lattice: (8, 8) int32 table of the lattice itself (``table`` unless all ones).
        offset: ``(dy, dx)`` where the grid of the lattice starts (``(0, 0)``: the image's
            own grid; else the image was cropped after that save).
    """

    table: np.ndarray | None
    evidence: float
    quantized: int
    determined: int
    off_lattice: float = 0.0
    lattice: np.ndarray | None = None
    offset: tuple[int, int] = (0, 0)

    def facts(self) -> dict[str, object]:
        """JSON-ready summary for the input's record."""
        return {
            "found": self.table is not None,
            "evidence": round(self.evidence, 3),
            "quantized_low_frequencies": self.quantized,
            "estimated_steps": self.determined,
            "off_lattice_share": self.off_lattice,
            "grid_offset": list(self.offset),
        }


def jpeg_history_from_pixels(rgb: np.ndarray, seed: int = 0) -> PixelHistory:
    """Look for the quantization lattice of an earlier JPEG save in (H, W, 3) uint8 pixels.

    The grid origins (of 64) whose low frequencies sit best on a lattice are checked (the
    image's own for a lossless re-save; another after a crop), with the image's own, and the
    strongest lattice found wins: ``offset`` says where its grid starts.
    """
    if rgb.shape[0] < 4 * BLOCK or rgb.shape[1] < 4 * BLOCK:
        return PixelHistory(None, 0.0, 0, 0)
    plane = luma(rgb)
    scores = _offset_scores(plane, rgb, seed)
    median = float(np.median(scores))
    spread = float(np.median(np.abs(scores - median))) + 1e-9
    best = float(scores.max())
    # A lattice stands out among the 64 origins (robust z 19-240 on JPEGs at q60-95 cropped
    # off their grid; at most 4.2 on never-compressed photos). Content with little vertical
    # (or horizontal) detail leaves one direction of the offset unclear in this quick scan,
    # so every origin scoring near the best is checked in full, with the image's own, and
    # the strongest lattice found wins. (A texture with no vertical detail at all can still
    # hide the vertical offset from the scan: then the crop is not found.)
    candidates = [(0, 0)]
    if (best - median) / spread >= OFFSET_MIN_Z:
        near = np.argwhere(scores >= median + OFFSET_NEAR_BEST * (best - median))
        candidates += [(int(dy), int(dx)) for dy, dx in near if (dy, dx) != (0, 0)]
    found = [_history_at(plane, rgb, c, seed) for c in candidates]
    hits = [h for h in found if h.table is not None]
    return max(hits, key=lambda h: h.evidence) if hits else found[0]


def _history_at(plane: np.ndarray, rgb: np.ndarray, offset: tuple[int, int],
                seed: int) -> PixelHistory:
    """The lattice search on the grid starting at ``offset``, checked against the grid 4
    pixels away in both directions, where no quantizer reached."""
    rng = np.random.default_rng(seed)
    sample = _sample_blocks(plane, rgb, offset, rng)
    aligned = estimate_steps(sample)
    determined = aligned.determined()
    low = zigzag_order()[:16]
    quantized = sum(1 for u, v in low if determined[u, v])
    control_offset = ((offset[0] + 4) % BLOCK, (offset[1] + 4) % BLOCK)
    shifted = _sample_blocks(plane, rgb, control_offset, rng)
    evidence = 0.0
    for u, v in low:
        if determined[u, v]:
            control, _ = lattice_strength(shifted[:, u, v].astype(np.float64),
                                          int(aligned.steps[u, v]))
            evidence += float(aligned.strength[u, v]) - control
    if quantized < MIN_QUANTIZED or evidence < MIN_EVIDENCE:
        return PixelHistory(None, evidence, quantized, int(determined.sum()), offset=offset)
    off = off_lattice_share(sample, aligned, low)
    lattice = _complete_table(aligned.steps, determined, sample)
    # Off the lattice by a whole unit for a fifth of the coefficients: the lattice is an
    # earlier save's and the last one (quality ~100, steps of 1) rounded them off it. Steps
    # of 1 give dq the coefficients that file held, double-quantization pattern and all.
    # (Heavy decoding error in dark, saturated photos can look the same; dq then finds a
    # uniform double compression and scores low, and ghost keeps the lattice's quality.)
    table = np.ones((BLOCK, BLOCK), np.int32) if off >= FINER_LAST_SAVE else lattice
    return PixelHistory(table, evidence, quantized, int(determined.sum()), round(off, 3),
                        lattice, offset)


def _offset_scores(plane: np.ndarray, rgb: np.ndarray, seed: int) -> np.ndarray:
    """(8, 8) how well the blocks of each grid origin sit on some lattice: a quick look at
    the first :data:`OFFSET_POSITIONS` AC positions (high qualities leave steps of 1 on the
    first ones), steps 2..:data:`OFFSET_MAX_STEP`, on a few blocks per origin. Each step is
    weighed by the square root of its support (a z-score), so that a large step fitting a few
    coefficients by chance does not outweigh a small step fitting thousands."""
    rng = np.random.default_rng(seed)
    steps = np.arange(2, OFFSET_MAX_STEP + 1, dtype=np.float64)
    # One set of block corners on the origin grid, moved by each offset (the scan costs the
    # same on 12 MP as on 0.1 MP); blocks with a clipped pixel at the origin are left out.
    bh, bw = plane.shape[0] // BLOCK - 1, plane.shape[1] // BLOCK - 1
    corners = np.stack(np.meshgrid(np.arange(bh), np.arange(bw), indexing="ij"), -1)
    corners = corners.reshape(-1, 2) * BLOCK
    if len(corners) > 4 * OFFSET_SAMPLE_BLOCKS:
        corners = corners[rng.choice(len(corners), 4 * OFFSET_SAMPLE_BLOCKS, replace=False)]
    patches = rgb[corners[:, 0, None, None] + np.arange(2 * BLOCK)[None, :, None],
                  corners[:, 1, None, None] + np.arange(2 * BLOCK)[None, None, :]]
    unclipped = ((patches > 0) & (patches < 255)).all(axis=(1, 2, 3))
    corners = corners[unclipped][:OFFSET_SAMPLE_BLOCKS]
    positions = zigzag_order()[1 : 1 + OFFSET_POSITIONS]
    rows = np.array([u for u, _ in positions])
    cols = np.array([v for _, v in positions])
    totals = np.zeros((BLOCK, BLOCK))
    for dy in range(BLOCK):
        for dx in range(BLOCK):
            sample = _dct_at(plane, corners[:, 0] + dy, corners[:, 1] + dx)
            values = sample[:, rows, cols].astype(np.float64)[:, :, None]  # (N, P, 1)
            off_zero = np.abs(values) >= steps / 2.0  # (N, P, steps)
            support = off_zero.sum(axis=0)
            cosines = np.where(off_zero, np.cos(values * (2.0 * np.pi / steps)), 0.0)
            z = cosines.sum(axis=0) / np.sqrt(np.maximum(support, 1))  # (P, steps)
            totals[dy, dx] = float(np.where(support >= MIN_SUPPORT, z, 0.0).max(axis=1).sum())
    return totals


def off_lattice_share(sample: np.ndarray, estimate: StepEstimate,
                      positions: list[tuple[int, int]]) -> float:
    """Median over the determined ``positions`` of the share of coefficients off zero that sit
    0.75 or more off their step's lattice (decoding error alone: 2-16 %, median under 10 %)."""
    determined = estimate.determined()
    shares = []
    for u, v in positions:
        if not determined[u, v]:
            continue
        step = int(estimate.steps[u, v])
        values = sample[:, u, v].astype(np.float64)
        values = values[np.abs(values) >= step / 2.0]
        shares.append(float((np.abs(values - step * np.rint(values / step)) >= 0.75).mean()))
    return float(np.median(shares)) if shares else 0.0


def _complete_table(steps: np.ndarray, determined: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """The IJG table that agrees with most determined steps, taken whole when it agrees with
    at least 90 % of them (a step misread as a divisor or multiple is overruled); otherwise
    the determined steps, filled from it.

    Qualities that agree equally (they differ only where nothing was determined, e.g. 49-51)
    are told apart by how well their steps fit every coefficient off zero of ``sample``
    ((N, 8, 8)), however few; then by roundness.
    """
    agreement = np.array([int((ijg_table(q)[determined] == steps[determined]).sum())
                          for q in range(1, 101)])
    tied = np.nonzero(agreement == agreement.max())[0] + 1
    if len(tied) > 1:
        def fit(quality: int) -> float:
            table = ijg_table(quality)
            total = 0.0
            for u in range(BLOCK):
                for v in range(BLOCK):
                    strength, count = lattice_strength(sample[:, u, v].astype(np.float64),
                                                       int(table[u, v]))
                    total += strength * count
            return total

        # Still tied where no coefficient tells them apart: encoders are mostly set to round
        # qualities (75, 80, 90, 95), so those win the tie.
        quality = max(tied.tolist(), key=lambda q: (round(fit(q), 3), q % 5 == 0, q % 10 == 0))
    else:
        quality = int(tied[0])
    table = ijg_table(quality).astype(np.int32)
    if agreement[quality - 1] >= 0.9 * int(determined.sum()):
        return table
    return np.where(determined, steps, table).astype(np.int32)


def requantize(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(8*ceil(H/8), 8*ceil(W/8)) int32 Y coefficients of ``rgb`` quantized with ``table``,
    in :class:`~forgectl.intake.JpegData`'s layout (partial blocks padded by edge
    replication, as libjpeg pads)."""
    h, w = rgb.shape[:2]
    bh, bw = -(-h // BLOCK), -(-w // BLOCK)
    plane = luma(rgb)
    if (bh * BLOCK, bw * BLOCK) != (h, w):
        plane = np.pad(plane, ((0, bh * BLOCK - h), (0, bw * BLOCK - w)), mode="edge")
    coefs = block_dct(plane)  # (bh, bw, 8, 8)
    del plane
    # In place: on 100 MP each float32 temporary is 400 MB.
    np.divide(coefs, table.astype(np.float32), out=coefs)
    np.rint(coefs, out=coefs)
    out = np.empty((bh * BLOCK, bw * BLOCK), np.int32)
    out.reshape(bh, BLOCK, bw, BLOCK)[...] = coefs.transpose(0, 2, 1, 3)
    return out


def attach_pixel_history(image: ForensicImage) -> ForensicImage:
    """Give a non-JPEG ``image`` the JPEG data its pixels still carry (in place, once).

    On the image's own grid the data go to ``image.jpeg``. On a grid offset by ``(dy, dx)``
    (cropped after the save) they go to ``image.jpeg_grid_view``: the image padded at the top
    and left (edge pixels repeated) so that grid starts at its origin, with the data; JPEG
    methods run on that view and crop their maps back (``Backend.localize``). A JPEG file
    keeps its own data; an image already looked at is left as it is. The data are marked
    ``source="pixels"`` in the JSON record, so a reader knows they were inferred.
    """
    if image.jpeg is not None or image.pixel_history_checked:
        return image
    history = jpeg_history_from_pixels(image.rgb)
    image.pixel_history = history.facts()
    if history.table is None:
        image.pixel_history_checked = True
        return image
    dy, dx = history.offset
    top, left = (BLOCK - dy) % BLOCK, (BLOCK - dx) % BLOCK
    rgb = image.rgb
    if top or left:
        rgb = cv2.copyMakeBorder(image.rgb, top, 0, left, 0, cv2.BORDER_REPLICATE)
    table = history.table
    # The quality is the lattice's, the one the pixels show (an earlier save's under steps
    # of 1): what ghost compares its recompressions against.
    quality, exact = estimate_ijg_quality(history.lattice)
    exact = exact and bool(np.array_equal(table, history.lattice))
    jpeg = JpegData(
        coefficients=(requantize(rgb, table),),
        quant_tables=(table,),
        sampling=((1, 1),),
        subsampling="unknown",
        progressive=False,
        quality=quality,
        standard_tables=exact,
        source="pixels",
    )
    if not (top or left):
        image.jpeg = jpeg
    else:
        image.jpeg_grid_view = dataclasses.replace(
            image, rgb=np.ascontiguousarray(rgb), jpeg=jpeg, pixel_history_checked=True,
            jpeg_grid_view=None,
        )
    # Marked last: a caller that sees it set sees the data too.
    image.pixel_history_checked = True
    return image
