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

from typing import ClassVar

import numpy as np

from forgectl.analysis.jpeg import blocks_to_pixels, grid_periodicity, luma
from forgectl.backends.base import Backend, MethodSpec, Result
from forgectl.backends.options import Option, require
from forgectl.intake import ForensicImage

#: Median z over the image above which a grid counts as the image's own (visible everywhere).
_VISIBLE_GRID_Z = 2.0

#: DCT positions used: DC and the three lowest AC keep most of the periodicity after a resave.
POSITIONS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))


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
        evidence = grid_periodicity(luma(image.rgb), list(POSITIONS), steps, window)
        z = _robust_z(evidence)  # (CH, CW, 64)

        # The image's dominant grid and any origin present over most of it are the host's
        # history, not a local anomaly: discount each origin by its typical z over the image.
        typical = np.median(z.reshape(-1, 64), axis=0)
        dominant = int(np.argmax(typical))
        local = z - np.maximum(typical, 0.0)[None, None, :]
        excluded = typical > self.options["ubiquitous_z"]
        excluded[[0, dominant]] = True
        local[:, :, excluded] = -np.inf
        if excluded.all():  # every origin is image-wide: nothing can stand out locally
            local[:] = 0.0
        anomaly = local.max(axis=2)
        origin = local.argmax(axis=2)

        z_low, z_high = self.options["z_low"], self.options["z_high"]
        cells = np.clip((anomaly - z_low) / (z_high - z_low), 0.0, 1.0).astype(np.float32)
        heat = blocks_to_pixels(cells, h, w)
        flagged = cells >= self.threshold
        offsets = np.bincount(origin[flagged], minlength=64) if flagged.any() else None
        fraction = float((heat >= self.threshold).mean())
        minority = float(np.clip((1.0 - fraction) / 0.5, 0.0, 1.0))
        # 98th percentile: a region must cover about 2% of the image to carry the score.
        score = float(np.percentile(heat, 98)) * minority
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


def _robust_z(evidence: np.ndarray) -> np.ndarray:
    """z-score of each grid origin against the 64 origins of the same window (median / MAD)."""
    centre = np.median(evidence, axis=2, keepdims=True)
    spread = 1.4826 * np.median(np.abs(evidence - centre), axis=2, keepdims=True)
    return (evidence - centre) / (spread + 1e-3)
