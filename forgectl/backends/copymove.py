"""Copy-move detection with SIFT keypoints (Amerini et al. 2011) and correlation refinement.

A region copied elsewhere in the same image keeps its local appearance, so keypoints in the
source and in the copy have near-identical descriptors. The method matches every keypoint
against all others (generalized 2NN), clusters the matches, fits an affine transform per
cluster with RANSAC, and marks both regions where the image correlates with itself under that
transform. It stays silent (score 0, empty mask) unless a transform has at least
``min_inliers`` (default 5) distinct inlier keypoints and its regions are confirmed by the
correlation. Dense block matching (``dense``, on by default) adds translated copies of regions
too smooth for keypoints, under stricter confirmation. Blind to copies of flat regions and to
content brought in from another image; genuinely repeated structures (facade windows, tiles)
are duplicates too and get flagged.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from forgectl.analysis.copymove import (
    CopyMoveAnalysis,
    CopyMoveConfig,
    CopyTransform,
    analyse,
    describe_transform,
)
from forgectl.backends.base import Backend, MethodSpec, Result, compute_threads
from forgectl.backends.options import Option, require
from forgectl.intake import ForensicImage

#: Inliers above ``min_inliers`` at which the score reaches 1 - 1/e (about 0.63).
SCORE_INLIER_SCALE = 6.0


def inlier_score(inliers: int, min_inliers: int) -> float:
    """Image score from the strongest copy's inlier count: 0 below ``min_inliers``, then
    rising towards 1 (about 0.15 at the minimum, 0.63 at six more)."""
    if inliers < min_inliers:
        return 0.0
    return float(1.0 - np.exp(-(inliers - min_inliers + 1) / SCORE_INLIER_SCALE))


def _box(mask: np.ndarray, scale: float) -> list[int]:
    """``[x0, y0, x1, y1]`` bounding box (stored grid, exclusive end) of a working-grid mask."""
    ys, xs = np.nonzero(mask)
    return [
        int(xs.min() / scale),
        int(ys.min() / scale),
        int(np.ceil((xs.max() + 1) / scale)),
        int(np.ceil((ys.max() + 1) / scale)),
    ]


def transform_facts(t: CopyTransform, scale: float) -> dict[str, Any]:
    """JSON-ready description of one copy on the stored grid."""
    matrix = t.matrix.copy()
    matrix[:, 2] /= scale  # same linear part; the shift is in stored-grid pixels
    shape = describe_transform(matrix)
    shift = (t.target_points.mean(axis=0) - t.source_points.mean(axis=0)) / scale
    assert t.source_mask is not None and t.target_mask is not None
    return {
        "matrix": [[round(float(v), 4) for v in row] for row in matrix],
        "inliers": t.inliers,
        "found_by": t.origin,
        "rotation_deg": round(shape["rotation_deg"], 2),
        "scale": round(shape["scale"], 4),
        "shift_px": [round(float(shift[0]), 1), round(float(shift[1]), 1)],
        "source_box": _box(t.source_mask, scale),
        "target_box": _box(t.target_mask, scale),
    }


def _to_stored(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if plane.shape == shape:
        return plane
    if not plane.any():  # nothing found (most images): zeros, without resizing zeros
        return np.zeros(shape, np.float32)
    return cv2.resize(plane, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _match_map(found: CopyMoveAnalysis, shape: tuple[int, int]) -> np.ndarray:
    """Discs at matched keypoints (0.4) and at inliers of confirmed copies (1.0)."""
    out = np.zeros(shape, np.float32)
    radius = max(2, round(0.004 * max(shape)))
    pts = found.keypoints.points / found.scale
    for i in np.unique(found.pairs):
        cv2.circle(out, (int(pts[i, 0]), int(pts[i, 1])), radius, 0.4, -1)
    for t in found.transforms:
        for p in np.concatenate([t.source_points, t.target_points]) / found.scale:
            cv2.circle(out, (int(p[0]), int(p[1])), radius, 1.0, -1)
    return out


class CopyMoveBackend(Backend):
    """Keypoint copy-move detector; the heatmap marks both the source and the copy.

    Heatmap: 0 outside the refined regions; inside, ``0.5 + 0.5 * c`` where ``c`` rescales the
    local correlation from the correlation threshold (0) to 1, so the default threshold 0.5
    gives the refined regions and higher thresholds keep only the best-matching parts.
    Options: the fields of :class:`~forgectl.analysis.copymove.CopyMoveConfig` (e.g.
    ``min_inliers``, ``g2nn_ratio``, ``max_side``), with the same defaults.
    """

    spec = MethodSpec(
        name="copymove",
        summary="Copy-move: SIFT g2NN matching + affine RANSAC, dense blocks for "
        "translations; marks source and copy",
        kind="classical",
        paper="I. Amerini et al., 'A SIFT-based forensic method for copy-move attack detection "
        "and transformation recovery', IEEE TIFS 2011",
    )

    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("max_side", 1600, "longer side of the working grid; larger images are "
               "downscaled", minimum=64),
        Option("max_keypoints", 6000, "SIFT keeps at most this many keypoints", minimum=1),
        Option("contrast_thresholds", (0.02, 0.005), "SIFT contrast thresholds tried in "
               "order while too few keypoints are found", minimum=0.0, maximum=1.0),
        Option("min_keypoint_density", 2e-3, "keypoints per pixel below which the next "
               "contrast threshold is tried", minimum=0.0),
        Option("neighbours", 12, "descriptor neighbours examined per keypoint (g2NN)",
               minimum=1),
        Option("g2nn_ratio", 0.5, "distance ratio d_i / d_(i+1) below which neighbour i "
               "matches", minimum=0.0, maximum=1.0),
        Option("min_match_distance", 12.0, "matched keypoints closer than this (pixels) are "
               "ignored", minimum=0.0),
        Option("max_matches", 3000, "matches kept (closest descriptors first) before "
               "clustering", minimum=1),
        Option("cluster_cutoff", 0.08, "clustering cutoff as a fraction of the working grid's "
               "longer side", minimum=0.0),
        Option("cluster_cutoff_min", 30.0, "lower bound of the clustering cutoff, pixels",
               minimum=0.0),
        Option("min_inliers", 5, "distinct inlier keypoints a copy needs to be reported",
               minimum=3),
        Option("ransac_threshold", 3.0, "RANSAC reprojection tolerance, pixels (above 0)",
               minimum=0.0),
        Option("max_transforms_per_cluster", 3, "copies extracted from one cluster "
               "(sequential RANSAC)", minimum=1),
        Option("min_scale", 0.5, "smallest accepted scaling of a copy (above 0)", minimum=0.0),
        Option("max_scale", 2.0, "largest accepted scaling of a copy", minimum=0.0),
        Option("correlation_sigma", 2.0, "Gaussian window (sigma) of the local correlation "
               "(above 0)", minimum=0.0),
        Option("correlation_threshold", 0.6, "local correlation above which a pixel is "
               "duplicated (below 1)", minimum=0.0, maximum=1.0),
        Option("variance_floor", 4.0, "grey-level variance added to both windows so flat "
               "areas stay near 0", minimum=0.0),
        Option("min_region_fraction", 2e-4, "copies whose refined regions cover less of the "
               "image are dropped", minimum=0.0, maximum=1.0),
        Option("dense", True, "also match dense blocks for translated copies of smooth "
               "regions (more copies found, more false alarms: docs/methods/copymove.md)"),
        Option("block_size", 16, "dense: side of a matched block (a multiple of 4)", minimum=8),
        Option("block_stride", 2, "dense: step between blocks", minimum=1),
        Option("max_blocks", 10000, "dense: most blocks matched (the stride grows)", minimum=100),
        Option("block_min_std", 3.0, "dense: flatter blocks (grey-level std) are skipped",
               minimum=0.0),
        Option("block_tolerance", 1.5, "dense: largest RMS difference of matching blocks' "
               "cell means (grey levels)", minimum=0.0),
        Option("block_neighbours", 8, "dense: nearest blocks examined per block", minimum=1),
        Option("min_block_votes", 20, "dense: blocks that must agree on a shift", minimum=3),
        Option("block_min_shift", 32.0, "dense: shortest shift a block match votes for, "
               "pixels", minimum=0.0),
        Option("max_dense_copies", 3, "dense: candidate shifts tried", minimum=1),
        Option("block_max_side", 512, "dense: longer side of the grid blocks are matched on",
               minimum=64),
        Option("block_min_strength", 0.8, "dense: mean correlation a block-found copy's "
               "regions need", minimum=0.0, maximum=1.0),
        Option("block_min_region_fraction", 5e-3, "dense: fraction of the image each region "
               "of a block-found copy must cover", minimum=0.0, maximum=1.0),
    )

    def check_options(self) -> None:
        opt = self.options
        for name in ("ransac_threshold", "correlation_sigma", "min_scale"):
            require(opt[name] > 0, f"copymove option {name} must be above 0")
        require(opt["min_scale"] <= opt["max_scale"], "copymove needs min_scale <= max_scale")
        require(opt["correlation_threshold"] < 1.0,
                "copymove option correlation_threshold must be below 1")
        require(opt["block_size"] % 4 == 0, "copymove option block_size must be a multiple of 4")

    @property
    def config(self) -> CopyMoveConfig:
        """The detector's settings: every option, as a :class:`CopyMoveConfig`."""
        return CopyMoveConfig(**self.options)

    def analyze(self, image: ForensicImage) -> Result:
        config = self.config
        found = analyse(image.rgb, config, threads=compute_threads())
        work_shape = found.correlation.shape
        heat = np.zeros(work_shape, np.float32)
        thr = config.correlation_threshold
        for t in found.transforms:
            assert t.source_mask is not None and t.target_mask is not None
            assert t.strength is not None
            region = t.source_mask | t.target_mask
            level = 0.5 + 0.5 * np.clip((t.strength - thr) / (1.0 - thr), 0.0, 1.0)
            heat = np.maximum(heat, np.where(region, level, 0.0).astype(np.float32))
        shape = (image.height, image.width)
        best = found.transforms[0].inliers if found.transforms else 0
        facts = {
            "keypoints": len(found.keypoints.points),
            "sift_contrast_threshold": found.keypoints.contrast_threshold,
            "matches": len(found.pairs),
            "working_scale": round(found.scale, 4),
            "min_inliers": config.min_inliers,
            "transforms": [transform_facts(t, found.scale) for t in found.transforms],
        }
        note = "" if found.transforms else "no consistent copy found"
        return Result.from_heatmap(
            _to_stored(heat, shape),
            self.threshold,
            score=inlier_score(best, config.min_inliers),
            note=note,
            maps={
                "correlation": _to_stored(found.correlation, shape),
                "matches": _match_map(found, shape),
            },
            facts=facts,
        )

    def reading(self, result: Result) -> str:
        facts = result.facts
        copies = facts.get("transforms") or []
        if not copies:
            return (
                f"no duplicated region: {facts.get('matches', 0)} keypoint matches among "
                f"{facts.get('keypoints', 0)} keypoints, none forming a consistent copy of at "
                f"least {facts.get('min_inliers', 0)} inlier keypoints"
            )
        top = copies[0]
        dx, dy = top["shift_px"]
        changes = []
        if abs(top["rotation_deg"]) >= 2.0:
            changes.append(f"a rotation of {top['rotation_deg']:.0f} degrees")
        if abs(top["scale"] - 1.0) >= 0.03:
            changes.append(f"a scaling by {top['scale']:.2f}")
        shift = f"({dx:.0f}, {dy:.0f}) px"
        how = (
            f"{', '.join(changes)} and a shift of {shift}"
            if changes
            else f"a translation of {shift}"
        )
        more = f"; {len(copies) - 1} more copied pair(s) found" if len(copies) > 1 else ""
        support = ("matching blocks" if top.get("found_by") == "blocks"
                   else "inlier keypoints")
        return f"2 regions match each other under {how} ({top['inliers']} {support}){more}"
