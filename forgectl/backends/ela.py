"""Error level analysis (ELA): re-save as JPEG and map where the image changes most.

Regions that were compressed fewer times than their surroundings (a paste into a JPEG that was
saved again) lose more at one more compression. ELA is a classical aid for the eye, blind to
careful forgeries and easily confused by texture and edges; the heatmap is relative to the
image's own typical error level, so a uniformly processed image stays cool.
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np

from forgectl.analysis.threads import opencv_threads
from forgectl.backends.base import Backend, MethodSpec, Result, compute_threads
from forgectl.backends.options import Option, require
from forgectl.intake import ForensicImage, encode_jpeg


def error_level(rgb: np.ndarray, quality: int = 90) -> np.ndarray:
    """Per-pixel error level.

    Args:
        rgb: (H, W, 3) uint8.
        quality: JPEG quality of the re-save.

    Returns:
        (H, W) float32: max over channels of |rgb - resaved(rgb)|, in grey levels.
    """
    data = np.frombuffer(encode_jpeg(rgb, quality, subsampling=0), np.uint8)
    resaved = cv2.imdecode(data, cv2.IMREAD_COLOR_RGB)
    # OpenCV on uint8 (exact |a - b|, then the channel maximum): numpy's int16 copies and its
    # max over a length-3 axis took most of a second on 12 MP.
    diff = cv2.split(cv2.absdiff(np.ascontiguousarray(rgb), resaved))
    return cv2.max(cv2.max(diff[0], diff[1]), diff[2]).astype(np.float32)


class ElaBackend(Backend):
    """ELA with a heatmap relative to the image's median smoothed error level (options: see
    ``OPTIONS``)."""

    spec = MethodSpec(
        name="ela",
        summary="Error level analysis: re-save as JPEG, map regions with unusual error levels",
        kind="classical",
        uses_jpeg=True,
        paper="N. Krawetz, 'A Picture's Worth...', Black Hat 2007",
    )

    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("quality", 90, "JPEG quality of the re-save", minimum=1, maximum=100),
        Option("ratio", 4.0, "error level relative to the image's median that maps to heat 1.0 "
               "(above 1)", minimum=1.0),
    )

    def check_options(self) -> None:
        require(self.options["ratio"] > 1.0, "ela option ratio must be above 1")

    def analyze(self, image: ForensicImage) -> Result:
        quality: int = self.options["quality"]
        ratio: float = self.options["ratio"]
        err = error_level(image.rgb, quality)
        # Average over about a JPEG block so single-pixel edge errors do not dominate.
        sigma = max(2.0, min(image.height, image.width) / 200.0)
        with opencv_threads(compute_threads()):  # a 121-tap kernel on 12 MP: worth 2 cores
            smooth = cv2.GaussianBlur(err, (0, 0), sigma)
        typical = float(np.median(smooth)) + 0.5
        rel = smooth / typical
        heat = np.clip((rel - 1.0) / (ratio - 1.0), 0.0, 1.0)
        return Result.from_heatmap(
            heat,
            self.threshold,
            maps={"error_level": np.clip(err / 32.0, 0.0, 1.0)},
            facts={"resave_quality": quality, "median_error": round(typical - 0.5, 3)},
        )
