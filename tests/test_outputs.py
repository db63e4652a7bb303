"""The output pictures and the in-place clean-ups made fast for 12 MP (issue #20) keep their
meaning: exact heat values, the documented overlay formula, NaN/inf handling, no aliasing."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from forgectl.backends.base import Result, clean_unit
from forgectl.outputs import (
    _LUT,
    colorize,
    heat_index,
    heatmap_png,
    overlay,
    write_result_files,
)
from forgectl.tiling import BlendAccumulator, blend_window, plan_tiles


def _heat(h: int = 37, w: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w), dtype=np.float32)


def test_heat_index_rounds_half_to_even_and_cleans():
    values = np.array([[0.0, 0.5 / 255, 1.5 / 255, 0.5, 1.0, 1.7, -0.2, np.nan, np.inf,
                        -np.inf]], np.float32)
    expected = np.round(np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * 255)
    assert heat_index(values).tolist() == expected.astype(np.uint8).tolist()
    heat = _heat()
    assert np.array_equal(heat_index(heat), np.round(heat * 255).astype(np.uint8))


def test_heatmap_png_holds_the_values_and_shows_the_colour_map():
    heat = _heat()
    image = Image.open(io.BytesIO(heatmap_png(heat)))
    assert image.mode == "P"
    assert np.array_equal(np.array(image), heat_index(heat))
    assert np.array_equal(np.array(image.convert("RGB")), colorize(heat))
    assert np.array_equal(colorize(heat), _LUT[heat_index(heat)])


def test_overlay_follows_its_formula():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    heat = _heat(40, 60, seed=2)
    got = overlay(rgb, heat, np.zeros(heat.shape, bool)).astype(np.float64)
    a = 0.75 * heat[..., None].astype(np.float64)
    want = (1 - a) * 0.6 * rgb + a * colorize(heat)
    assert np.abs(got - want).max() <= 1.0  # rounding of the dimmed image and of the blend
    mask = np.zeros(heat.shape, bool)
    mask[10:30, 20:40] = True
    outlined = overlay(rgb, heat, mask)
    assert (outlined[10, 20:40] == (0, 255, 255)).all()


def test_clean_unit_never_changes_the_callers_array():
    dirty = np.array([np.nan, np.inf, -np.inf, 0.25, 3.0, -1.0], np.float32)
    before = dirty.copy()
    assert clean_unit(dirty).tolist() == [0.0, 1.0, 0.0, 0.25, 1.0, 0.0]
    assert np.array_equal(dirty, before, equal_nan=True)
    clean = _heat()
    assert clean_unit(clean) is clean  # nothing to clean: no copy
    assert clean_unit(np.array([0.5, 2.0])).dtype == np.float32
    result = Result.from_heatmap(dirty.reshape(2, 3), threshold=0.5)
    assert result.heatmap.tolist() == [[0.0, 1.0, 0.0], [0.25, 1.0, 0.0]]
    assert np.array_equal(dirty, before, equal_nan=True)


def test_blend_in_place_gives_the_weighted_mean():
    plan = plan_tiles(100, 140, 64, 16, 32)
    acc = BlendAccumulator(plan)
    rng = np.random.default_rng(3)
    total = np.zeros((plan.padded_height, plan.padded_width))
    weight = np.zeros_like(total)
    for tile in plan.tiles:
        values = rng.random((tile.height, tile.width), dtype=np.float32)
        acc.add(tile, values)
        window = blend_window(tile.height, tile.width, plan.ramp)
        sl = (slice(tile.y0, tile.y0 + tile.height), slice(tile.x0, tile.x0 + tile.width))
        total[sl] += values * window
        weight[sl] += window
    want = (total / np.maximum(weight, 1e-12))[:100, :140]
    assert np.allclose(acc.result(), want, atol=1e-5)


def test_written_pictures_are_the_same_with_threads(tmp_path):
    rgb = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    heat = _heat(48, 64, seed=5)
    mask = heat > 0.7
    one = write_result_files(tmp_path / "a", rgb, heat, mask, {}, threads=1)
    two = write_result_files(tmp_path / "b", rgb, heat, mask, {}, threads=2)
    assert one["output_sha256"] == two["output_sha256"]
