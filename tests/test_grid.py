"""grid (non-aligned JPEG grid): contract plus localization of off-grid pastes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from forgectl import registry
from forgectl.errors import UsageError
from forgectl.intake import encode_jpeg, image_from_array, image_from_bytes
from tests.contract import BackendContract

H, W = 384, 512


class TestGridContract(BackendContract):
    method = "grid"


def _decode(data: bytes) -> np.ndarray:
    return np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), 1)[:, :, ::-1])


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * float((pred & truth).sum()) / max(float(pred.sum() + truth.sum()), 1.0)


def _off_grid_paste(make_image, seed: int, host_quality: int | None, shift: tuple[int, int]):
    """Paste a q70 JPEG donor so that its grid lands at ``shift`` (row, column) mod 8."""
    host = make_image(H, W, seed)
    if host_quality is not None:
        host = _decode(encode_jpeg(host, host_quality))
    donor = _decode(encode_jpeg(make_image(H, W, seed + 50), 70))
    top, left, height, width = 101, 147, 150, 190  # not multiples of 8
    # Donor row a sits at image row top + a - crop_top; its grid (a = 0 mod 8) lands at
    # (top - crop_top) mod 8 = shift.
    crop_top = (top - shift[0]) % 8 + 8
    crop_left = (left - shift[1]) % 8 + 8
    forged = host.copy()
    forged[top : top + height, left : left + width] = donor[
        crop_top : crop_top + height, crop_left : crop_left + width
    ]
    truth = np.zeros((H, W), bool)
    truth[top : top + height, left : left + width] = True
    return forged, truth


@pytest.fixture(scope="module")
def grid():
    return registry.load("grid")


@pytest.mark.parametrize(
    ("seed", "host_quality", "shift"), [(0, 70, (3, 5)), (1, None, (6, 2)), (2, 80, (0, 3))]
)
def test_finds_shifted_grid(make_image, grid, seed, host_quality, shift):
    forged, truth = _off_grid_paste(make_image, seed, host_quality, shift)
    result = grid.localize(image_from_bytes(encode_jpeg(forged, 90)))
    assert _f1(result.mask, truth) > 0.6
    assert result.facts["global_grid_offset"] == [0, 0]
    assert result.facts["local_grid_offset"] == list(shift)
    assert result.score > 0.8
    assert "carries a grid at offset" in grid.reading(result)


def test_works_on_pixels_without_jpeg_container(make_image, grid):
    forged, truth = _off_grid_paste(make_image, 3, 75, (5, 1))
    result = grid.localize(image_from_array(forged))  # never saved as JPEG at the end
    assert _f1(result.mask, truth) > 0.6


@pytest.mark.parametrize("history", ["single", "double", "cropped"])
def test_untouched_not_flagged(make_image, grid, history):
    img = make_image(H + 8, W + 8, 7)
    if history == "double":
        img = _decode(encode_jpeg(img, 70))
    elif history == "cropped":  # compressed, then cropped off its grid: the whole image shifts
        img = _decode(encode_jpeg(img, 70))[3 : 3 + H, 5 : 5 + W]
    result = grid.localize(image_from_bytes(encode_jpeg(np.ascontiguousarray(img[:H, :W]), 90)))
    assert result.tampered_fraction < 0.01
    assert result.score < 0.2
    if history == "cropped":
        # Cropping 3 rows and 5 columns moves the old grid to (-3 mod 8, -5 mod 8).
        assert result.facts["global_grid_offset"] == [5, 3]
        assert not result.facts["image_grid_aligned"]


def test_options_are_declared_and_coerced():
    grid = registry.load("grid", window="4", z_low=3)
    assert grid.options == {"window": 4, "min_step": 2, "max_step": 16, "z_low": 3.0,
                            "z_high": 8.0, "ubiquitous_z": 2.0}


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(UsageError, match=r"no option 'shift'.*window"):
        registry.load("grid", shift=1)


@pytest.mark.parametrize(
    "options",
    [
        {"window": "big"},
        {"window": 0},
        {"window": 4.5},
        {"min_step": 1},
        {"min_step": 10, "max_step": 4},
        {"z_low": 8.0, "z_high": 8.0},
        {"z_high": "high"},
    ],
)
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        registry.load("grid", **options)
