"""Intake: format detection by content, JPEG internals against independent decoders, limits."""

from __future__ import annotations

import io
import os
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from forgectl.errors import InputError, UsageError
from forgectl.intake import (
    detect_format,
    encode_jpeg,
    estimate_ijg_quality,
    ijg_table,
    image_from_array,
    image_from_bytes,
    load_image,
)


def _encode(rgb: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "JPEG"), ("PNG", "PNG"), ("TIFF", "TIFF"), ("WEBP", "WEBP"), ("BMP", "BMP"),
     ("GIF", "GIF")],
)
def test_format_detected_from_content_not_name(tmp_path, make_image, fmt, expected):
    rgb = make_image(64, 80)
    path = tmp_path / "misleading.txt"  # the name says nothing true
    path.write_bytes(_encode(rgb, fmt))
    img = load_image(path)
    assert img.format == expected
    assert img.rgb.shape == (64, 80, 3) and img.rgb.dtype == np.uint8
    assert img.is_jpeg == (expected == "JPEG")


def test_detect_format_rejects_text():
    assert detect_format(b"hello world, not an image") is None


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x01\x00meta"


def test_heif_family_told_apart_by_brand_and_videos_refused():
    assert detect_format(_ftyp(b"heic", b"mif1", b"heic")) == "HEIF"
    assert detect_format(_ftyp(b"mif1", b"miaf", b"heic")) == "HEIF"  # generic major brand
    assert detect_format(_ftyp(b"mif1", b"avif", b"miaf")) == "AVIF"
    assert detect_format(_ftyp(b"avif", b"mif1")) == "AVIF"
    assert detect_format(_ftyp(b"isom", b"mp41", b"avc1")) is None  # an MP4 video
    assert detect_format(_ftyp(b"qt  ")) is None  # a QuickTime movie


def test_avif_read_by_pillow(tmp_path, make_image):
    rgb = make_image(64, 80)
    path = tmp_path / "photo.avif"
    path.write_bytes(_encode(rgb, "AVIF", quality=95))
    img = load_image(path)
    assert img.format == "AVIF" and not img.is_jpeg
    assert img.rgb.shape == (64, 80, 3)
    assert np.abs(img.rgb.astype(int) - rgb).mean() < 6  # lossy, but the same picture


def test_heic_read_with_the_optional_package(tmp_path, make_image):
    pillow_heif = pytest.importorskip("pillow_heif")
    rgb = make_image(64, 80)
    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(rgb)).save(buf, quality=95)
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(buf.getvalue())
    img = load_image(path)
    assert img.format == "HEIF" and not img.is_jpeg
    assert img.rgb.shape == (64, 80, 3)
    assert np.abs(img.rgb.astype(int) - rgb).mean() < 6


def test_heic_without_the_optional_package_is_a_one_line_error(monkeypatch):
    import sys

    import forgectl.intake as intake

    intake._register_heif_opener.cache_clear()
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import fails as if not installed
    try:
        with pytest.raises(InputError, match=r"pillow-heif .*forgectl\[heic\]") as err:
            image_from_bytes(_ftyp(b"heic", b"mif1", b"heic") + bytes(64))
    finally:
        intake._register_heif_opener.cache_clear()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("quality", [50, 75, 90, 97])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_quant_tables_equal_pillows(make_image, quality, subsampling):
    data = encode_jpeg(make_image(96, 128), quality, subsampling=subsampling)
    img = image_from_bytes(data)
    pil_tables = Image.open(io.BytesIO(data)).quantization
    # Pillow lists tables by table id; components 0 (Y) and 1 (Cb) use ids 0 and 1.
    np.testing.assert_array_equal(img.jpeg.quant_tables[0].ravel(), np.array(pil_tables[0]))
    np.testing.assert_array_equal(img.jpeg.quant_tables[1].ravel(), np.array(pil_tables[1]))
    assert img.jpeg.quality == quality and img.jpeg.standard_tables
    assert img.jpeg.subsampling == ("4:4:4" if subsampling == 0 else "4:2:0")


def _idct_blocks(coef: np.ndarray, table: np.ndarray) -> np.ndarray:
    h, w = coef.shape
    out = np.zeros((h, w), np.float64)
    for i in range(0, h, 8):
        for j in range(0, w, 8):
            out[i : i + 8, j : j + 8] = cv2.idct((coef[i : i + 8, j : j + 8] * table).astype(
                np.float64))
    return out + 128.0


@pytest.mark.parametrize(("height", "width"), [(96, 128), (101, 77)])
def test_dequantized_idct_reproduces_decoded_luma(make_image, height, width):
    data = encode_jpeg(make_image(height, width, seed=3), 85, subsampling=0)
    img = image_from_bytes(data)
    y = img.jpeg.y_coefficients(img.height, img.width)
    assert y.shape == (8 * -(-height // 8), 8 * -(-width // 8))
    luma = _idct_blocks(y, img.jpeg.y_quant)[:height, :width]
    # Pillow's own luma plane from the same file, before colour conversion.
    decoded_y = np.asarray(Image.open(io.BytesIO(data)).convert("YCbCr"))[:, :, 0]
    diff = np.abs(np.clip(np.round(luma), 0, 255) - decoded_y.astype(np.float64))
    assert np.median(diff) <= 1.0
    assert np.percentile(diff, 99) <= 2.0


@pytest.mark.parametrize(("quality", "subsampling", "height", "width", "progressive"),
                         [(90, 2, 96, 128, False), (75, 0, 101, 77, True), (95, 2, 67, 130, False)])
def test_without_jpegio_the_decoder_gives_the_files_internals(
        make_image, monkeypatch, quality, subsampling, height, width, progressive):
    """jpegio is an optional dependency: without it the tables, sampling and mode
    come from the headers and the Y coefficients from the decoded luma, nearly all equal."""
    buf = io.BytesIO()
    Image.fromarray(make_image(height, width, seed=5)).save(
        buf, format="JPEG", quality=quality, subsampling=subsampling, progressive=progressive)
    data = buf.getvalue()
    pytest.importorskip("jpegio")
    monkeypatch.setenv("FORGECTL_JPEG_READER", "jpegio")
    exact = image_from_bytes(data)
    monkeypatch.setenv("FORGECTL_JPEG_READER", "auto")
    monkeypatch.setitem(sys.modules, "jpegio", None)  # import jpegio fails
    decoded = image_from_bytes(data)
    assert exact.jpeg.reader == "jpegio" and decoded.jpeg.reader == "decoder"
    for a, b in zip(exact.jpeg.quant_tables, decoded.jpeg.quant_tables, strict=True):
        np.testing.assert_array_equal(a, b)
    facts_a, facts_b = exact.jpeg.facts(), decoded.jpeg.facts()
    assert {k: v for k, v in facts_a.items() if k != "reader"} == {
        k: v for k, v in facts_b.items() if k != "reader"}
    assert facts_b["progressive"] is progressive
    ya = exact.jpeg.y_coefficients(height, width)
    yb = decoded.jpeg.y_coefficients(height, width)
    assert ya.shape == yb.shape and yb.dtype == np.int32
    full = (slice(0, height // 8 * 8), slice(0, width // 8 * 8))  # whole blocks only
    assert (ya[full] == yb[full]).mean() > 0.98  # q95: table steps of 1-3, more rounding
    assert np.abs(ya[full] - yb[full]).max() <= 1


def test_coefficients_survive_reader_release(make_image):
    """jpegio hands out views into its own buffers; intake must own copies."""
    img = image_from_bytes(encode_jpeg(make_image(64, 64), 90))
    import gc

    gc.collect()
    _ = [np.ones((512, 512)) for _ in range(20)]  # reuse freed memory if it was freed
    assert img.jpeg.quant_tables[0].max() <= 255 and img.jpeg.quant_tables[0].min() >= 1
    assert np.abs(img.jpeg.coefficients[0]).max() <= 2048


def test_ijg_quality_estimate_and_custom_table():
    for q in (10, 50, 75, 95, 100):
        assert estimate_ijg_quality(ijg_table(q)) == (q, True)
    custom = ijg_table(80).copy()
    custom[0, 0] += 1
    quality, exact = estimate_ijg_quality(custom)
    assert quality == 80 and not exact


def test_sixteen_bit_png_and_tiff_keep_depth(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    colour = np.stack([ramp, ramp[::-1], np.full_like(ramp, 30000)], axis=2)
    for ext in (".png", ".tiff"):
        path = tmp_path / f"deep{ext}"
        cv2.imwrite(str(path), colour[:, :, ::-1])  # OpenCV writes BGR
        img = load_image(path)
        assert img.bit_depth == 16
        assert abs(int(img.rgb[0, -1, 0]) - round(int(ramp[0, -1]) / 257)) <= 1
        assert abs(int(img.rgb[0, 0, 2]) - round(30000 / 257)) <= 1
    grey = tmp_path / "grey16.png"
    Image.fromarray(ramp).save(grey)
    assert load_image(grey).bit_depth == 16


def test_alpha_orientation_and_gif_first_frame(tmp_path, make_image):
    rgba = np.dstack([make_image(40, 50), np.full((40, 50), 128, np.uint8)])
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    img = load_image(p)
    assert img.has_alpha and img.mode == "RGBA" and img.rgb.shape == (40, 50, 3)

    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x0131] = "EditorX 1.0"
    p = tmp_path / "o.jpg"
    Image.fromarray(make_image(40, 56)).save(p, quality=90, exif=exif)
    img = load_image(p)
    assert img.orientation == 6 and img.exif["software"] == "EditorX 1.0"
    assert img.rgb.shape == (40, 56, 3)  # stored grid: not rotated

    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 200)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:])
    img = load_image(p)
    assert img.n_frames == 2 and img.rgb.mean() < 50


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"just some text\n", "not an image"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "truncated"),
    ],
)
def test_bad_bytes_give_clear_errors(data, message):
    with pytest.raises(InputError, match=message):
        image_from_bytes(data)


@pytest.fixture(params=["jpegio", "decoder"])
def jpeg_reader(request, monkeypatch):
    """Each test runs with either JPEG reader (FORGECTL_JPEG_READER)."""
    if request.param == "jpegio":
        pytest.importorskip("jpegio")
    monkeypatch.setenv("FORGECTL_JPEG_READER", request.param)
    return request.param


def test_damaged_entropy_data_is_refused_by_either_reader(jpeg_reader):
    """libjpeg decodes damaged scan data into garbage with only a warning on fd 2; Pillow's
    pixel decode stays silent, so each reader must catch it itself."""
    rng = np.random.default_rng(0)
    data = encode_jpeg((rng.random((128, 128, 3)) * 255).astype(np.uint8), 90)
    restart = bytearray(data)
    restart[len(data) // 2: len(data) // 2 + 2] = b"\xff\xd0"  # a stray marker mid-scan
    with pytest.raises(InputError, match="corrupt JPEG: Corrupt JPEG data"):
        image_from_bytes(bytes(restart))
    zeroed = bytearray(data)
    zeroed[len(data) // 3: len(data) // 3 + 64] = bytes(64)
    with pytest.raises(InputError, match="corrupt JPEG"):
        image_from_bytes(bytes(zeroed))
    assert image_from_bytes(data).jpeg.reader == jpeg_reader


def test_truncated_and_bit_flipped_jpegs_never_crash(make_image, jpeg_reader):
    data = encode_jpeg(make_image(128, 160), 90)
    for cut in (20, 200, len(data) // 2, len(data) - 3):
        with pytest.raises(InputError):
            image_from_bytes(data[:cut])
    rng = np.random.default_rng(0)
    errors = 0
    for _ in range(40):
        flipped = bytearray(data)
        for pos in rng.integers(300, len(data) - 2, size=8):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        try:
            image_from_bytes(bytes(flipped))
        except InputError:
            errors += 1
    assert errors > 0  # damaged entropy data is refused, never a crash


def test_pixel_limit_checked_before_decoding(make_image):
    data = encode_jpeg(make_image(100, 100), 90)
    with pytest.raises(InputError, match="over the limit"):
        image_from_bytes(data, max_pixels=5_000)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)


def test_image_from_array_jpeg_has_real_coefficients(make_image):
    img = image_from_array(make_image(64, 64), jpeg_quality=70)
    assert img.format == "JPEG" and img.jpeg.quality == 70
    plain = image_from_array(make_image(64, 64))
    assert plain.jpeg is None and plain.format == "RAW"


def test_input_file_is_not_modified(tmp_path, make_image):
    p = tmp_path / "x.jpg"
    p.write_bytes(encode_jpeg(make_image(64, 64), 80))
    before = (p.read_bytes(), p.stat().st_mtime_ns)
    load_image(p)
    assert (p.read_bytes(), p.stat().st_mtime_ns) == before


def test_the_reader_can_be_forced_to_the_decoder(make_image, monkeypatch):
    """FORGECTL_JPEG_READER=decoder gives what an install without jpegio gives, jpegio or not;
    a wrong value is refused with the values it takes."""
    data = encode_jpeg(make_image(64, 80, seed=2), 85)
    monkeypatch.setenv("FORGECTL_JPEG_READER", "decoder")
    forced = image_from_bytes(data)
    monkeypatch.setenv("FORGECTL_JPEG_READER", "auto")
    monkeypatch.setitem(sys.modules, "jpegio", None)  # import jpegio fails
    missing = image_from_bytes(data)
    assert forced.jpeg.reader == missing.jpeg.reader == "decoder"
    np.testing.assert_array_equal(forced.jpeg.coefficients[0], missing.jpeg.coefficients[0])
    monkeypatch.setenv("FORGECTL_JPEG_READER", "jpegio")
    with pytest.raises(UsageError, match="jpegio is not installed"):
        image_from_bytes(data)
    monkeypatch.setenv("FORGECTL_JPEG_READER", "libjpeg")
    with pytest.raises(UsageError, match="expected one of auto, jpegio, decoder"):
        image_from_bytes(data)


def test_a_wrong_jpeg_reader_is_one_line_and_exit_2(tmp_path):
    import subprocess

    env = dict(os.environ, FORGECTL_JPEG_READER="fast")
    proc = subprocess.run([sys.executable, "-m", "forgectl.cli", "localize", "x.jpg", "--out",
                           str(tmp_path / "o")], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "forgectl: error: FORGECTL_JPEG_READER='fast': expected one of auto, jpegio, decoder"]
    assert not (tmp_path / "o").exists()
