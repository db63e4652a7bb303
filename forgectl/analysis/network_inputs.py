"""Network inputs made in numpy: pixel normalization and JPEG DCT planes.

Shared by a method's backend (inference, also on the torch-free ONNX path) and its training
recipe, so both feed the network the very same arrays.
"""

from __future__ import annotations

import numpy as np

from forgectl.intake import ForensicImage


def normalize_rgb(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 ``(rgb / 255 - mean) / std``.

    Through a 256-entry table per channel, computed with the very float32 operations the
    direct formula uses, so the values are identical and each pixel costs one lookup.
    """
    levels = np.arange(256, dtype=np.float32) / 255.0
    table = (levels[None, :] - np.asarray(mean, np.float32)[:, None]) / np.asarray(
        std, np.float32)[:, None]  # (3, 256)
    rgb = np.asarray(rgb, np.uint8)
    out = np.empty((3, *rgb.shape[:2]), np.float32)
    for c in range(3):
        np.take(table[c], rgb[..., c], out=out[c])
    return out


def dct_planes(image: ForensicImage, clip: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(indices, qtable, has_jpeg)`` for an image.

    indices: (8 * ceil(H / 8), 8 * ceil(W / 8)) uint8 ``min(|Y coefficient|, clip)`` on the
    image's own grid; qtable: (8, 8) int64 Y steps. Without JPEG data both are placeholders
    (zeros, ones) and ``has_jpeg`` is False.
    """
    bh, bw = -(-image.height // 8), -(-image.width // 8)
    if image.jpeg is None:
        return np.zeros((8 * bh, 8 * bw), np.uint8), np.ones((8, 8), np.int64), False
    coef = image.jpeg.y_coefficients(image.height, image.width)
    # = nets.frequency.coefficient_indices in numpy: the ONNX runtime path must not import torch.
    # int32 as jpegio reads them (|c| <= 2048 by the standard): half the traffic of int64.
    idx = np.abs(np.asarray(coef, np.int32))
    idx = np.minimum(idx, clip, out=idx).astype(np.uint8)
    return idx, image.jpeg.y_quant.astype(np.int64), True


def flip_blocks(plane: np.ndarray, axis: int) -> np.ndarray:
    """Mirror a coefficient plane's *block order* along ``axis`` (0 rows, 1 columns).

    Mirroring pixels inside an 8x8 block multiplies DCT coefficient (u, v) by ``(-1)^v``
    (horizontal) or ``(-1)^u`` (vertical): the coefficient stays at the same position, so the
    blocks move and their layout does not. With magnitudes, this is exactly the plane of the
    flipped image. ``plane`` must be (8 * bh, 8 * bw).
    """
    h, w = plane.shape
    if h % 8 or w % 8:
        raise ValueError(f"coefficient plane must be a multiple of 8, got {plane.shape}")
    blocks = plane.reshape(h // 8, 8, w // 8, 8)
    flipped = blocks[::-1] if axis == 0 else blocks[:, :, ::-1]
    return np.ascontiguousarray(flipped).reshape(h, w)
