"""Global pixel disturbances, once: the formulas the benchmark's perturbations, the synthetic
histories and the restoration code share.

Pixels ``I`` in [0, 1] where stated, else grey levels 0..255; results are rounded to 8 bits.
``brightness``: ``I' = clip(I + alpha, 0, 1)``; ``contrast``: ``I' = clip(beta * I, 0, 1)``
(as in ReConWave-Net); ``clipped_values`` marks the values such a disturbance lost.
"""

from __future__ import annotations

import numpy as np


def _to_unit(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) / 255.0


def _from_unit(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def brightness(rgb: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W, 3) uint8 -> uint8 with ``I' = clip(I + alpha)``, I in [0, 1]."""
    return _from_unit(np.clip(_to_unit(rgb) + alpha, 0.0, 1.0))


def contrast(rgb: np.ndarray, beta: float) -> np.ndarray:
    """(H, W, 3) uint8 -> uint8 with ``I' = clip(beta * I)``, I in [0, 1]."""
    return _from_unit(np.clip(_to_unit(rgb) * beta, 0.0, 1.0))


def clipped_values(
    rgb: np.ndarray, kind: str, alpha: float | None, beta: float | None
) -> np.ndarray:
    """(H, W, 3) bool: the values a disturbance clipped, whose clean value is lost.

    At 255 after ``alpha > 0`` or ``beta > 1``, at 0 after ``alpha < 0``; none after ``beta <=
    1`` or ``kind == "none"``. Only these need ReConWave-Net's learned restorer
    (:func:`forgectl.restore.exact_inverse`), so its training loss weighs them on their own
    too (``recipes/reconwave.py``).
    """
    if kind == "brightness" and alpha:
        return rgb == (255 if alpha > 0 else 0)
    if kind == "contrast" and beta and beta > 1:
        return rgb == 255
    return np.zeros(rgb.shape, bool)


def gaussian_blur(rgb: np.ndarray, kernel: int) -> np.ndarray:
    """(H, W, 3) uint8 blurred with a ``kernel x kernel`` Gaussian (sigma derived from size)."""
    import cv2

    k = int(kernel)
    if k <= 1:
        return rgb.copy()
    return cv2.GaussianBlur(rgb, (k, k), 0, borderType=cv2.BORDER_REFLECT_101)


def gaussian_noise(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 plus N(0, sigma^2) grey levels, rounded and clipped."""
    rng = np.random.default_rng(seed)
    noisy = rgb.astype(np.float64) + rng.normal(0.0, float(sigma), rgb.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def resize_pair(
    rgb: np.ndarray, mask: np.ndarray | None, scale: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize pixels and mask by ``scale`` to the same grid.

    Args:
        rgb: (H, W, 3) uint8. mask: (H, W) bool or None. scale: > 0.

    Returns:
        ``(rgb', mask')`` of size ``(round(scale*H), round(scale*W))`` (at least 1x1).
    """
    import cv2

    h, w = rgb.shape[:2]
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    out = cv2.resize(rgb, (new_w, new_h), interpolation=interp)
    out_mask = None
    if mask is not None:
        # INTER_NEAREST_EXACT samples at pixel centres (plain INTER_NEAREST is shifted by half a
        # source pixel), so the mask follows the same geometry as the area/bilinear pixels.
        out_mask = cv2.resize(
            mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST_EXACT
        ).astype(bool)
    return out, out_mask
