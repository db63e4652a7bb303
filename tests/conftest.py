"""Shared fixtures. Tests that need ``../shared`` skip cleanly without it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FORGECTL_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not available")
    return SHARED


@pytest.fixture(scope="session")
def casia_dir(shared_dir: Path) -> Path:
    path = shared_dir / "bench" / "casia1-dev"
    if not (path / "images").is_dir():
        pytest.skip("casia1-dev is not available")
    return path


@pytest.fixture(scope="session")
def corpus_dir(shared_dir: Path) -> Path:
    path = shared_dir / "corpus"
    if not path.is_dir():
        pytest.skip("corpus is not available")
    return path


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


@pytest.fixture
def make_image():
    return natural_image
