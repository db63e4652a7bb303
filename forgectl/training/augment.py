"""Training-time augmentations: resize, blur, re-compression (real JPEG) and DNA (MUN).

They run in ``Recipe.prepare`` on **numpy arrays, before tensors**: pixels (H, W, 3) uint8 and
the mask (H, W) bool, so the pixel operations are the very ones the synthetic histories use
(:mod:`forgectl.synth.histories`: libjpeg re-compression, area/linear/cubic resampling with a
mask that follows, Gaussian blur) and every augmentation is recorded as a replayable step.
:func:`augment` returns float32 pixels on the 0-255 scale because DNA's deviations are far below
one grey level and would vanish if rounded back to uint8.

Apply them *before* the fixed-size crop (a resize changes the image size; ``min_side`` keeps
the result large enough for the crop). Re-compression and resampling make the file's DCT data
stale: recipes that read JPEG coefficients must re-encode with
:func:`forgectl.intake.image_from_array` (``jpeg_quality``) instead of using these pixels
alongside the old coefficients.

DNA (Deviation Noise Augmentation, MUN, AAAI 2025): one uniform U(0, 1) field per pixel, shared
by the three channels, times a per-channel deviation: the ImageNet RGB mean minus the mean of
MUN's training data, ``(0.485 - 0.459, 0.456 - 0.448, 0.406 - 0.409)``. The official code draws
separate fields for forged and pristine pixels with the same factors, which is the same
distribution as one field. It adds the noise to images on the 0-255 scale, so the largest
change is 0.026 grey levels: negligible. ``scale`` exposes this: ``scale=1`` reproduces the
official code, ``scale=255`` applies the deviations as they would act on [0, 1] images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from forgectl.synth import histories
from forgectl.synth.histories import Step

#: Per-channel RGB deviation of DNA on the [0, 1] scale (ImageNet mean - MUN's data mean).
DNA_DEVIATION: tuple[float, float, float] = (0.485 - 0.459, 0.456 - 0.448, 0.406 - 0.409)


def dna(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 1.0,
    deviation: tuple[float, float, float] = DNA_DEVIATION,
) -> np.ndarray:
    """Deviation Noise Augmentation: ``image + scale * U(0, 1) * deviation`` per channel.

    Args:
        image: (H, W, 3) pixels on the 0-255 scale (any real dtype; uint8 is promoted).
        rng: source of the uniform field (one value per pixel, shared by the channels).
        scale: 1 as in the official code (negligible on 0-255), 255 for the [0, 1]-scale effect.
        deviation: per-channel factors (default :data:`DNA_DEVIATION`).

    Returns:
        (H, W, 3) float32, not clipped (the official code does not clip either).
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"dna: image must be (H, W, 3), got {arr.shape}")
    field = rng.random((arr.shape[0], arr.shape[1], 1), dtype=np.float32)
    factors = np.asarray(deviation, np.float32) * np.float32(scale)
    return arr.astype(np.float32) + field * factors


def recompress(rgb: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """(H, W, 3) uint8 -> the same pixels after a real libjpeg encode/decode at ``quality``."""
    return histories.jpeg_roundtrip(np.ascontiguousarray(rgb), int(quality), subsampling)


def resize(
    rgb: np.ndarray, mask: np.ndarray, scale: float, interpolation: str = "area"
) -> tuple[np.ndarray, np.ndarray]:
    """Resample pixels (H, W, 3) uint8 and mask (H, W) bool by ``scale`` onto one grid."""
    return histories.resample(rgb, mask.astype(bool), float(scale), interpolation)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 3) uint8 Gaussian-blurred with ``sigma`` pixels."""
    out, _ = histories.apply_step(
        rgb, np.zeros(rgb.shape[:2], bool), {"op": "blur", "sigma": float(sigma)}
    )
    return out


@dataclass
class AugmentConfig:
    """Probabilities and ranges of the training augmentations (plain data; ranges inclusive).

    Attributes:
        resize_prob, resize_scale: resampling by a uniform factor (area when shrinking,
            linear or cubic when enlarging).
        blur_prob, blur_sigma: Gaussian blur (pixels).
        recompress_prob, quality: a real JPEG re-compression at a uniform quality (4:2:0).
        dna_prob, dna_scale: DNA noise and its scale (see :func:`dna`).
        min_side: a resize never makes the short side smaller than this (the crop must fit).
    """

    resize_prob: float = 0.0
    resize_scale: tuple[float, float] = (0.6, 1.4)
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    recompress_prob: float = 0.0
    quality: tuple[int, int] = (50, 95)
    dna_prob: float = 0.0
    dna_scale: float = 1.0
    min_side: int = 0

    def __post_init__(self) -> None:
        for name in ("resize_prob", "blur_prob", "recompress_prob", "dna_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        lo, hi = self.quality
        if not 1 <= lo <= hi <= 100:
            raise ValueError("quality must satisfy 1 <= low <= high <= 100")
        if not 0 < self.resize_scale[0] <= self.resize_scale[1]:
            raise ValueError("resize_scale must satisfy 0 < low <= high")

    def to_dict(self) -> dict[str, Any]:
        return histories._plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AugmentConfig:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in (data or {}).items()}
        return cls(**values)


def plan(rng: np.random.Generator, cfg: AugmentConfig, shape: tuple[int, int]) -> list[Step]:
    """The pixel steps of one augmentation (resize, blur, re-compression, in that order).

    Args:
        shape: (H, W) of the image, so a resize keeps the short side >= ``cfg.min_side``.

    Returns:
        Replayable steps for :func:`forgectl.synth.histories.apply_steps`.
    """
    steps: list[Step] = []
    if rng.random() < cfg.resize_prob:
        scale = float(rng.uniform(*cfg.resize_scale))
        short = min(shape)
        if cfg.min_side and short * scale < cfg.min_side:
            scale = cfg.min_side / short
        if abs(scale - 1.0) > 1e-3:
            interp = "area" if scale < 1.0 else str(rng.choice(["linear", "cubic"]))
            steps.append({"op": "resize", "scale": round(scale, 4), "interpolation": interp})
    if rng.random() < cfg.blur_prob:
        steps.append({"op": "blur", "sigma": round(float(rng.uniform(*cfg.blur_sigma)), 3)})
    if rng.random() < cfg.recompress_prob:
        quality = int(rng.integers(cfg.quality[0], cfg.quality[1] + 1))
        steps.append({"op": "jpeg", "quality": quality, "subsampling": "4:2:0"})
    return steps


def augment(
    rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, np.ndarray, list[Step]]:
    """Draw and apply one augmentation.

    Args:
        rgb: (H, W, 3) uint8. mask: (H, W), non-zero = manipulated.
        rng: the sample's generator (the trainer seeds one per sample index).

    Returns:
        ``(pixels, mask, steps)``: pixels (H', W', 3) float32 on the 0-255 scale, mask
        (H', W') bool on the same grid, and the steps taken (DNA recorded as
        ``{"op": "dna", "scale": s}``).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"augment: rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"augment: mask {mask.shape} does not match rgb {rgb.shape[:2]}")
    steps = plan(rng, cfg, rgb.shape[:2])
    out, out_mask = histories.apply_steps(rgb, mask.astype(bool), steps)
    pixels = out.astype(np.float32)
    if rng.random() < cfg.dna_prob:
        pixels = dna(pixels, rng, cfg.dna_scale)
        steps.append({"op": "dna", "scale": cfg.dna_scale})
    return pixels, out_mask, steps
