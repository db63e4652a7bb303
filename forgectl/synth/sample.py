"""What the synthetic-forgery engine makes: one :class:`SynthSample`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forgectl.intake import ForensicImage


@dataclass
class SynthSample:
    """One synthetic training or test sample, forged or authentic.

    Attributes:
        image: the final file decoded by :func:`forgectl.intake.image_from_bytes`: pixels (H, W, 3)
            uint8 and, when the history ends in JPEG, the real DCT coefficients and tables.
        file_bytes: the final encoded file (real JPEG bytes when the history ends in JPEG).
        file_ext: ``".jpg"`` or ``".png"``.
        mask: (H, W) uint8, 1 = manipulated, 0 = pristine (all zeros for authentic samples).
        boxes: (N, 4) float32 ``x0, y0, x1, y1`` (pixels, exclusive end) of the mask's
            connected components; (0, 4) when the mask is empty.
        kind: ``"splice"``, ``"copymove"``, ``"removal"`` or ``"authentic"``.
        history: ordered list of processing steps, each a JSON-ready dict (``{"op": "jpeg",
            "quality": 85, "grid_shift": [0, 0]}``, ``{"op": "resize", "scale": 0.8}``, ...).
        disturbance: the global brightness/contrast disturbance applied last, as in
            ReConWave-Net: ``{"type": "none"|"brightness"|"contrast", "alpha": float|None,
            "beta": float|None}``; ``clean_rgb`` holds the image before it.
        clean_rgb: (H, W, 3) uint8 image before the disturbance (None when none was applied).
        source: corpus path(s) the sample was made from (for the data recipe).
        seed: the seed that reproduces this sample.
    """

    image: ForensicImage
    file_bytes: bytes
    file_ext: str
    mask: np.ndarray
    boxes: np.ndarray
    kind: str
    history: list[dict[str, Any]] = field(default_factory=list)
    disturbance: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    clean_rgb: np.ndarray | None = None
    source: list[str] = field(default_factory=list)
    seed: int = 0
