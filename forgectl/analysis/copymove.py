"""Keypoint copy-move detection: SIFT, generalized 2NN matching, clustering, affine RANSAC and
a correlation-based pixel refinement that marks both the source and the copied region.

The pipeline follows Amerini et al., "A SIFT-based forensic method for copy-move attack detection
and transformation recovery" (IEEE TIFS 2011) for matching and transform recovery, and Pan & Lyu,
"Region duplication detection using image feature matching" (IEEE TIFS 2010) for the pixel
refinement (local correlation between the image and its copy warped by the recovered transform).
Translated copies of regions too smooth for keypoints come from dense block matching with
shift-vector voting (:func:`dense_translations`, after Fridrich, Soukal & Lukas, DFRWS 2003),
refined the same way under stricter confirmation.

Coordinates are ``(x, y)`` pixel positions (OpenCV's order); an affine transform is a (2, 3)
float64 matrix ``A`` mapping a source point to its copy: ``[x', y'] = A @ [x, y, 1]``.
Everything runs on a *working grid* (the image downscaled so its longer side is at most
``CopyMoveConfig.max_side``) and the caller maps results back to the stored grid.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from forgectl.analysis.threads import opencv_threads


@dataclass(frozen=True)
class CopyMoveConfig:
    """Every knob of the detector, as data (units: pixels of the working grid).

    Attributes:
        max_side: longer side of the working grid; larger images are downscaled for all work.
        max_keypoints: SIFT keeps at most this many keypoints (strongest response first).
        contrast_thresholds: SIFT contrast thresholds tried in order; the next (lower) one is
            used while fewer than ``min_keypoint_density`` keypoints per pixel were found, so
            low-contrast images still get keypoints.
        min_keypoint_density: keypoints per pixel below which a lower contrast is tried.
        neighbours: nearest neighbours (by descriptor) examined per keypoint for g2NN.
        g2nn_ratio: successive-distance ratio ``d_i / d_(i+1)`` below which neighbour ``i`` is
            kept as a match (Amerini et al. use 0.5).
        min_match_distance: matched keypoints closer than this are ignored (self, neighbours
            within one structure).
        max_matches: matches kept (smallest descriptor distance first) before clustering.
        cluster_cutoff: single-linkage cutoff of the pair clustering, as a fraction of the
            working grid's longer side (floored at ``cluster_cutoff_min``).
        cluster_cutoff_min: lower bound of that cutoff, in pixels.
        min_inliers: distinct inlier keypoints an affine transform needs to be reported.
        ransac_threshold: RANSAC reprojection tolerance.
        max_transforms_per_cluster: transforms extracted from one cluster (sequential RANSAC).
        min_scale, max_scale: accepted range of the transform's singular values (mild scaling).
        correlation_sigma: Gaussian window (sigma) of the local correlation.
        correlation_threshold: local correlation above which a pixel is taken as duplicated.
        variance_floor: grey-level variance added to both windows' variances, so flat windows
            (where correlation is meaningless) stay near 0.
        min_region_fraction: a transform whose refined regions cover less than this fraction of
            the working grid is dropped (the correlation did not confirm the keypoints).
        dense: also look for translated copies by dense block matching (finds copies of
            regions too smooth for keypoints; see :func:`dense_translations`).
        block_size: side of the matched blocks (a multiple of 4: 4 x 4 cell means describe one).
        block_stride: step between blocks (raised until at most ``max_blocks`` blocks).
        max_blocks: bound on the blocks matched (time and memory).
        block_min_std: blocks flatter than this (grey-level standard deviation) are skipped:
            they match everything.
        block_tolerance: largest RMS difference of two blocks' cell means to match (grey levels).
        block_neighbours: nearest blocks examined per block.
        min_block_votes: blocks that must agree on one shift for it to become a candidate copy.
        block_min_shift: shortest shift a block match may vote for (pixels): shorter ones are
            mostly a smooth or periodic surface matching itself next door.
        max_dense_copies: candidate shifts tried, most votes first.
        block_max_side: blocks are matched on a grid of at most this longer side (so the block
            grid stays fine on large photos); the shift is then refined on the working grid.
        block_min_strength: a block-found copy is kept only when the mean local correlation
            over its two regions reaches this (keypoint copies need none: their inliers are
            distinctive points, block votes can come from a merely similar surface).
        block_min_region_fraction: and only when each of its regions covers this fraction of
            the working grid.
    """

    max_side: int = 1600
    max_keypoints: int = 6000
    contrast_thresholds: tuple[float, ...] = (0.02, 0.005)
    min_keypoint_density: float = 2e-3
    neighbours: int = 12
    g2nn_ratio: float = 0.5
    min_match_distance: float = 12.0
    max_matches: int = 3000
    cluster_cutoff: float = 0.08
    cluster_cutoff_min: float = 30.0
    min_inliers: int = 5
    ransac_threshold: float = 3.0
    max_transforms_per_cluster: int = 3
    min_scale: float = 0.5
    max_scale: float = 2.0
    correlation_sigma: float = 2.0
    correlation_threshold: float = 0.6
    variance_floor: float = 4.0
    min_region_fraction: float = 2e-4
    dense: bool = True
    block_size: int = 16
    block_stride: int = 2
    max_blocks: int = 10000
    block_min_std: float = 3.0
    block_tolerance: float = 1.5
    block_neighbours: int = 8
    min_block_votes: int = 20
    block_min_shift: float = 32.0
    max_dense_copies: int = 3
    block_max_side: int = 512
    block_min_strength: float = 0.8
    block_min_region_fraction: float = 5e-3


@dataclass
class Keypoints:
    """SIFT keypoints of one grey image.

    Attributes:
        points: (N, 2) float32 ``(x, y)`` positions on the working grid.
        descriptors: (N, 128) float32 SIFT descriptors.
        contrast_threshold: the SIFT contrast threshold that produced them.
    """

    points: np.ndarray
    descriptors: np.ndarray
    contrast_threshold: float


@dataclass
class CopyTransform:
    """One recovered copy: ``matrix`` maps the source region onto the copied region.

    Attributes:
        matrix: (2, 3) float64 affine source -> copy on the working grid.
        source_points: (K, 2) float32 inlier keypoints in the source region.
        target_points: (K, 2) float32 their matches in the copied region.
        source_mask, target_mask: (h, w) bool refined regions (filled by :func:`refine`).
        strength: (h, w) float32 local correlation inside the regions, in [0, 1].
        origin: ``keypoints`` (SIFT matches) or ``blocks`` (:func:`dense_translations`; the
            "inliers" are then the centres of the blocks that voted for the shift).
    """

    matrix: np.ndarray
    source_points: np.ndarray
    target_points: np.ndarray
    source_mask: np.ndarray | None = None
    target_mask: np.ndarray | None = None
    strength: np.ndarray | None = field(default=None, repr=False)
    origin: str = "keypoints"

    @property
    def inliers(self) -> int:
        """Distinct inlier keypoint positions (repeated SIFT orientations count once)."""
        return distinct_count(self.source_points, self.target_points)


def distinct_count(src: np.ndarray, dst: np.ndarray) -> int:
    """Number of distinct ``(src, dst)`` positions, rounded to the pixel."""
    if len(src) == 0:
        return 0
    key = np.round(np.concatenate([src, dst], axis=1)).astype(np.int64)
    return int(len(np.unique(key, axis=0)))


def working_grey(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Grey (luma) image on the working grid.

    Args:
        rgb: (H, W, 3) uint8.
        max_side: longer side of the working grid.

    Returns:
        ``(grey, scale)``: (h, w) uint8 luma and ``scale = h / H`` (1.0 when not downscaled).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3), got {rgb.shape}")
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # Downscale colour first (INTER_AREA averages, so no aliasing), then one grey plane:
        # never a full-resolution float copy of a 12 MP image.
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        scale = size[1] / height
    else:
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    return grey, scale


def detect_keypoints(grey: np.ndarray, config: CopyMoveConfig) -> Keypoints:
    """SIFT keypoints and descriptors, lowering the contrast threshold on low-contrast images.

    Args:
        grey: (h, w) uint8.
    """
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"grey must be (h, w) uint8, got {grey.shape} {grey.dtype}")
    wanted = config.min_keypoint_density * grey.size
    points = np.zeros((0, 2), np.float32)
    descriptors = np.zeros((0, 128), np.float32)
    used = config.contrast_thresholds[0]
    for contrast in config.contrast_thresholds:
        sift = cv2.SIFT_create(nfeatures=config.max_keypoints, contrastThreshold=contrast)
        kps, desc = sift.detectAndCompute(grey, None)
        used = contrast
        if desc is not None and len(kps):
            points = np.array([kp.pt for kp in kps], np.float32).reshape(-1, 2)
            descriptors = desc.astype(np.float32)
        if len(points) >= wanted:
            break
    return Keypoints(points, descriptors, used)


#: Query rows per block of :func:`nearest_descriptors` (bounds the (rows, N) distance block).
_KNN_ROWS = 512
#: Columns per group whose minimum bounds the k-th nearest distance (see nearest_descriptors).
_KNN_GROUP = 32
#: Candidate pairs whose exact distance is computed at once (bounds a (pairs, D) array).
_KNN_PAIRS = 1 << 16


def nearest_descriptors(
    descriptors: np.ndarray, k: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest descriptors (L2) of every descriptor among all of them, itself included:
    what ``cv2.BFMatcher(cv2.NORM_L2).knnMatch(d, d, k)`` returns, at a fraction of its cost.

    OpenCV's brute force takes ~1 s for 6000 SIFT descriptors. Here one BLAS product gives, per
    query ``a``, ``|b|^2 - 2 a.b`` for every ``b`` (the squared distance less a per-row
    constant) to float32 precision; it only shortlists. The k-th smallest of the minima over
    groups of up to ``_KNN_GROUP`` columns bounds the k-th nearest (k groups each hold a value
    at or below it), so every value within that bound plus twice the worst float32 error is a
    candidate, ties included. Their distances are recomputed exactly as
    OpenCV does (float32 sum of squared differences; exact for SIFT's integer-valued
    descriptors) and ordered by distance, then index, which is how OpenCV orders ties.

    Args:
        descriptors: (N, D) float32.
        k: neighbours per descriptor, ``1 <= k <= N``.
        threads: blocks of query rows run on this many threads.

    Returns:
        ``(indices, distances)``: (N, k) int64 and (N, k) float32, nearest first.
    """
    d = np.ascontiguousarray(descriptors, np.float32)
    n, dims = d.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    squares = np.einsum("ij,ij->i", d, d)
    # Groups small enough that there are more than k of them (else the bound says nothing).
    group = min(_KNN_GROUP, max(1, n // (2 * k)))
    groups = -(-n // group)
    # Train side of the product: [-2 b; |b|^2], padded to whole groups with columns that give
    # a huge value (0 * a + 1 * 1e30), so the group minima are one reduction over a contiguous
    # block. Not inf: BLAS kernels multiply their own zero padding by it (0 * inf = NaN).
    train = np.zeros((dims + 1, groups * group), np.float32)
    train[:dims, :n] = -2.0 * d.T
    train[dims, :n] = squares
    train[dims, n:] = 1e30
    # A float32 dot product of D + 1 terms errs by at most about (D + 1) 2^-24 sum |x_i y_i|,
    # and here sum |x_i y_i| = 2 |a.b| + |b|^2 <= 2 (|a|^2 + max |b|^2); 8 x that, per query.
    slack = 16.0 * (dims + 1) * 2.0**-24 * (squares + squares.max()) + 1e-3
    out_idx = np.empty((n, k), np.int64)
    out_dist = np.empty((n, k), np.float32)

    def block(r0: int) -> None:
        q = d[r0 : r0 + _KNN_ROWS]
        m = len(q)
        shifted = np.concatenate([q, np.ones((m, 1), np.float32)], axis=1) @ train
        group_min = cv2.reduce(shifted.reshape(m * groups, group), 1, cv2.REDUCE_MIN)
        group_min = group_min.reshape(m, groups)
        bound = (
            np.partition(group_min, k - 1, axis=1)[:, k - 1]
            if groups > k
            else np.full(m, np.inf, np.float32)
        )
        limit = bound + 2.0 * slack[r0 : r0 + m]
        rows, hit = np.nonzero(group_min <= limit[:, None])
        cols = (hit[:, None] * group + np.arange(group)[None, :]).ravel()
        rows = np.repeat(rows, group)
        inside = cols < n
        rows, cols = rows[inside], cols[inside]
        keep = shifted[rows, cols] <= limit[rows]
        rows, cols = rows[keep], cols[keep]
        exact = np.empty(len(rows), np.float32)
        for p0 in range(0, len(rows), _KNN_PAIRS):  # many ties: many pairs, bounded memory
            diff = q[rows[p0 : p0 + _KNN_PAIRS]] - d[cols[p0 : p0 + _KNN_PAIRS]]
            exact[p0 : p0 + _KNN_PAIRS] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        order = np.lexsort((cols, exact, rows))  # by row, then distance, then index
        rows, cols, exact = rows[order], cols[order], exact[order]
        take = np.searchsorted(rows, np.arange(m))[:, None] + np.arange(k)[None, :]
        out_idx[r0 : r0 + m] = cols[take]
        out_dist[r0 : r0 + m] = exact[take]

    starts = range(0, n, _KNN_ROWS)
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(block, starts))
    else:
        for r0 in starts:
            block(r0)
    return out_idx, out_dist


def g2nn_matches(
    keypoints: Keypoints, config: CopyMoveConfig, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Generalized 2NN matching of an image's keypoints against themselves.

    For each keypoint, its descriptor neighbours (self and spatially close ones removed) are
    sorted by distance ``d_1 <= d_2 <= ...``; neighbour ``i`` is a match while every ratio
    ``d_j / d_(j+1)`` for ``j <= i`` is below ``g2nn_ratio`` (so one keypoint may match several
    copies). A chain that reaches the last examined neighbour is not verified and stops there.

    Returns:
        ``(pairs, distances)``: (M, 2) int64 keypoint indices with ``i < j`` (unique), and
        (M,) float32 descriptor distances, sorted by distance and capped at ``max_matches``.
    """
    n = len(keypoints.points)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    k = min(config.neighbours + 1, n)
    idx, dist = nearest_descriptors(keypoints.descriptors, k, threads)
    pts = keypoints.points
    safe = np.where(idx >= 0, idx, 0)
    far = np.linalg.norm(pts[safe] - pts[:, None, :], axis=2) >= config.min_match_distance
    valid = (idx >= 0) & (idx != np.arange(n)[:, None]) & far
    # Compact the valid neighbours to the left, keeping distance order (stable sort on ~valid).
    order = np.argsort(~valid, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    dist = np.take_along_axis(np.where(valid, dist, np.inf), order, axis=1)
    num, den = dist[:, :-1], dist[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(den > 0, num / den, 0.0)  # identical descriptors: 0/0 counts as a match
    ratio = np.where(np.isfinite(den), ratio, 1.0)  # next neighbour unknown: cannot verify
    keep = np.cumprod(ratio < config.g2nn_ratio, axis=1).astype(bool)
    rows, cols = np.nonzero(keep)
    if len(rows) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    a, b = rows.astype(np.int64), idx[rows, cols]
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    pairs, first = np.unique(pairs, axis=0, return_index=True)
    distances = dist[rows, cols][first]
    order = np.argsort(distances, kind="stable")[: config.max_matches]
    return pairs[order], distances[order].astype(np.float32)


def cluster_pairs(src: np.ndarray, dst: np.ndarray, cutoff: float) -> np.ndarray:
    """Single-linkage clusters of matched pairs, with pair order ignored.

    The distance between pairs ``(p, q)`` and ``(p', q')`` is
    ``min(|p - p'| + |q - q'|, |p - q'| + |q - p'|)``: two matches belong together when both
    ends are near each other, whichever end was listed first.

    Args:
        src, dst: (M, 2) float ends of the M matches.
        cutoff: linkage distance (pixels) at which clusters stop merging.

    Returns:
        (M,) int cluster label per match (labels start at 1).
    """
    m = len(src)
    if m == 0:
        return np.zeros(0, np.int64)
    if m == 1:
        return np.ones(1, np.int64)
    iu, ju = np.triu_indices(m, k=1)
    same = np.linalg.norm(src[iu] - src[ju], axis=1) + np.linalg.norm(dst[iu] - dst[ju], axis=1)
    swap = np.linalg.norm(src[iu] - dst[ju], axis=1) + np.linalg.norm(dst[iu] - src[ju], axis=1)
    condensed = np.minimum(same, swap).astype(np.float64)
    # Imported here: scipy.cluster costs 0.15 s to import, and most images never get here.
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(condensed, method="single")
    return fcluster(tree, t=cutoff, criterion="distance").astype(np.int64)


def orient_pairs(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swap the ends of matches so all displacements point like the median displacement.

    Matching is symmetric, so a cluster's pairs come in either order; RANSAC needs them as
    consistent (source, copy) pairs.
    """
    disp = dst - src
    ref = disp[np.argmin(np.abs(disp - np.median(disp, axis=0)).sum(axis=1))]
    flip = (disp @ ref) < 0
    return np.where(flip[:, None], dst, src), np.where(flip[:, None], src, dst)


def plausible(matrix: np.ndarray, src: np.ndarray, config: CopyMoveConfig) -> bool:
    """A copy transform must keep orientation, scale mildly, move the region and be supported
    by keypoints that are not all on one line."""
    lin = matrix[:, :2]
    if np.linalg.det(lin) <= 0:
        return False
    sv = np.linalg.svd(lin, compute_uv=False)
    if sv.min() < config.min_scale or sv.max() > config.max_scale:
        return False
    moved = cv2.transform(src.reshape(-1, 1, 2).astype(np.float64), matrix).reshape(-1, 2)
    if np.median(np.linalg.norm(moved - src, axis=1)) < config.min_match_distance:
        return False
    spread = np.linalg.svd(src - src.mean(axis=0), compute_uv=False)
    return bool(spread.min() / np.sqrt(len(src)) >= 1.0)


def estimate_transforms(
    src: np.ndarray, dst: np.ndarray, config: CopyMoveConfig
) -> list[CopyTransform]:
    """Sequential RANSAC affine fits inside one cluster of (unordered) matches.

    Args:
        src, dst: (M, 2) float32 ends of the cluster's matches.
    """
    found: list[CopyTransform] = []
    src, dst = orient_pairs(src, dst)
    for _ in range(config.max_transforms_per_cluster):
        if distinct_count(src, dst) < config.min_inliers:
            break
        matrix, inlier_flags = cv2.estimateAffine2D(
            src,
            dst,
            method=cv2.RANSAC,
            ransacReprojThreshold=config.ransac_threshold,
            maxIters=2000,
            confidence=0.995,
            refineIters=10,
        )
        if matrix is None:
            break
        inl = inlier_flags.ravel().astype(bool)
        if distinct_count(src[inl], dst[inl]) < config.min_inliers:
            break
        if plausible(matrix, src[inl], config):
            found.append(CopyTransform(matrix.astype(np.float64), src[inl], dst[inl]))
        src, dst = src[~inl], dst[~inl]
    return found


def _alignment_error(matrix: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    """Median distance between ``matrix`` applied to ``src`` and ``dst`` (pixels)."""
    moved = cv2.transform(src.reshape(-1, 1, 2).astype(np.float64), matrix).reshape(-1, 2)
    return float(np.median(np.linalg.norm(moved - dst, axis=1)))


def _same_copy(matrix: np.ndarray, t: CopyTransform, tol: float) -> bool:
    """Whether ``matrix`` maps ``t``'s points onto each other (either direction) within
    ``tol`` pixels: the two describe one copy."""
    return min(_alignment_error(matrix, t.source_points, t.target_points),
               _alignment_error(matrix, t.target_points, t.source_points)) <= tol


def merge_transforms(
    transforms: list[CopyTransform], config: CopyMoveConfig
) -> list[CopyTransform]:
    """Merge transforms that describe the same copy (a region split over two clusters, in
    either direction), then sort by inlier count, strongest first."""
    tol = 2 * config.ransac_threshold
    merged: list[CopyTransform] = []
    for t in sorted(transforms, key=lambda t: -t.inliers):
        for kept in merged:
            forward = _alignment_error(kept.matrix, t.source_points, t.target_points)
            backward = _alignment_error(kept.matrix, t.target_points, t.source_points)
            if min(forward, backward) <= tol:  # as _same_copy, with the direction kept
                src, dst = (t.source_points, t.target_points)
                if backward < forward:
                    src, dst = dst, src
                kept.source_points = np.concatenate([kept.source_points, src])
                kept.target_points = np.concatenate([kept.target_points, dst])
                break
        else:
            merged.append(t)
    return sorted(merged, key=lambda t: -t.inliers)


def find_transforms(
    keypoints: Keypoints, pairs: np.ndarray, shape: tuple[int, int], config: CopyMoveConfig
) -> list[CopyTransform]:
    """Cluster the matches and fit copy transforms in each cluster.

    Args:
        pairs: (M, 2) keypoint indices from :func:`g2nn_matches`.
        shape: ``(h, w)`` of the working grid.
    """
    if len(pairs) < config.min_inliers:
        return []
    src = keypoints.points[pairs[:, 0]]
    dst = keypoints.points[pairs[:, 1]]
    cutoff = max(config.cluster_cutoff_min, config.cluster_cutoff * max(shape))
    labels = cluster_pairs(src, dst, cutoff)
    transforms: list[CopyTransform] = []
    for label in np.unique(labels):
        member = labels == label
        if member.sum() >= config.min_inliers:
            transforms.extend(estimate_transforms(src[member], dst[member], config))
    return merge_transforms(transforms, config)


def dense_translations(
    grey: np.ndarray, config: CopyMoveConfig, threads: int = 1
) -> list[CopyTransform]:
    """Candidate translated copies from dense block matching (Fridrich et al. 2003, with
    shift-vector voting): every ``block_size`` block on a ``block_stride`` grid is described by
    its 4 x 4 cell means; each finds its nearest blocks in that space, and a match within
    ``block_tolerance`` that lies at least ``block_min_shift`` away votes for its shift
    (sign-normalised: a copy and its source vote alike). Shifts with ``min_block_votes``
    votes become translations whose "inliers" are the voting blocks' centres (``origin
    "blocks"``); :func:`refine` then has to confirm them, and :func:`analyse` asks more of
    them than of keypoint copies.

    Keypoints miss copies of smooth objects; blocks need no corners, only some texture
    (``block_min_std``). Matching runs on a grid of at most ``block_max_side``; the shift is
    then refined to the pixel on ``grey`` (:func:`_refine_shift`).

    Args:
        grey: (h, w) uint8 working-grid luma.

    Returns:
        Up to ``max_dense_copies`` translations on ``grey``'s grid, most votes first (masks
        not yet refined).
    """
    from scipy.spatial import cKDTree  # here, as scipy.cluster below: import cost

    b = config.block_size
    h, w = grey.shape
    factor = min(1.0, config.block_max_side / max(h, w))
    small = grey
    if factor < 1.0:
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        small = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
    sh, sw = small.shape
    if b % 4 or sh < 2 * b or sw < 2 * b:
        return []
    stride = max(1, config.block_stride)
    while ((sh - b) // stride + 1) * ((sw - b) // stride + 1) > config.max_blocks:
        stride += 1
    plane = small.astype(np.float32)
    cell = b // 4
    # Mean of the cell x cell square whose top-left corner is at each pixel, and the block's
    # mean and mean square likewise.
    cells = cv2.boxFilter(plane, -1, (cell, cell), anchor=(0, 0), borderType=cv2.BORDER_REFLECT)
    mean = cv2.boxFilter(plane, -1, (b, b), anchor=(0, 0), borderType=cv2.BORDER_REFLECT)
    square = cv2.boxFilter(plane * plane, -1, (b, b), anchor=(0, 0),
                           borderType=cv2.BORDER_REFLECT)
    gy, gx = (a.ravel() for a in np.meshgrid(np.arange(0, sh - b + 1, stride),
                                             np.arange(0, sw - b + 1, stride), indexing="ij"))
    textured = np.sqrt(np.maximum(square[gy, gx] - mean[gy, gx] ** 2, 0.0)) >= config.block_min_std
    gy, gx = gy[textured], gx[textured]
    if len(gy) <= max(config.block_neighbours, config.min_block_votes):
        return []
    corners = np.arange(4) * cell
    features = np.stack([cells[gy + dy, gx + dx] for dy in corners for dx in corners], axis=1)
    k = min(config.block_neighbours + 1, len(features))
    # A k-d tree with the tolerance as its search radius: 16-dimensional cell means of smooth
    # blocks have many near ties, which the exhaustive SIFT shortlist handles slowly.
    limit = config.block_tolerance * 4.0  # RMS over the 16 cell means <= tolerance
    dist, idx = cKDTree(features).query(features, k=k, distance_upper_bound=limit + 1e-6,
                                        workers=max(1, threads))
    dist, idx = dist.reshape(len(features), k), idx.reshape(len(features), k)
    found_one = idx < len(features)  # missing neighbours come back as index n, distance inf
    idx = np.where(found_one, idx, 0)
    shift = np.stack([gx[idx] - gx[:, None], gy[idx] - gy[:, None]], axis=2)
    reach = max(config.min_match_distance, config.block_min_shift) * factor
    ok = found_one & (np.hypot(shift[..., 0], shift[..., 1]) >= reach) & (dist <= limit)
    first = np.argmax(ok, axis=1)  # each block's nearest acceptable match
    rows = np.nonzero(ok[np.arange(len(ok)), first])[0]
    vec = shift[rows, first[rows]].astype(np.int64)
    # Aperture: a block on a straight edge or ramp matches itself anywhere along it, so its
    # vote says nothing about a copy. Keep a vote only if moving the block half its side
    # along the shift changes it by more than twice the tolerance.
    step = np.round(vec * ((b / 2) / np.hypot(vec[:, 0], vec[:, 1]))[:, None]).astype(np.int64)
    ax = np.clip(gx[rows] + step[:, 0], 0, sw - b)
    ay = np.clip(gy[rows] + step[:, 1], 0, sh - b)
    moved = np.stack([cells[ay + dy, ax + dx] for dy in corners for dx in corners], axis=1)
    distinct = np.linalg.norm(moved - features[rows], axis=1) > 2 * limit
    rows, vec = rows[distinct], vec[distinct]
    if len(rows) < config.min_block_votes:
        return []
    flip = (vec[:, 0] < 0) | ((vec[:, 0] == 0) & (vec[:, 1] < 0))
    vec[flip] *= -1
    src = np.stack([gx[rows], gy[rows]], axis=1).astype(np.float64) + b / 2.0
    src[flip] -= vec[flip]  # the block the normalised shift starts from
    keys, counts = np.unique(vec, axis=0, return_counts=True)
    found: list[CopyTransform] = []
    taken = np.zeros(len(vec), bool)
    for i in np.argsort(-counts, kind="stable"):
        if len(found) >= config.max_dense_copies:
            break
        # Votes within one grid step of this shift count for it (the grid samples shifts).
        near = (np.abs(vec - keys[i]).max(axis=1) <= stride) & ~taken
        if near.sum() < config.min_block_votes:
            continue
        taken |= near
        s_pts = src[near] / factor
        guess = np.median(vec[near], axis=0) / factor
        d = _refine_shift(grey, s_pts, guess, b / factor, radius=int(np.ceil(stride / factor)))
        matrix = np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]]])
        found.append(CopyTransform(matrix, s_pts.astype(np.float32),
                                   (s_pts + d).astype(np.float32), origin="blocks"))
    return found


#: Shift searches up to this radius try every pixel: every image up to about 800 px on its long
#: side (CASIA's, and the synthetic set ``auto`` is fitted on) gets exactly that search.
_EXHAUSTIVE_RADIUS = 8


def _refine_shift(
    grey: np.ndarray, centres: np.ndarray, guess: np.ndarray, size: float, radius: int
) -> np.ndarray:
    """The integer shift within ``radius`` of ``guess`` that best maps the ``size`` squares
    around ``centres`` onto the image, as (dx, dy) float: least median (over squares) of the
    mean squared difference, so squares that straddle the copy's edge do not pull it off.
    A wide search (over :data:`_EXHAUSTIVE_RADIUS`: blocks matched on a grid several times
    smaller, i.e. a photo of a few megapixels) goes coarse to fine: every ``radius // 3``
    pixels first, then every pixel around the best."""
    h, w = grey.shape
    plane = grey.astype(np.float32)
    half = max(2, int(round(size / 2)))
    # At most 64 squares (evenly spread): the shift is one number per axis.
    corners = np.round(centres[:: max(1, len(centres) // 64)]).astype(np.int64) - half

    def cost(d: np.ndarray) -> float:
        costs = []
        for x0, y0 in corners:
            x1, y1 = x0 + d[0], y0 + d[1]
            if min(x0, y0, x1, y1) < 0 or max(x0, x1) + 2 * half > w or \
                    max(y0, y1) + 2 * half > h:
                continue
            diff = (plane[y0:y0 + 2 * half, x0:x0 + 2 * half]
                    - plane[y1:y1 + 2 * half, x1:x1 + 2 * half])
            costs.append(float((diff * diff).mean()))
        return float(np.median(costs)) if costs else np.inf

    def search(centre: np.ndarray, reach: int, step: int) -> np.ndarray:
        offsets = range(-reach, reach + 1, step)
        shifts = [centre + (dx, dy) for dy in offsets for dx in offsets]
        costs = [cost(d) for d in shifts]
        return shifts[int(np.argmin(costs))] if np.isfinite(min(costs)) else centre

    best = np.round(guess).astype(np.int64)
    step = radius // 3 if radius > _EXHAUSTIVE_RADIUS else 1
    if step > 1:
        best = search(best, radius - radius % step, step)
    return search(best, step if step > 1 else radius, 1).astype(np.float64)


def local_correlation(
    a: np.ndarray, b: np.ndarray, sigma: float, variance_floor: float
) -> np.ndarray:
    """Zero-mean normalised cross-correlation of two images in a Gaussian window.

    ``cov(a, b) / sqrt((var a + floor) * (var b + floor))``: near 1 where ``b`` is a copy of
    ``a``, near 0 in flat windows (the floor) or unrelated content.

    Args:
        a, b: (h, w) float32.

    Returns:
        (h, w) float32 in [-1, 1].
    """
    return _correlate(_local_moments(a, sigma), a, b, sigma, variance_floor)


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _local_moments(a: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-window mean and variance of ``a`` (shared by both directions of a copy)."""
    mean_a = _gaussian(a, sigma)
    return mean_a, np.maximum(_gaussian(a * a, sigma) - mean_a * mean_a, 0.0)


def _correlate(
    moments_a: tuple[np.ndarray, np.ndarray],
    a: np.ndarray,
    b: np.ndarray,
    sigma: float,
    variance_floor: float,
) -> np.ndarray:
    """:func:`local_correlation` with ``a``'s window moments given."""
    mean_a, var_a = moments_a
    mean_b = _gaussian(b, sigma)
    var_b = np.maximum(_gaussian(b * b, sigma) - mean_b * mean_b, 0.0)
    cov = _gaussian(a * b, sigma) - mean_a * mean_b
    return (cov / np.sqrt((var_a + variance_floor) * (var_b + variance_floor))).astype(np.float32)


def _warp(grey: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``out(x) = grey(matrix @ x)`` and where that sample lies inside the image."""
    h, w = grey.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(grey, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)
    inside = cv2.warpAffine(
        np.ones((h, w), np.uint8),
        matrix,
        (w, h),
        flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return out, inside.astype(bool)


def _region(
    corr: np.ndarray, seeds: np.ndarray, config: CopyMoveConfig, close_radius: int
) -> np.ndarray:
    """Components of ``corr >= threshold`` that hold an inlier keypoint, cleaned and filled."""
    h, w = corr.shape
    binary = (corr >= config.correlation_threshold).astype(np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels = cv2.connectedComponents(binary, connectivity=8)
    if count <= 1:
        return np.zeros((h, w), bool)
    seed_map = np.zeros((h, w), np.uint8)
    xy = np.round(seeds).astype(np.int64)
    xy[:, 0] = np.clip(xy[:, 0], 0, w - 1)
    xy[:, 1] = np.clip(xy[:, 1], 0, h - 1)
    seed_map[xy[:, 1], xy[:, 0]] = 1
    # A keypoint sits at a blob's centre, where the window may straddle the region's edge:
    # accept components within a few pixels of it.
    seed_map = cv2.dilate(seed_map, np.ones((7, 7), np.uint8))
    hit = np.unique(labels[(seed_map > 0) & (labels > 0)])
    region = np.isin(labels, hit).astype(np.uint8)
    size = 2 * close_radius + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, kernel)
    return fill_holes(region > 0)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes(mask)`` (same result), by one OpenCV flood fill.

    Background 4-connected to the image border (through a one-pixel frame) is outside; every
    other background pixel is a hole. SciPy's iterated dilation took ~0.1 s per mask on a
    1600-pixel working grid; the flood fill takes a few milliseconds.
    """
    h, w = mask.shape
    canvas = np.zeros((h + 2, w + 2), np.uint8)
    canvas[1:-1, 1:-1] = mask
    cv2.floodFill(canvas, None, (0, 0), 2, flags=4)
    return canvas[1:-1, 1:-1] != 2


def _barely_moved(matrix: np.ndarray, h: int, w: int, distance: float) -> np.ndarray | None:
    """(h, w) bool: pixels the transform moves by less than ``distance``, or None when no pixel
    is (the usual copy: a shift much larger than ``distance`` everywhere).

    ``|(A - I) p + t|`` is at least its value at the centre minus the largest singular value
    of ``A - I`` times the half diagonal, so that bound decides most transforms without a
    per-pixel map; otherwise the map is computed as always (float64, pixel centres).
    """
    moved = matrix[:, :2] - np.eye(2)
    centre = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    at_centre = float(np.hypot(*(moved @ centre + matrix[:, 2])))
    reach = float(np.linalg.svd(moved, compute_uv=False).max()) * float(np.hypot(*centre))
    if at_centre - reach > distance * (1.0 + 1e-9) + 1e-6:
        return None
    xx = np.arange(w, dtype=np.float32)[None, :]
    yy = np.arange(h, dtype=np.float32)[:, None]
    shift = np.hypot(
        matrix[0, 0] * xx + matrix[0, 1] * yy + matrix[0, 2] - xx,
        matrix[1, 0] * xx + matrix[1, 1] * yy + matrix[1, 2] - yy,
    )
    return shift < distance


def refine(
    grey: np.ndarray, transform: CopyTransform, config: CopyMoveConfig, threads: int = 1
) -> None:
    """Fill ``transform``'s source/target masks and strength from the local correlation between
    the image and the image warped by the transform (forward for the source region, inverse
    for the copy), keeping components that contain inlier keypoints.

    Args:
        grey: (h, w) uint8 working-grid luma.
        threads: the two directions run on two threads when this is above 1.
    """
    h, w = grey.shape
    plane = grey.astype(np.float32)
    close_radius = max(3, round(0.006 * max(h, w)))
    moments = _local_moments(plane, config.correlation_sigma)
    inverse = cv2.invertAffineTransform(transform.matrix)

    def direction(job: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        matrix, seeds = job
        warped, inside = _warp(plane, matrix)
        corr = _correlate(moments, plane, warped, config.correlation_sigma,
                          config.variance_floor)
        # Pixels the transform barely moves correlate with themselves: not evidence of a copy.
        still = _barely_moved(matrix, h, w, config.min_match_distance)
        corr[~inside if still is None else ~inside | still] = 0.0
        region = _region(corr, seeds, config, close_radius)
        return region, np.where(region, np.clip(corr, 0.0, 1.0), 0.0)

    jobs = [(transform.matrix, transform.source_points), (inverse, transform.target_points)]
    if threads > 1:
        with ThreadPoolExecutor(2) as pool:
            done = list(pool.map(direction, jobs))
    else:
        done = [direction(job) for job in jobs]
    strength = np.zeros((h, w), np.float32)
    for _, part in done:
        strength = np.maximum(strength, part)
    transform.source_mask, transform.target_mask = done[0][0], done[1][0]
    transform.strength = strength


@dataclass
class CopyMoveAnalysis:
    """Everything the detector found on the working grid.

    Attributes:
        scale: working grid / stored grid size ratio.
        keypoints: SIFT keypoints on the working grid.
        pairs: (M, 2) g2NN matches (keypoint indices).
        transforms: confirmed copies, strongest first, with refined masks.
        correlation: (h, w) float32 best local correlation over the examined transforms
            (before region selection), in [0, 1], for the explain view.
    """

    scale: float
    keypoints: Keypoints
    pairs: np.ndarray
    transforms: list[CopyTransform]
    correlation: np.ndarray


def analyse(
    rgb: np.ndarray, config: CopyMoveConfig | None = None, threads: int = 1
) -> CopyMoveAnalysis:
    """Run the whole detector on an RGB image.

    Args:
        rgb: (H, W, 3) uint8 on the stored grid.
        threads: CPU threads to use (SIFT, matching and refinement; results do not depend on
            it).

    Returns:
        A :class:`CopyMoveAnalysis` on the working grid (see ``scale``).
    """
    config = config or CopyMoveConfig()
    grey, scale = working_grey(rgb, config.max_side)
    with opencv_threads(threads):  # SIFT's pyramid, extrema and descriptors run in parallel
        keypoints = detect_keypoints(grey, config)
    pairs, _ = g2nn_matches(keypoints, config, threads)
    candidates = find_transforms(keypoints, pairs, grey.shape, config)
    min_area = config.min_region_fraction * grey.size
    confirmed: list[CopyTransform] = []
    correlation = np.zeros(grey.shape, np.float32)
    for t in candidates:
        refine(grey, t, config, threads)
        assert t.source_mask is not None and t.target_mask is not None and t.strength is not None
        correlation = np.maximum(correlation, t.strength)
        if t.source_mask.sum() >= min_area and t.target_mask.sum() >= min_area:
            confirmed.append(t)
    if config.dense:
        block_area = max(min_area, config.block_min_region_fraction * grey.size)
        tol = 2 * config.ransac_threshold
        for t in dense_translations(grey, config, threads):
            if any(_same_copy(kept.matrix, t, tol) for kept in confirmed):
                continue  # the keypoints found this copy already
            refine(grey, t, config, threads)
            assert t.source_mask is not None and t.target_mask is not None
            assert t.strength is not None
            correlation = np.maximum(correlation, t.strength)
            region = t.source_mask | t.target_mask
            if (t.source_mask.sum() >= block_area and t.target_mask.sum() >= block_area
                    and float(t.strength[region].mean()) >= config.block_min_strength):
                confirmed.append(t)
        confirmed.sort(key=lambda t: -t.inliers)
    return CopyMoveAnalysis(scale, keypoints, pairs, confirmed, correlation)


def describe_transform(matrix: np.ndarray) -> dict[str, float]:
    """Rotation (degrees, counter-clockwise in the image as displayed), isotropic scale and
    shift of a (2, 3) affine, for readings."""
    lin = matrix[:, :2]
    # Image y points down, so a displayed counter-clockwise turn has a negative matrix angle.
    angle = -float(np.degrees(np.arctan2(lin[1, 0] - lin[0, 1], lin[0, 0] + lin[1, 1])))
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    return {
        "rotation_deg": angle,
        "scale": scale,
        "dx": float(matrix[0, 2]),
        "dy": float(matrix[1, 2]),
    }
