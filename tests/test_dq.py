"""dq (aligned double JPEG): contract plus localization on real double-compressed files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from forgectl import registry
from forgectl.errors import UsageError
from forgectl.intake import encode_jpeg, image_from_array, image_from_bytes
from tests.contract import BackendContract

H, W = 384, 512


class TestDqContract(BackendContract):
    method = "dq"


def _decode(data: bytes) -> np.ndarray:
    return np.ascontiguousarray(cv2.imdecode(np.frombuffer(data, np.uint8), 1)[:, :, ::-1])


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * float((pred & truth).sum()) / max(float(pred.sum() + truth.sum()), 1.0)


@pytest.fixture(scope="module")
def dq():
    return registry.load("dq")


@pytest.mark.parametrize(
    ("seed", "first_quality", "donor_quality"),
    [(0, 65, None), (1, 60, None), (2, 70, 95)],
)
def test_finds_singly_compressed_paste(make_image, dq, seed, first_quality, donor_quality):
    # Host: a JPEG at q1, decoded. Donor: never compressed (or a q95 JPEG). Whole saved at q90,
    # so the host is quantized twice on one grid and the paste once with the q1 steps missing.
    host = _decode(encode_jpeg(make_image(H, W, seed), first_quality))
    donor = make_image(H, W, seed + 100)
    if donor_quality is not None:
        donor = _decode(encode_jpeg(donor, donor_quality))
    truth = np.zeros((H, W), bool)
    truth[96:256, 160:352] = True
    forged = host.copy()
    forged[truth] = donor[truth]
    result = dq.localize(image_from_bytes(encode_jpeg(forged, 90)))

    assert result.applicable and result.facts["double_compressed"]
    assert _f1(result.mask, truth) > 0.7
    assert result.score > 0.8
    assert abs(result.facts["primary_quality_estimate"] - first_quality) <= 5
    assert "compressed only once" in dq.reading(result)


def test_untouched_double_compressed_is_clean(make_image, dq):
    host = _decode(encode_jpeg(make_image(H, W, 3), 65))
    result = dq.localize(image_from_bytes(encode_jpeg(host, 90)))
    assert result.facts["double_compressed"]
    assert result.tampered_fraction < 0.02
    assert result.score < 0.2


def test_single_compressed_is_blind_not_flagged(make_image, dq):
    result = dq.localize(image_from_array(make_image(H, W, 4), jpeg_quality=90))
    assert result.applicable
    assert not result.facts["double_compressed"]
    assert result.facts["primary_quality_estimate"] is None
    assert result.score == 0.0 and not result.mask.any()
    assert "blind" in result.note and "blind" in dq.reading(result)


def test_non_jpeg_not_applicable(make_image, dq):
    result = dq.localize(image_from_array(make_image(96, 128, 5)))
    assert not result.applicable
    assert "JPEG" in result.note


def test_tiny_jpeg_says_nothing(make_image, dq):
    result = dq.localize(image_from_array(make_image(40, 48, 6), jpeg_quality=80))
    assert result.applicable and result.score == 0.0 and not result.mask.any()


def test_options_are_declared_and_coerced():
    dq = registry.load("dq", smooth="5", sigma=1)
    assert dq.options["smooth"] == 5 and dq.options["sigma"] == 1.0
    assert dq.options["frequencies"] == 15 and dq.options["value_range"] == 80.0
    assert {opt.name for opt in dq.OPTIONS} == set(dq.options)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(UsageError, match=r"no option 'colour'.*frequencies"):
        registry.load("dq", colour=1)


@pytest.mark.parametrize(
    "options",
    [
        {"smooth": "wide"},
        {"smooth": 0},
        {"frequencies": 0},
        {"frequencies": 64},
        {"frequencies": 2.5},
        {"max_primary_step": 1},
        {"sigma": 0},
        {"value_range": -1},
        {"min_authentic_fraction": 1.5},
    ],
)
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        registry.load("dq", **options)
