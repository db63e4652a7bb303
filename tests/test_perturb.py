"""Perturbations: spec parsing, formulas, JPEG realism, mask alignment under resize."""

from __future__ import annotations

import numpy as np
import pytest

from forgectl.errors import UsageError
from forgectl.evaluation.perturb import Perturbation, parse_spec
from forgectl.intake import image_from_array


def flat(value: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_parse_spec_values_and_labels():
    settings = parse_spec("jpeg:q=50,70,90")
    assert [s.value for s in settings] == [50, 70, 90]
    assert [s.label for s in settings] == ["jpeg:q=50", "jpeg:q=70", "jpeg:q=90"]
    assert [s.label for s in parse_spec("brightness:alpha=0.5,-0.5")] == [
        "brightness:alpha=0.5",
        "brightness:alpha=-0.5",
    ]
    assert parse_spec("contrast:0.7,2.0")[1] == Perturbation("contrast", 2.0)
    assert parse_spec("jpeg:quality=80") == [Perturbation("jpeg", 80)]  # alias
    assert len(parse_spec("blur:k=3,3,5")) == 2  # duplicates dropped


@pytest.mark.parametrize(
    "spec",
    [
        "sharpen:x=1",
        "jpeg",
        "jpeg:q=",
        "jpeg:q=0",
        "jpeg:q=50.5",
        "blur:k=4",
        "resize:scale=0",
        "noise:sigma=-1",
        "brightness:alpha=2",
        "jpeg:scale=0.5",
        "jpeg:q=abc",
    ],
)
def test_parse_spec_rejects_bad_specs(spec):
    with pytest.raises(UsageError):
        parse_spec(spec)


def test_brightness_formula():
    rgb = np.array([[[0, 10, 100]], [[200, 255, 51]]], np.uint8)
    out, _ = Perturbation("brightness", 0.5).apply(image_from_array(rgb))
    # I' = clip(I/255 + 0.5, 0, 1) * 255: 0 -> 127.5, 10 -> 137.5, 100 -> 227.5, 51 -> 178.5,
    # >= 128 -> 255 (the .5 cases may round either way).
    assert np.all(np.abs(out.rgb[0, 0].astype(float) - [127.5, 137.5, 227.5]) <= 0.5)
    assert out.rgb[1, 0, :2].tolist() == [255, 255] and abs(int(out.rgb[1, 0, 2]) - 178.5) <= 0.5
    out, _ = Perturbation("brightness", -0.5).apply(image_from_array(rgb))
    assert out.rgb[0, 0].tolist() == [0, 0, 0]  # all <= 127.5 clip to 0
    assert abs(int(out.rgb[1, 0, 0]) - 72.5) <= 0.5 and abs(int(out.rgb[1, 0, 1]) - 127.5) <= 0.5


def test_contrast_formula():
    rgb = np.array([[[0, 100, 200]]], np.uint8)
    out, _ = Perturbation("contrast", 2.0).apply(image_from_array(rgb))
    assert out.rgb[0, 0].tolist() == [0, 200, 255]  # 2 * 200 clips
    out, _ = Perturbation("contrast", 0.7).apply(image_from_array(rgb))
    assert out.rgb[0, 0].tolist() == [0, 70, 140]


def test_jpeg_perturbation_gives_real_jpeg_data(make_image):
    image = image_from_array(make_image(64, 80, seed=1))
    mask = np.zeros((64, 80), bool)
    mask[8:24, 16:40] = True
    out, out_mask = Perturbation("jpeg", 70).apply(image, mask)
    assert out.format == "JPEG" and out.jpeg is not None
    assert out.jpeg.quality == 70 and out.jpeg.standard_tables
    assert out.rgb.shape == image.rgb.shape
    assert out_mask is mask  # geometry unchanged
    # The pixels are the decoded JPEG, not the input: compression changed them a little.
    diff = np.abs(out.rgb.astype(int) - image.rgb.astype(int))
    assert 0 < diff.mean() < 10


@pytest.mark.parametrize(
    "setting",
    [
        Perturbation("blur", 3),
        Perturbation("noise", 2),
        Perturbation("brightness", 0.1),
        Perturbation("contrast", 1.2),
        Perturbation("resize", 0.5),
    ],
)
def test_pixel_perturbations_drop_jpeg_data(setting, make_image):
    image = image_from_array(make_image(48, 64, seed=2), jpeg_quality=90)
    before = image.rgb.copy()
    out, _ = setting.apply(image)
    assert image.jpeg is not None and out.jpeg is None and out.format == "PNG"
    assert np.array_equal(image.rgb, before)  # input untouched


def test_resize_keeps_mask_aligned_exact_halving():
    rgb = flat(30, 128, 160)
    rgb[20:60, 40:100] = 220
    mask = np.zeros((128, 160), bool)
    mask[20:60, 40:100] = True
    out, out_mask = Perturbation("resize", 0.5).apply(image_from_array(rgb), mask)
    assert out.rgb.shape[:2] == out_mask.shape == (64, 80)
    expected = np.zeros((64, 80), bool)
    expected[10:30, 20:50] = True
    assert np.array_equal(out_mask, expected)
    assert np.array_equal(out.rgb[:, :, 0] > 125, expected)


@pytest.mark.parametrize("scale", [0.37, 0.75, 1.5])
def test_resize_keeps_mask_aligned_any_scale(scale):
    rgb = flat(30, 120, 150)
    rgb[33:77, 41:113] = 220
    mask = np.zeros((120, 150), bool)
    mask[33:77, 41:113] = True
    out, out_mask = Perturbation("resize", scale).apply(image_from_array(rgb), mask)
    assert out.rgb.shape[:2] == out_mask.shape == (round(120 * scale), round(150 * scale))
    bright = out.rgb[:, :, 0] > 125
    # The mask and the bright region may differ only on the boundary (one pixel wide).
    disagree = bright ^ out_mask
    boundary = out_mask.sum() ** 0.5 * 4 + 4
    assert disagree.sum() <= boundary
    iou = (bright & out_mask).sum() / (bright | out_mask).sum()
    assert iou > 0.9


def test_blur_formula_properties(make_image):
    same, _ = Perturbation("blur", 1).apply(image_from_array(flat(77)))
    assert np.array_equal(same.rgb, flat(77))
    const, _ = Perturbation("blur", 7).apply(image_from_array(flat(90)))
    assert np.array_equal(const.rgb, flat(90))  # a flat image stays flat
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    out, _ = Perturbation("blur", 5).apply(image_from_array(noisy))
    assert out.rgb.astype(float).std() < 0.5 * noisy.astype(float).std()


def test_noise_is_seeded_by_image_and_has_the_right_sigma():
    image = image_from_array(flat(128, 64, 64))
    a, _ = Perturbation("noise", 8).apply(image)
    b, _ = Perturbation("noise", 8).apply(image)
    assert np.array_equal(a.rgb, b.rgb)
    diff = a.rgb.astype(float) - 128
    assert abs(diff.std() - 8) < 0.5 and abs(diff.mean()) < 0.3
    other = image_from_array(flat(127, 64, 64))
    c, _ = Perturbation("noise", 8).apply(other)
    assert not np.array_equal(c.rgb.astype(int) - 127, a.rgb.astype(int) - 128)


def test_apply_rejects_misaligned_mask():
    with pytest.raises(ValueError):
        Perturbation("blur", 3).apply(image_from_array(flat(1, 10, 12)), np.zeros((12, 10), bool))
