"""Training augmentations: DNA's scale, real re-compression, resize with its mask, blur."""

from __future__ import annotations

import numpy as np
import pytest

from forgectl.training import augment as A


@pytest.fixture
def photo(make_image) -> np.ndarray:
    return make_image(64, 80, seed=5)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_dna_official_scale_is_negligible(photo: np.ndarray) -> None:
    out = A.dna(photo, np.random.default_rng(0), scale=1.0)
    delta = out - photo.astype(np.float32)
    assert out.dtype == np.float32 and out.shape == photo.shape
    assert np.abs(delta).max() <= 0.026 + 1e-6  # below 3 % of one grey level
    assert delta[..., 0].min() >= 0 and delta[..., 2].max() <= 0  # signs of the deviations


def test_dna_one_field_shared_by_channels(photo: np.ndarray) -> None:
    out = A.dna(photo, np.random.default_rng(1), scale=255.0)
    delta = out - photo.astype(np.float32)
    dev = np.asarray(A.DNA_DEVIATION, np.float32) * 255.0
    field = delta / dev
    assert np.allclose(field[..., 0], field[..., 1], atol=1e-3)
    assert np.allclose(field[..., 0], field[..., 2], atol=1e-2)
    assert 0.0 <= field.min() and field.max() <= 1.0 + 1e-3
    assert np.abs(delta[..., 0]).max() > 5.0  # at scale 255 the red shift reaches ~6.6 levels
    again = A.dna(photo, np.random.default_rng(1), scale=255.0)
    assert np.array_equal(out, again)
