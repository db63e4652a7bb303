"""Training augmentations: DNA's scale, real re-compression, resize with its mask, blur."""

from __future__ import annotations

import numpy as np
import pytest

from forgectl.synth import histories
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


def test_recompress_is_real_jpeg(photo: np.ndarray) -> None:
    low, high = A.recompress(photo, 40), A.recompress(photo, 95)
    assert low.shape == photo.shape and low.dtype == np.uint8
    assert psnr(photo, low) < psnr(photo, high) < 60
    # JPEG at a fixed quality is idempotent-ish: a second pass changes far less than the first.
    assert psnr(low, A.recompress(low, 40)) > psnr(photo, low)


def test_resize_mask_follows(photo: np.ndarray) -> None:
    mask = np.zeros(photo.shape[:2], bool)
    mask[16:48, 20:60] = True
    rgb, m = A.resize(photo, mask, 0.5)
    assert rgb.shape == (32, 40, 3) and m.shape == (32, 40)
    assert m.mean() == pytest.approx(mask.mean(), abs=0.02)
    assert m[8:24, 10:30].all() and not m[:7].any()


def test_blur_removes_detail(photo: np.ndarray) -> None:
    import cv2

    def detail(x: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())

    blurred = A.blur(photo, 1.5)
    assert blurred.shape == photo.shape
    assert detail(blurred) < 0.5 * detail(photo)


def test_augment_off_is_identity(photo: np.ndarray) -> None:
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[5:20, 5:20] = 1
    pixels, m, steps = A.augment(photo, mask, np.random.default_rng(0), A.AugmentConfig())
    assert steps == []
    assert pixels.dtype == np.float32 and np.array_equal(pixels, photo.astype(np.float32))
    assert np.array_equal(m, mask.astype(bool))


def test_augment_records_replayable_steps(photo: np.ndarray) -> None:
    cfg = A.AugmentConfig(
        resize_prob=1,
        blur_prob=1,
        recompress_prob=1,
        dna_prob=1,
        dna_scale=255.0,
        resize_scale=(0.5, 0.6),
        min_side=40,
    )
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[10:40, 10:50] = 1
    pixels, m, steps = A.augment(photo, mask, np.random.default_rng(3), cfg)
    assert [s["op"] for s in steps] == ["resize", "blur", "jpeg", "dna"]
    assert min(pixels.shape[:2]) >= 40  # min_side beat the drawn scale
    assert m.shape == pixels.shape[:2]
    replayed, replayed_mask = histories.apply_steps(photo, mask.astype(bool), steps[:-1])
    assert np.array_equal(replayed_mask, m)
    assert np.abs(pixels - replayed.astype(np.float32)).max() <= 255.0 * 0.026 + 1e-3


def test_augment_config_round_trip_and_checks() -> None:
    cfg = A.AugmentConfig(blur_prob=0.3, quality=(60, 90))
    assert A.AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="quality"):
        A.AugmentConfig(quality=(90, 60))
    with pytest.raises(ValueError, match="blur_prob"):
        A.AugmentConfig(blur_prob=1.5)
    with pytest.raises(ValueError, match="uint8"):
        A.augment(
            np.zeros((8, 8, 3), np.float32),
            np.zeros((8, 8)),
            np.random.default_rng(),
            A.AugmentConfig(),
        )
