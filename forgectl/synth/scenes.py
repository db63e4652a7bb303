"""A photo-like synthetic scene generator: test inputs and benchmark images that need no files."""

from __future__ import annotations

import numpy as np


def natural_image(height: int = 256, width: int = 256, seed: int = 0) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 test image: smooth gradients, blobs and fine texture.

    Made here so tests need no files: low-frequency structure like a scene plus mild
    sensor-like noise, so JPEG and noise analyses behave as on photos.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        img[:, :, c] = 90 + 60 * np.sin(xx / (23 + 7 * c) + c) * np.cos(yy / (31 + 5 * c))
    for _ in range(12):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        r = rng.uniform(8, max(12, min(height, width) / 5))
        colour = rng.uniform(-60, 60, 3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img += blob[:, :, None] * colour
    img += rng.normal(0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
