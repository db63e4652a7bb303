"""Noise-level inconsistency: estimator, block helpers, and localization of synthetic forgeries."""

from __future__ import annotations

import numpy as np
import pytest

from forgectl import registry
from forgectl.analysis import noise as nz
from forgectl.errors import UsageError
from forgectl.intake import image_from_array
from forgectl.metrics import pixel_scores
from tests.contract import BackendContract


class TestNoiseContract(BackendContract):
    method = "noise"


def _ellipse(h: int, w: int, cy: int, cx: int, ry: int, rx: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _add_noise(rgb: np.ndarray, where: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rgb.astype(np.float32)
    out[where] += rng.normal(0.0, sigma, (int(where.sum()), 3))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def test_mad_estimator_recovers_gaussian_sigma():
    rng = np.random.default_rng(0)
    plane = 128.0 + rng.normal(0.0, 5.0, (256, 256))
    hh = nz.wavelet_hh(plane, "db8")
    assert hh.shape == (128, 128)
    sigma = nz.block_noise_sigma(hh, nz.BlockGrid.fit(hh.shape, 16, 8))
    assert abs(float(np.median(sigma)) - 5.0) < 0.4


def test_wavelet_hh_shape_of_odd_plane():
    assert nz.wavelet_hh(np.zeros((67, 45)), "haar").shape == (34, 23)


def test_block_helpers_match_brute_force(monkeypatch):
    rng = np.random.default_rng(1)
    values = rng.normal(size=(37, 29)).astype(np.float32)
    grid = nz.BlockGrid.fit(values.shape, 8, 3)
    monkeypatch.setattr(nz, "_CHUNK_VALUES", 200)  # force several bands
    medians = nz.block_medians(values, grid)
    means = nz.block_means(values, grid)
    for r in range(grid.rows):
        for c in range(grid.cols):
            blk = values[3 * r : 3 * r + 8, 3 * c : 3 * c + 8]
            assert medians[r, c] == pytest.approx(np.median(blk), abs=1e-6)
            assert means[r, c] == pytest.approx(blk.mean(), abs=1e-5)


def test_grid_to_pixels_puts_values_at_block_centres():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    grid = nz.BlockGrid(size=16, stride=8, rows=3, cols=4)
    out = nz.grid_to_pixels(values, grid, 1, (40, 50), origin=(3, 5))
    assert out.shape == (40, 50)
    # Block (1, 2) covers pixels [11:27, 21:37]; its centre lies between pixels 18/19 and 28/29.
    assert out[18:20, 28:30].mean() == pytest.approx(values[1, 2], abs=1e-5)
    assert out[0, 0] == values[0, 0] and out[-1, -1] == values[-1, -1]


@pytest.mark.parametrize("jpeg_quality", [None, 90])
def test_region_with_added_noise_is_found(make_image, jpeg_quality):
    rgb = make_image(384, 512, seed=10)
    mask = _ellipse(384, 512, 190, 280, 75, 100)
    forged = _add_noise(rgb, mask, sigma=8.0, seed=1)
    result = registry.load("noise").localize(image_from_array(forged, jpeg_quality=jpeg_quality))
    assert pixel_scores(result.mask, mask)["f1"] > 0.7
    assert result.score > 0.5
    assert result.facts["deviating_fraction"] > 0.05


def test_quieter_region_is_found_only_when_both_sides_are_mapped(make_image):
    rgb = make_image(384, 512, seed=20)
    mask = _ellipse(384, 512, 190, 280, 70, 95)
    forged = _add_noise(rgb, ~mask, sigma=5.0, seed=2)  # everything but the region gets noisier
    image = image_from_array(forged)
    both = registry.load("noise").localize(image)
    high = registry.load("noise", sides="high").localize(image)
    assert pixel_scores(both.mask, mask)["f1"] > 0.6
    assert high.tampered_fraction < 0.01


@pytest.mark.parametrize("seed", [0, 1, 6])  # 6: the worst of seeds 0..9 (edges of blobs)
def test_untouched_image_is_not_flagged(make_image, seed):
    result = registry.load("noise").localize(image_from_array(make_image(384, 512, seed=seed)))
    assert result.tampered_fraction < 0.03
    assert result.score < 0.35


def test_clipped_and_flat_areas_do_not_light_up(make_image):
    rgb = make_image(384, 512, seed=21)
    rgb[:100] = 255  # blown-out sky
    rgb[300:, :200] = 12  # flat deep shadow
    result = registry.load("noise").localize(image_from_array(rgb))
    assert result.mask[:90].sum() == 0
    assert result.mask[310:, :190].sum() == 0
    assert result.tampered_fraction < 0.03
    assert result.facts["unreliable_fraction"] > 0.3
    assert result.maps["unreliable"][:90].min() > 0.99


def test_all_flat_image_gives_zero_map():
    result = registry.load("noise").localize(image_from_array(np.full((64, 80, 3), 40, np.uint8)))
    assert result.score == 0.0 and not result.mask.any()
    assert result.facts["dominant_sigma"] is None
    assert "no measurable noise" in registry.load("noise").reading(result)


def test_options_are_declared_and_coerced():
    noise = registry.load("noise", block="16", ratio=2, wavelet="haar")
    assert noise.options["block"] == 16 and noise.options["ratio"] == 2.0
    assert noise.options["wavelet"] == "haar" and noise.options["sides"] == "both"
    assert {opt.name for opt in noise.OPTIONS} == set(noise.options)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(UsageError, match=r"no option 'nope'.*wavelet"):
        registry.load("noise", nope=1)


@pytest.mark.parametrize(
    "options",
    [
        {"wavelet": "bior2.2"},
        {"wavelet": "nope"},
        {"stride": 64},
        {"stride": 1},
        {"block": 2},
        {"block": "big"},
        {"sides": "low"},
        {"ratio": 1.0},
        {"max_clipped": 1.5},
        {"flat_sigma": -0.1},
    ],
)
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        registry.load("noise", **options)
