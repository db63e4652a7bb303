"""JPEG ghosts (Farid 2009): find regions whose JPEG history differs from the rest of the image.

The image is recompressed at a range of qualities; for each window of the 8 x 8 grid (16 x 16
pixels as in the paper on images up to ~400 pixels, growing with larger ones) the squared
recompression error is tracked across quality and normalised per
quality against the whole image. A window whose error curve dips at a quality where the rest of
the image does not (a *ghost*) holds content saved at that quality before the image's last
save. The converse is flagged too: when the image as a whole carries a ghost of an earlier save
(a host photo saved twice), a pasted region that lacks it stands out by a bump at that quality.
The heatmap is the size of the dip or bump.

Works on any image (a PNG can hold a pasted JPEG region); for JPEG files the file's own quality
is taken as the image's last quality. Ghosts appear only for content saved at a lower quality
than the final one, and only on that content's own 8 x 8 grid: by default the file's grid is
searched (fast), ``phases=all`` searches all 64 grid phases (64 x the time) for pastes that
were moved off the grid.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from forgectl.analysis.ghost import (
    DEFAULT_QUALITIES,
    PIL_SUBSAMPLING,
    dominant_quality,
    error_stack,
    phase_maps,
)
from forgectl.analysis.noise import BlockGrid, extent_weighted_score, grid_to_pixels
from forgectl.backends.base import Backend, MethodSpec, Result, compute_threads
from forgectl.backends.options import Option, require
from forgectl.intake import ForensicImage

#: Fraction of the image that must be flagged for the score to reach the ghost's strength.
_EXTENT_FOR_FULL_SCORE = 0.02

#: Auto window: about this fraction of the short side, never below the paper's 16 x 16 pixels.
_WINDOW_PER_SIDE = 1 / 24

_ALL_PHASES = [(dy, dx) for dy in range(8) for dx in range(8)]


def _window_blocks(requested: int, height: int, width: int) -> int:
    """Window side in blocks. Farid's 16 x 16 pixels suit images of a few hundred pixels; on a
    12-megapixel photo such windows hold too few pixels for a stable error curve and the map
    turns to speckle, so by default the window grows with the image."""
    if requested > 0:
        return requested
    return max(2, int(min(height, width) * _WINDOW_PER_SIDE) // 8)


def _mode(values: list[np.ndarray]) -> int | None:
    """Most frequent quality among flagged windows, or None when nothing was flagged."""
    flat = np.concatenate(values) if values else np.zeros(0, np.int32)
    if flat.size == 0:
        return None
    found, counts = np.unique(flat, return_counts=True)
    return int(found[np.argmax(counts)])


class GhostBackend(Backend):
    """JPEG ghost map (options: see ``OPTIONS``)."""

    spec = MethodSpec(
        name="ghost",
        summary="JPEG ghosts: regions whose recompression error dips (or not) at another quality",
        kind="classical",
        uses_jpeg=True,
        paper="H. Farid, 'Exposing Digital Forgeries from JPEG Ghosts', IEEE TIFS 4(1), 2009",
    )

    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("qualities", DEFAULT_QUALITIES, "recompression qualities (at least 3 distinct)",
               minimum=1, maximum=100),
        Option("window", 0, "window side in 8x8 blocks; 0 = auto (grows with the image)",
               minimum=0),
        Option("channels", "luma", "error of luma (Y) or rgb (mean of R, G, B as in the paper)",
               choices=("luma", "rgb")),
        Option("floor", 0.25, "squared grey levels added to the errors before the log (above 0)",
               minimum=0.0),
        Option("informative", 4.0, "windows whose largest error is below this x floor are flat",
               minimum=0.0),
        Option("prominence", 0.8, "dip or bump height (log units) that maps to heat 1.0 "
               "(above 0)", minimum=0.0),
        Option("phases", "aligned", "aligned: the file's 8x8 grid; all: the 64 grid phases "
               "(64 x the time)", choices=("aligned", "all")),
    )

    def check_options(self) -> None:
        opt = self.options
        require(len(set(opt["qualities"])) >= 3,
                "ghost option qualities needs at least 3 distinct values in 1..100")
        require(opt["floor"] > 0 and opt["prominence"] > 0,
                "ghost options floor and prominence must be > 0")

    def analyze(self, image: ForensicImage) -> Result:
        cfg = self.options
        qualities: tuple[int, ...] = tuple(sorted(set(cfg["qualities"])))
        shape = (image.height, image.width)
        window = _window_blocks(cfg["window"], *shape)
        if min(shape) < 8 * (window + 1):
            return Result.not_applicable(
                image, f"ghost needs at least {8 * (window + 1)} pixels a side"
            )
        jpeg = image.jpeg
        subsampling = PIL_SUBSAMPLING.get(jpeg.subsampling, 2) if jpeg is not None else 2
        phases = _ALL_PHASES if cfg["phases"] == "all" else [(0, 0)]
        threads = compute_threads()

        heat = np.zeros(shape, np.float32)
        # The last save's quality: the file's own table when there is one, else where the
        # image's median recompression error bottoms out (on the origin grid, phase 0).
        dominant = jpeg.quality if jpeg is not None else None
        measured: int | None = None
        image_ghost: int | None = None
        informative = 0.0
        dip_q: list[np.ndarray] = []
        bump_q: list[np.ndarray] = []
        hot_by_phase: dict[tuple[int, int], int] = {}
        for phase in phases:
            errors = error_stack(
                image.rgb, qualities, subsampling, phase, cfg["channels"], threads=threads
            )
            if measured is None:
                measured = dominant_quality(errors, qualities)
                dominant = measured if dominant is None else dominant
            maps = phase_maps(
                errors,
                qualities,
                below=int(dominant),
                window=window,
                floor=cfg["floor"],
                informative_factor=cfg["informative"],
            )
            if phase == (0, 0):
                # The file's own grid: where the image's earlier saves left their ghost.
                image_ghost = maps.image_ghost
                informative = float(maps.informative.mean())
            dip_heat = np.clip(maps.dip / cfg["prominence"], 0.0, 1.0)
            bump_heat = np.clip(maps.bump / cfg["prominence"], 0.0, 1.0)
            block_heat = np.maximum(dip_heat, bump_heat)
            hot = block_heat >= self.threshold
            if hot.any():
                dip_q.append(maps.dip_quality[dip_heat >= self.threshold])
                bump_q.append(maps.bump_quality[bump_heat >= self.threshold])
                hot_by_phase[phase] = int(hot.sum())
            grid = BlockGrid(8 * window, 8, *block_heat.shape)
            np.maximum(heat, grid_to_pixels(block_heat, grid, 1, shape, origin=phase), out=heat)

        # Scored on the combined map (every 4th pixel is plenty): a ghost shows on one phase only.
        score = extent_weighted_score(heat[::4, ::4], self.threshold, _EXTENT_FOR_FULL_SCORE)
        facts = {
            "dominant_quality": int(dominant) if dominant is not None else None,
            "dominant_source": "jpeg_table" if jpeg is not None else "recompression",
            "recompression_minimum_quality": measured,
            "image_ghost_quality": image_ghost,
            "ghost_quality": _mode(dip_q),
            "missing_ghost_quality": _mode(bump_q),
            "informative_fraction": round(informative, 4),
            "qualities": list(qualities),
            "window_pixels": 8 * window,
            "grid_phases_searched": len(phases),
            "hottest_phase": list(max(hot_by_phase, key=hot_by_phase.__getitem__))
            if hot_by_phase
            else None,
        }
        return Result.from_heatmap(heat, self.threshold, score=score, facts=facts)

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note or "not applicable to this input"
        facts = result.facts
        dom, ghost, missing = (
            facts.get("dominant_quality"),
            facts.get("ghost_quality"),
            facts.get("missing_ghost_quality"),
        )
        if ghost is None and missing is None:
            return f"no region recompresses unlike the rest of the image (last quality ~{dom})"
        parts = []
        if ghost is not None:
            parts.append(f"recompress best near quality {ghost} (saved there before)")
        if missing is not None:
            parts.append(f"lack the image's own minimum near quality {missing}")
        return (
            f"{100 * result.tampered_fraction:.1f}% of the image is flagged: regions that "
            + " or ".join(parts)
            + f"; last quality ~{dom}"
        )
