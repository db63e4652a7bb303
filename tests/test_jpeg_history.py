"""A JPEG history read from pixels: lossless re-saves of JPEGs get their table and coefficients
back; never-compressed, resampled and off-grid images get none."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from forgectl import registry
from forgectl.analysis.jpeg_history import (
    attach_pixel_history,
    jpeg_history_from_pixels,
    requantize,
)
from forgectl.intake import encode_jpeg, ijg_table, image_from_array, image_from_bytes
from forgectl.outputs import png_bytes
from tests.helpers import REPO

H, W = 384, 512


def _decoded(rgb: np.ndarray, quality: int, subsampling: int = 2) -> np.ndarray:
    return image_from_bytes(encode_jpeg(rgb, quality, subsampling=subsampling)).rgb


@pytest.mark.parametrize(("quality", "subsampling"), [(50, 2), (75, 0), (90, 2)])
def test_recovers_the_table_of_a_decoded_jpeg(make_image, quality, subsampling):
    history = jpeg_history_from_pixels(_decoded(make_image(H, W, 1), quality, subsampling))
    assert history.table is not None
    np.testing.assert_array_equal(history.table, ijg_table(quality))


@pytest.mark.parametrize("case", ["never compressed", "resampled"])
def test_no_history_where_the_lattice_is_gone(make_image, case):
    rgb = make_image(H, W, 2)
    if case == "resampled":
        rgb = cv2.resize(_decoded(rgb, 80), None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
    history = jpeg_history_from_pixels(rgb)
    assert history.table is None
    assert history.facts()["found"] is False


def test_requantized_coefficients_are_the_files(make_image):
    data = encode_jpeg(make_image(H, W, 3), 80)
    jpeg = image_from_bytes(data)
    table = jpeg_history_from_pixels(jpeg.rgb).table
    assert table is not None
    ours = requantize(jpeg.rgb, table)
    theirs = jpeg.jpeg.y_coefficients(H, W)
    assert ours.shape == theirs.shape
    # Decoding rounds to 8 bits and clips: a few coefficients of a few blocks may move by one.
    assert (ours == theirs).mean() > 0.99


def _dq_forgery(make_image) -> tuple[bytes, np.ndarray]:
    """dq's own test forgery: a q65 host, a never-compressed paste, saved at q90 (JPEG bytes,
    (H, W) truth)."""
    host = _decoded(make_image(H, W, 0), 65)
    truth = np.zeros((H, W), bool)
    truth[96:256, 160:352] = True
    forged = host.copy()
    forged[truth] = make_image(H, W, 100)[truth]
    return encode_jpeg(forged, 90), truth


def test_jpeg_methods_read_a_png_resave_as_the_jpeg(make_image):
    # dq's test forgery decoded and saved as PNG: dq finds the paste on it as on the JPEG.
    data, truth = _dq_forgery(make_image)
    as_jpeg = image_from_bytes(data)
    as_png = image_from_bytes(png_bytes(as_jpeg.rgb))
    assert as_png.jpeg is None

    dq = registry.load("dq")
    from_png, from_jpeg = dq.localize(as_png), dq.localize(as_jpeg)
    assert from_png.applicable and from_png.facts["double_compressed"]
    f1 = 2 * (from_png.mask & truth).sum() / (from_png.mask.sum() + truth.sum())
    assert f1 > 0.7
    assert abs(from_png.score - from_jpeg.score) < 0.05
    facts = as_png.facts()
    assert facts["format"] == "PNG"
    assert facts["jpeg"]["source"] == "pixels" and facts["jpeg"]["quality_estimate"] == 90
    assert facts["jpeg_history_from_pixels"]["found"] is True
    assert as_jpeg.facts()["jpeg"]["source"] == "file"


def test_a_png_without_history_stays_not_applicable_and_says_why(make_image):
    image = image_from_array(make_image(96, 128, 5))
    result = registry.load("dq").localize(image)
    assert not result.applicable
    assert "no earlier JPEG save" in result.note
    assert image.facts()["jpeg_history_from_pixels"]["found"] is False


def test_attach_runs_once_and_never_touches_a_jpeg_file(make_image):
    jpeg = image_from_array(make_image(H, W, 6), jpeg_quality=85)
    own = jpeg.jpeg
    attach_pixel_history(jpeg)
    assert jpeg.jpeg is own and jpeg.pixel_history is None

    png = image_from_bytes(png_bytes(jpeg.rgb))
    attach_pixel_history(png)
    first = png.jpeg
    attach_pixel_history(png)
    assert png.jpeg is first is not None


def test_localize_records_where_the_jpeg_data_came_from(make_image, tmp_path, cli):
    import json

    rgb = _decoded(make_image(H, W, 7), 75)
    (tmp_path / "was-jpeg.png").write_bytes(png_bytes(rgb))
    (tmp_path / "never.png").write_bytes(png_bytes(make_image(H, W, 8)))
    result = cli(["localize", tmp_path / "was-jpeg.png", tmp_path / "never.png", "-m", "dq",
                  "--out", tmp_path / "out", "--json"])
    assert result.exit_code == 0, result.stderr
    records = {r["input"]["path"].rsplit("/", 1)[-1]: r
               for r in map(json.loads, result.stdout.splitlines())}
    was = records["was-jpeg.png"]
    assert was["applicable"] and was["input"]["jpeg"]["source"] == "pixels"
    assert was["input"]["jpeg"]["quality_estimate"] == 75
    never = records["never.png"]
    assert not never["applicable"] and "jpeg" not in never["input"]
    assert never["input"]["jpeg_history_from_pixels"]["found"] is False


def test_off_lattice_share_tells_a_finer_last_save_from_decoding_error():
    from forgectl.analysis.jpeg_history import StepEstimate, off_lattice_share

    rng = np.random.default_rng(0)
    k = rng.integers(-6, 7, size=(4000, 8, 8)) * 6.0
    steps = np.full((8, 8), 6, np.int32)
    estimate = StepEstimate(steps=steps, strength=np.ones((8, 8), np.float32),
                            support=np.full((8, 8), 4000, np.int32))
    positions = [(0, 1), (1, 0), (1, 1)]
    decoded = k + rng.normal(0, 0.35, k.shape)  # one save at step 6, decoding error only
    assert off_lattice_share(decoded, estimate, positions) < 0.1
    # A last save at step 1 over it: a third of the values rounded one unit off the lattice.
    resaved = np.rint(k + rng.choice([-1.0, 0.0, 0.0, 1.0], k.shape) * (rng.random(k.shape) < 0.6))
    assert off_lattice_share(resaved + rng.normal(0, 0.3, k.shape), estimate, positions) > 0.2


def test_casia_resaved_as_png_reads_like_its_jpeg(casia_dir, tmp_path):
    # CASIA v1 splices saved at quality ~100 over an earlier JPEG (steps of 1 in the file):
    # the pixels show the earlier lattice; dq must still see the double compression.
    names = ["Sp_D_NRN_A_art0009_cha0002_0454", "Sp_D_NRN_A_cha0005_pla0082_0484",
             "Sp_D_NND_A_sec0014_ani0016_0617"]
    dq = registry.load("dq")
    checked = 0
    for name in names:
        found = sorted((casia_dir / "images").glob(f"{name}.*"))
        if not found:
            continue
        jpeg = image_from_bytes(found[0].read_bytes())
        png = image_from_bytes(png_bytes(jpeg.rgb))
        from_jpeg, from_png = dq.localize(jpeg), dq.localize(png)
        assert png.jpeg is not None and png.jpeg.source == "pixels"
        assert from_png.facts["double_compressed"] == from_jpeg.facts["double_compressed"]
        assert abs(from_png.score - from_jpeg.score) < 0.05
        checked += 1
    if not checked:
        pytest.skip("none of the CASIA files of this test is in the dev split")


def test_ghost_reads_the_lattice_quality_where_a_finer_save_is_misread(corpus_dir):
    # A dark photo whose decoding error puts a fifth of the coefficients a unit off the q60
    # lattice, like a finer last save: the table becomes all ones, but the quality ghost
    # compares against stays the lattice's, so ghost reads the PNG as it reads the JPEG.
    photo = corpus_dir / "imagenet_det200" / "n01503061_11000_bird.jpg"
    if not photo.is_file():
        pytest.skip("the photo of this test is not in the corpus")
    rgb = cv2.resize(image_from_bytes(photo.read_bytes()).rgb, None, fx=0.9, fy=0.9,
                     interpolation=cv2.INTER_AREA)
    jpeg = image_from_bytes(encode_jpeg(rgb, 60))
    png = image_from_bytes(png_bytes(jpeg.rgb))
    attach_pixel_history(png)
    assert png.jpeg is not None and png.jpeg.quality == 60
    ghost = registry.load("ghost")
    flagged_png = ghost.localize(png).tampered_fraction
    assert abs(flagged_png - ghost.localize(jpeg).tampered_fraction) < 0.05


@pytest.mark.parametrize(("crop", "quality"), [((3, 5), 80), ((7, 1), 95), ((2, 6), 60)])
def test_a_crop_after_the_save_is_found_on_its_offset_grid(crop, quality):
    # A real photo (the bundled example, resized so that its own JPEG lattice is gone): the
    # offset scan needs detail in both directions, which the synthetic texture lacks.
    photo = cv2.resize(image_from_bytes((REPO / "examples" / "splice.jpg").read_bytes()).rgb,
                       None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    dy, dx = crop
    rgb = np.ascontiguousarray(_decoded(photo, quality)[dy:, dx:])
    history = jpeg_history_from_pixels(rgb)
    assert history.offset == ((8 - dy) % 8, (8 - dx) % 8)
    np.testing.assert_array_equal(history.table, ijg_table(quality))


def test_jpeg_methods_run_on_the_grid_of_a_cropped_resave_and_crop_back(make_image):
    # dq's test forgery decoded, cropped by (3, 5) and saved as PNG: dq runs on the view
    # padded back onto the JPEG grid and its map lines up with the crop.
    data, truth = _dq_forgery(make_image)
    pixels = image_from_bytes(data).rgb
    png = image_from_bytes(png_bytes(np.ascontiguousarray(pixels[3:, 5:])))
    result = registry.load("dq").localize(png)
    assert result.applicable and result.heatmap.shape == (H - 3, W - 5)
    assert result.facts["jpeg_grid_offset"] == [5, 3]
    # The blocks that mix padding with the image's first 5 rows / 3 columns are left cold.
    assert result.heatmap[:5].max() == 0 and result.heatmap[:, :3].max() == 0
    cropped_truth = truth[3:, 5:]
    f1 = 2 * (result.mask & cropped_truth).sum() / (result.mask.sum() + cropped_truth.sum())
    assert f1 > 0.7
    facts = png.facts()
    assert facts["jpeg"]["source"] == "pixels"
    assert facts["jpeg_history_from_pixels"]["grid_offset"] == [5, 3]
