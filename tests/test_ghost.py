"""JPEG ghosts: curve helpers, and localization of synthetic double-compression forgeries."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from forgectl import registry
from forgectl.analysis import ghost as gh
from forgectl.errors import UsageError
from forgectl.intake import encode_jpeg, image_from_array, image_from_bytes
from forgectl.metrics import pixel_scores
from tests.contract import BackendContract


class TestGhostContract(BackendContract):
    method = "ghost"


def _jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    data = np.frombuffer(encode_jpeg(rgb, quality), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]


def _ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return ((yy - 0.5 * h) / (0.18 * h)) ** 2 + ((xx - 0.55 * w) / (0.19 * w)) ** 2 <= 1.0


def test_prominence_finds_a_dip_and_ignores_monotone_curves():
    qualities = (50, 55, 60, 65, 70, 75, 80, 85, 90, 95)
    curves = np.zeros((10, 1, 3), np.float32)
    curves[:, 0, 0] = -np.arange(10)  # falls steadily: no ghost
    curves[:, 0, 1] = 0.0
    curves[2, 0, 1] = -1.0  # dip at 60
    curves[:, 0, 2] = 0.0
    curves[7, 0, 2] = -1.0  # dip at 85, but 85 is not below the last quality
    depth, where = gh.ghost_prominence(curves, qualities, below=85)
    assert depth[0, 0] == 0.0
    assert depth[0, 1] == pytest.approx(1.0) and where[0, 1] == 60
    assert depth[0, 2] == 0.0


def test_prominence_needs_a_rise_on_both_sides():
    qualities = (50, 60, 70, 80)
    curves = np.array([0.0, 0.0, 0.0, -1.0], np.float32)[:, None, None]  # lowest at the end
    depth, _ = gh.ghost_prominence(curves, qualities, below=101)  # last quality above all
    assert depth[0, 0] == 0.0


def test_file_saved_above_the_scanned_qualities(make_image):
    image = image_from_bytes(encode_jpeg(make_image(96, 128, seed=8), 98))
    result = registry.load("ghost").localize(image)
    assert result.facts["dominant_quality"] == 98
    assert result.tampered_fraction < 0.05


def test_window_means_match_brute_force():
    rng = np.random.default_rng(0)
    errors = rng.random((3, 9, 7)).astype(np.float32)
    win = gh.window_means(errors, 2)
    assert win.shape == (3, 8, 6)
    assert win[1, 4, 3] == pytest.approx(errors[1, 4:6, 3:5].mean(), abs=1e-6)


def test_recompression_is_idempotent_at_the_files_quality(make_image):
    rgb = _jpeg_roundtrip(make_image(96, 128, seed=3), 80)
    errors = gh.error_stack(rgb, (60, 70, 80, 90), subsampling=2)
    assert errors.shape == (4, 12, 16)
    assert gh.dominant_quality(errors, (60, 70, 80, 90)) == 80
    # Another grid phase breaks the match, so the error at 80 is no longer near zero.
    shifted = gh.recompression_error(rgb, 80, 2, phase=(3, 5))
    assert shifted.shape == (11, 15)
    assert float(np.median(shifted)) > 5 * float(np.median(errors[2]))


@pytest.mark.parametrize(("seed", "final_quality"), [(0, 85), (1, 90)])
def test_region_saved_at_q60_then_pasted_is_found(make_image, seed, final_quality):
    host = make_image(384, 512, seed=20 + seed)
    donor = _jpeg_roundtrip(make_image(384, 512, seed=50 + seed), 60)
    mask = _ellipse(384, 512)
    forged = host.copy()
    forged[mask] = donor[mask]  # same coordinates: the paste keeps its 8x8 grid
    result = registry.load("ghost").localize(image_from_bytes(encode_jpeg(forged, final_quality)))
    assert pixel_scores(result.mask, mask)["f1"] > 0.7
    assert result.facts["ghost_quality"] == 60
    assert result.facts["dominant_quality"] == final_quality
    assert result.score > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_untouched_single_compressed_image_is_not_flagged(make_image, seed):
    image = image_from_bytes(encode_jpeg(make_image(384, 512, seed=seed), 90))
    result = registry.load("ghost").localize(image)
    assert result.tampered_fraction < 0.01
    assert result.score < 0.2


def test_pasted_jpeg_region_in_a_png_is_found(make_image):
    host = make_image(384, 512, seed=21)
    donor = _jpeg_roundtrip(make_image(384, 512, seed=51), 60)
    mask = _ellipse(384, 512)
    forged = host.copy()
    forged[mask] = donor[mask]
    result = registry.load("ghost").localize(image_from_array(forged))
    assert result.facts["dominant_source"] == "recompression"
    assert result.facts["ghost_quality"] == 60
    assert pixel_scores(result.mask, mask)["f1"] > 0.7


def test_region_lacking_the_hosts_ghost_is_found(make_image):
    host = _jpeg_roundtrip(make_image(384, 512, seed=22), 70)  # host saved at 70 first
    mask = _ellipse(384, 512)
    forged = host.copy()
    forged[mask] = make_image(384, 512, seed=52)[mask]  # pristine paste: no ghost at 70
    result = registry.load("ghost").localize(image_from_bytes(encode_jpeg(forged, 90)))
    assert result.facts["image_ghost_quality"] == 70
    assert result.facts["missing_ghost_quality"] == 70
    assert pixel_scores(result.mask, mask)["f1"] > 0.6


def test_off_grid_paste_needs_the_phase_search(make_image):
    host = make_image(192, 256, seed=3)
    donor = _jpeg_roundtrip(make_image(192, 256, seed=40), 60)
    mask = np.zeros((192, 256), bool)
    mask[48:144, 64:192] = True
    forged = host.copy()
    forged[48:144, 64:192] = donor[51:147, 69:197]  # moved by (3, 5): its grid is at (5, 3)
    image = image_from_bytes(encode_jpeg(forged, 90))
    aligned = registry.load("ghost").localize(image)
    searched = registry.load("ghost", phases="all").localize(image)
    assert pixel_scores(aligned.mask, mask)["f1"] < 0.3
    assert pixel_scores(searched.mask, mask)["f1"] > 0.6
    assert searched.facts["hottest_phase"] == [5, 3]
    assert searched.facts["grid_phases_searched"] == 64


def test_options_are_declared_and_coerced():
    ghost = registry.load("ghost", qualities=[80, "60", 70, 60], window="3")
    assert ghost.options["qualities"] == (80, 60, 70, 60) and ghost.options["window"] == 3
    assert registry.load("ghost").options["qualities"] == gh.DEFAULT_QUALITIES
    assert {opt.name for opt in ghost.OPTIONS} == set(ghost.options)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(UsageError, match=r"no option 'x'.*qualities"):
        registry.load("ghost", x=1)


@pytest.mark.parametrize(
    "options",
    [
        {"qualities": [60, 70]},
        {"qualities": [60, 60, 70]},
        {"qualities": [0, 50, 70]},
        {"qualities": [60, 70, 101]},
        {"qualities": [60, 70.5, 80]},
        {"window": -1},
        {"channels": "cmyk"},
        {"phases": "some"},
        {"floor": 0},
        {"prominence": "tall"},
        {"informative": -1},
    ],
)
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        registry.load("ghost", **options)
