"""Network inputs made in numpy: pixel normalization and JPEG DCT planes.

Shared by a method's backend (inference, also on the torch-free ONNX path) and its training
recipe, so both feed the network the very same arrays.
"""

from __future__ import annotations

import numpy as np

from forgectl.intake import ForensicImage


def normalize_rgb(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 ``(rgb / 255 - mean) / std``."""
    x = np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
        :, None, None
    ]


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
    idx = np.minimum(np.abs(np.asarray(coef, np.int64)), clip).astype(np.uint8)
    return idx, image.jpeg.y_quant.astype(np.int64), True


