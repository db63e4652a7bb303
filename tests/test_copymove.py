"""copymove: contract, synthetic copy-moves (translated, rotated, scaled) found with both
regions, untouched and flat images left alone, matching and option handling."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from forgectl import registry
from forgectl.analysis.copymove import (
    CopyMoveConfig,
    Keypoints,
    analyse,
    dense_translations,
    g2nn_matches,
    working_grey,
)
from forgectl.errors import UsageError
from forgectl.intake import encode_jpeg, image_from_array, image_from_bytes
from tests.contract import BackendContract

SIDE = 96  # copied square, pixels
SOURCE_XY = (50, 60)  # its top-left corner (x, y)
TARGET_CENTRE = (380.0, 260.0)


class TestCopyMoveContract(BackendContract):
    method = "copymove"


def textured(height: int, width: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 with structure at several scales plus shapes and noise, so SIFT finds
    keypoints everywhere (copy-move detectors need texture to match)."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 128.0, np.float32)
    for cell in (48, 16, 6):
        coarse = rng.normal(0, 1, (height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        img += 28 * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(60):
        colour = tuple(float(v) for v in rng.uniform(-70, 70, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(3, 14))
        if rng.random() < 0.5:
            cv2.circle(img, (x, y), r, colour, -1)
        else:
            cv2.rectangle(img, (x, y), (x + r, y + 2 * r), colour, -1)
    img += rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def copy_move(
    host: np.ndarray, angle: float = 0.0, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy the SIDE x SIDE square at SOURCE_XY, rotated/scaled about its centre, so its centre
    lands on TARGET_CENTRE. Returns (forged, source_mask, target_mask)."""
    h, w = host.shape[:2]
    x0, y0 = SOURCE_XY
    source = np.zeros((h, w), np.uint8)
    source[y0 : y0 + SIDE, x0 : x0 + SIDE] = 1
    centre = (x0 + SIDE / 2, y0 + SIDE / 2)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    matrix[:, 2] += (TARGET_CENTRE[0] - centre[0], TARGET_CENTRE[1] - centre[1])
    moved = cv2.warpAffine(host, matrix, (w, h), flags=cv2.INTER_LINEAR)
    target = cv2.warpAffine(source, matrix, (w, h), flags=cv2.INTER_NEAREST).astype(bool)
    forged = host.copy()
    forged[target] = moved[target]
    return forged, source.astype(bool), target


def f1(pred: np.ndarray, gt: np.ndarray) -> float:
    tp = float((pred & gt).sum())
    return 2 * tp / max(1.0, float(pred.sum() + gt.sum()))


def recall(pred: np.ndarray, gt: np.ndarray) -> float:
    return float((pred & gt).sum()) / float(gt.sum())


@pytest.fixture(scope="module")
def backend():
    return registry.load("copymove")


@pytest.mark.parametrize(
    ("angle", "scale", "quality"),
    [(0.0, 1.0, None), (0.0, 1.0, 85), (15.0, 1.0, None), (0.0, 1.15, None)],
    ids=["translation", "translation-jpeg85", "rotation15", "scale1.15"],
)
def test_copy_found_with_both_regions(backend, angle, scale, quality):
    forged, source, target = copy_move(textured(384, 512, seed=3), angle, scale)
    image = image_from_bytes(encode_jpeg(forged, quality)) if quality else image_from_array(forged)
    result = backend.localize(image)
    assert f1(result.mask, source | target) > 0.75
    assert recall(result.mask, source) > 0.5 and recall(result.mask, target) > 0.5
    assert result.score > 0.5
    top = result.facts["transforms"][0]
    assert top["inliers"] >= result.facts["min_inliers"]
    assert np.array(top["matrix"]).shape == (2, 3)
    # The recovered transform is the one applied (either direction: matching is symmetric).
    dx, dy = top["shift_px"]
    expected = (
        TARGET_CENTRE[0] - SOURCE_XY[0] - SIDE / 2,
        TARGET_CENTRE[1] - SOURCE_XY[1] - SIDE / 2,
    )
    assert (
        min(
            np.hypot(dx - expected[0], dy - expected[1]),
            np.hypot(dx + expected[0], dy + expected[1]),
        )
        < 6
    )
    assert abs(abs(top["rotation_deg"]) - angle) < 2.0
    assert abs(top["scale"] - scale) < 0.05 or abs(top["scale"] - 1 / scale) < 0.05
    assert "2 regions match" in backend.reading(result)


def test_translation_reading_names_the_shift(backend):
    forged, _, _ = copy_move(textured(384, 512, seed=4))
    reading = backend.reading(backend.localize(image_from_array(forged)))
    assert "translation of" in reading and "inlier keypoints" in reading


def test_downscaled_matching_maps_back_to_stored_grid(backend):
    """Large images are matched on a smaller grid; masks and shifts come back in stored pixels."""
    forged, source, target = copy_move(textured(384, 512, seed=5))
    small = registry.load("copymove", max_side=384)
    result = small.localize(image_from_array(forged))
    assert result.facts["working_scale"] == pytest.approx(0.75, abs=0.01)
    assert result.mask.shape == forged.shape[:2]
    assert f1(result.mask, source | target) > 0.6
    dx, dy = result.facts["transforms"][0]["shift_px"]
    assert abs(abs(dx) - 282) < 6 and abs(abs(dy) - 152) < 6


@pytest.mark.parametrize("seed", [3, 6])
def test_untouched_image_not_flagged(backend, seed):
    result = backend.localize(image_from_array(textured(384, 512, seed=seed)))
    assert result.score < 0.1
    assert result.mask.mean() < 0.002
    assert result.facts["keypoints"] > 500  # it did look: the image has plenty of keypoints


def test_flat_image_is_silent(backend):
    flat = np.full((384, 512, 3), 120, np.uint8)
    flat[:, 256:] = 140  # one edge: still almost no keypoints
    result = backend.localize(image_from_array(flat))
    assert result.applicable
    assert result.score == 0.0 and not result.mask.any()
    assert result.facts["transforms"] == []
    assert "no duplicated region" in backend.reading(result)


def test_g2nn_matches_copies_and_ignores_close_or_distinct():
    rng = np.random.default_rng(0)
    desc = rng.uniform(0, 1, (40, 128)).astype(np.float32) * 100
    pts = rng.uniform(0, 400, (40, 2)).astype(np.float32)
    pts[1] = pts[0] + (150, 0)
    desc[1] = desc[0] + 0.5  # a far copy: matched
    desc[2], desc[3] = desc[4] + 0.5, desc[4] + 0.7  # three copies of one: all three pairs
    pts[2], pts[3], pts[4] = (10, 10), (200, 10), (10, 300)
    pts[6] = pts[5] + (3, 0)
    desc[6] = desc[5] + 0.5  # a copy 3 px away: ignored (same structure, not a move)
    pairs, dist = g2nn_matches(Keypoints(pts, desc, 0.02), CopyMoveConfig())
    found = {tuple(p) for p in pairs.tolist()}
    assert found == {(0, 1), (2, 3), (2, 4), (3, 4)}
    assert np.all(np.diff(dist) >= 0)


def test_options_are_the_config_fields_with_its_defaults():
    declared = {opt.name: opt.default for opt in registry.get_class("copymove").OPTIONS}
    assert declared == dataclasses.asdict(CopyMoveConfig())
    assert registry.load("copymove").config == CopyMoveConfig()


def test_options_reach_the_config():
    config = registry.load(
        "copymove", g2nn_ratio=0.6, min_inliers="7", contrast_thresholds=[0.03]
    ).config
    assert config.g2nn_ratio == 0.6 and config.min_inliers == 7
    assert config.contrast_thresholds == (0.03,)


def test_unknown_option_names_the_valid_ones():
    with pytest.raises(UsageError, match=r"no option 'ratio'.*g2nn_ratio"):
        registry.load("copymove", ratio=0.4)


@pytest.mark.parametrize(
    "options",
    [
        {"min_inliers": "many"},
        {"min_inliers": 2},
        {"max_side": 10.5},
        {"g2nn_ratio": 1.5},
        {"contrast_thresholds": [0.02, "low"]},
        {"correlation_threshold": 1.0},
        {"min_scale": 0.0},
        {"min_scale": 1.5, "max_scale": 1.2},
    ],
)
def test_bad_options_are_usage_errors(options):
    with pytest.raises(UsageError):
        registry.load("copymove", **options)


def smooth_host(seed: int) -> np.ndarray:
    """(256, 384, 3) uint8 grey surface of soft blobs: too few corners for SIFT to match a
    copy, enough texture for blocks."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(0, 1, (256, 384)).astype(np.float32), (0, 0), 6)
    grey = base / base.std() * 20 + 128 + rng.normal(0, 0.5, (256, 384))
    return np.clip(np.repeat(grey[..., None], 3, axis=2), 0, 255).astype(np.uint8)


def smooth_copy(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 100 x 80 region of :func:`smooth_host` moved by (190, 110): (forged, source, copy)."""
    host = smooth_host(seed)
    forged = host.copy()
    forged[140:220, 230:330] = host[30:110, 40:140]
    source = np.zeros(host.shape[:2], bool)
    source[30:110, 40:140] = True
    return forged, source, np.roll(source, (110, 190), axis=(0, 1))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dense_blocks_find_a_smooth_copy_that_keypoints_miss(seed):
    forged, source, target = smooth_copy(seed)
    assert analyse(forged, CopyMoveConfig(dense=False)).transforms == []  # keypoints miss it
    dense = registry.load("copymove", dense=True)
    result = dense.localize(image_from_array(forged))
    top = result.facts["transforms"][0]
    assert top["found_by"] == "blocks" and top["shift_px"] == pytest.approx([190, 110], abs=1)
    assert f1(result.mask, source | target) > 0.6 and result.score > 0.5
    assert "matching blocks" in dense.reading(result)
    clean = dense.localize(image_from_array(smooth_host(seed)))
    assert clean.facts["transforms"] == [] and clean.score == 0.0


def test_dense_shift_is_refined_to_the_pixel_after_coarse_matching():
    forged, _, _ = smooth_copy(1)
    grey, _ = working_grey(forged, 1600)
    coarse = dataclasses.replace(CopyMoveConfig(), block_max_side=256)  # at 2/3 size
    found = dense_translations(grey, coarse)
    assert found and found[0].origin == "blocks"
    assert np.abs(found[0].matrix[:, 2]).tolist() == [190.0, 110.0]
    assert np.allclose(found[0].matrix[:, :2], np.eye(2))


@pytest.mark.parametrize("seed", [3, 6])
def test_dense_blocks_leave_untouched_images_alone(seed):
    dense = registry.load("copymove", dense=True)
    result = dense.localize(image_from_array(textured(384, 512, seed=seed)))
    assert result.facts["transforms"] == [] and result.score == 0.0
