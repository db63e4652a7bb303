"""Numerical JPEG helpers: DCT conventions, zigzag order, double-quantization fit."""

from __future__ import annotations

import numpy as np

from forgectl.analysis.jpeg import (
    block_dct,
    block_plane,
    fit_primary_step,
    low_frequency_ac,
    luma,
    smoothed_cdf,
    window_dct,
    zigzag_order,
)
from forgectl.intake import image_from_array


def test_zigzag_matches_t81():
    expected = [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (0, 3), (1, 2), (2, 1), (3, 0)]
    order = zigzag_order()
    assert order[:10] == expected
    assert order[-1] == (7, 7) and len(set(order)) == 64
    assert low_frequency_ac(3) == [(0, 1), (1, 0), (2, 0)]


def test_block_dct_matches_file_coefficients(make_image):
    image = image_from_array(make_image(64, 80, 0), jpeg_quality=100)
    mine = block_dct(luma(image.rgb))  # (8, 10, 8, 8)
    stored = image.jpeg.y_coefficients(64, 80).reshape(8, 8, 10, 8).transpose(0, 2, 1, 3)
    stored = stored * image.jpeg.y_quant
    # q100 steps are 1: the file's coefficients are the rounded DCT, up to pixel rounding.
    assert np.abs(mine - stored).max() < 3.0
    assert np.array_equal(block_plane(image.jpeg.y_coefficients(64, 80), 0, 1), stored[:, :, 0, 1])


def test_window_dct_samples_block_dct(make_image):
    y = luma(make_image(40, 48, 1))
    grid = block_dct(y, (3, 5))
    windows = window_dct(y, 1, 2)
    np.testing.assert_allclose(
        windows[3::8, 5::8][: grid.shape[0], : grid.shape[1]], grid[:, :, 1, 2], atol=1e-3
    )


def test_fit_recovers_first_step():
    rng = np.random.default_rng(0)
    raw = rng.laplace(0, 12, 20000)
    first, second = 7, 3
    double = np.round(np.round(raw / first) * first / second).astype(np.int64)
    single = np.round(raw / second).astype(np.int64)
    cdf = smoothed_cdf(raw)
    fit = fit_primary_step(double, cdf, second, range(1, 21), half_range=30)
    assert fit.primary_step == first and fit.authentic_fraction > 0.9
    assert fit.gain_per_coefficient > 0.1
    # Log-ratio favours "single" on bins the first quantizer leaves empty (e.g. x = 1).
    assert fit.log_ratio[30 + 1] > 1.0
    none = fit_primary_step(single, cdf, second, range(1, 21), half_range=30)
    assert none.gain_per_coefficient < 0.01
