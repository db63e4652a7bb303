"""Copy-move detection with SIFT keypoints (Amerini et al. 2011) and correlation refinement.

A region copied elsewhere in the same image keeps its local appearance, so keypoints in the
source and in the copy have near-identical descriptors. The method matches every keypoint
against all others (generalized 2NN), clusters the matches, fits an affine transform per
cluster with RANSAC, and marks both regions where the image correlates with itself under that
transform. It stays silent (score 0, empty mask) unless a transform has at least
``min_inliers`` (default 5) distinct inlier keypoints and its regions are confirmed by the
correlation. Blind to copies of flat or low-texture regions (no keypoints) and to content
brought in from another image; genuinely repeated structures (facade windows, tiles) are
duplicates too and get flagged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import cv2
import numpy as np

from forgectl.analysis.copymove import (
    CopyMoveAnalysis,
    CopyMoveConfig,
    CopyTransform,
    analyse,
    describe_transform,
)
from forgectl.backends.base import Backend, MethodSpec, Result
from forgectl.errors import UsageError
from forgectl.intake import ForensicImage

#: Inliers above ``min_inliers`` at which the score reaches 1 - 1/e (about 0.63).
SCORE_INLIER_SCALE = 6.0


def config_from_options(options: dict[str, Any]) -> CopyMoveConfig:
    """Build a :class:`CopyMoveConfig` from ``--param KEY=VALUE`` options (field names)."""
    defaults = CopyMoveConfig()
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(CopyMoveConfig)}
    changes: dict[str, Any] = {}
    for key, value in options.items():
        if key not in fields:
            known = ", ".join(fields)
            raise UsageError(f"copymove has no option {key!r} (options: {known})")
        default = fields[key]
        try:
            if isinstance(default, tuple):
                items = value if isinstance(value, list | tuple) else [value]
                changes[key] = tuple(float(v) for v in items)
            else:
                changes[key] = type(default)(value)
        except (TypeError, ValueError):
            raise UsageError(f"copymove option {key}={value!r} is not a valid number") from None
    return dataclasses.replace(defaults, **changes)


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
        "rotation_deg": round(shape["rotation_deg"], 2),
        "scale": round(shape["scale"], 4),
        "shift_px": [round(float(shift[0]), 1), round(float(shift[1]), 1)],
        "source_box": _box(t.source_mask, scale),
        "target_box": _box(t.target_mask, scale),
    }


def _to_stored(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if plane.shape == shape:
        return plane
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
    Options: any :class:`~forgectl.analysis.copymove.CopyMoveConfig` field (e.g.
    ``min_inliers``, ``g2nn_ratio``, ``max_side``).
    """

    spec = MethodSpec(
        name="copymove",
        summary="Copy-move: SIFT g2NN matching + affine RANSAC; marks source and copy",
        kind="classical",
        paper="I. Amerini et al., 'A SIFT-based forensic method for copy-move attack detection "
        "and transformation recovery', IEEE TIFS 2011",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = config_from_options(self.options)

    def analyze(self, image: ForensicImage) -> Result:
        config = self.config
        found = analyse(image.rgb, config)
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
        return f"2 regions match each other under {how} ({top['inliers']} inlier keypoints){more}"
