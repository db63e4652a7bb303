"""`forgectl explain`: the evidence report (HTML + JSON), generic over registered methods."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgectl import registry, report
from forgectl.backends.base import Backend, MethodSpec, Result
from forgectl.cli import app
from forgectl.intake import encode_jpeg, image_from_array, image_from_bytes
from forgectl.outputs import colorize, png_bytes

REPO = Path(__file__).resolve().parent.parent
IMG_SRC = '<img src="data:image/png;base64,'
runner = CliRunner()


# Stand-in methods registered only for the duration of a test (monkeypatched registry).
class FailingBackend(Backend):
    spec = MethodSpec(name="failing", summary="raises on every image")

    def analyze(self, image):
        raise RuntimeError("analysis exploded\nwith a second line")


class JpegOnlyBackend(Backend):
    spec = MethodSpec(name="jpegonly", summary="needs DCT data", needs_jpeg=True)

    def analyze(self, image):
        h, w = image.height, image.width
        heat = np.zeros((h, w), np.float32)
        heat[: h // 2] = 0.9
        return Result.from_heatmap(
            heat,
            self.threshold,
            maps={"half": heat * 0.5},
            facts={"double_compressed": True, "primary_quality_estimate": 71},
        )


class MissingWeightsBackend(Backend):
    spec = MethodSpec(
        name="needsweights", summary="learned", kind="learned", weights="no-such.safetensors"
    )

    def analyze(self, image):  # pragma: no cover - never constructed without weights
        raise AssertionError


@pytest.fixture
def fake_methods():
    """Register the stand-ins next to the real methods."""
    with ExitStack() as stack:
        for name, cls in (("failing", "FailingBackend"), ("jpegonly", "JpegOnlyBackend"),
                          ("needsweights", "MissingWeightsBackend")):
            stack.enter_context(registry.registered(
                registry.MethodEntry(name, f"tests.test_explain:{cls}")))
        yield


@pytest.fixture
def jpeg_file(tmp_path, make_image) -> Path:
    path = tmp_path / "in" / "photo.jpg"
    path.parent.mkdir()
    path.write_bytes(encode_jpeg(make_image(128, 160, seed=4), 85))
    return path


@pytest.fixture
def png_file(tmp_path, make_image) -> Path:
    path = tmp_path / "in" / "shot.png"
    path.parent.mkdir(exist_ok=True)
    Image.fromarray(make_image(112, 144, seed=5)).save(path)
    return path


def run_explain(image: Path, out: Path, *extra: str) -> tuple[str, dict]:
    result = runner.invoke(app, ["explain", str(image), "--out", str(out), *extra])
    assert result.exit_code == 0, (result.output, result.exception)
    html_path = out / f"{image.stem}.report.html"
    json_path = out / f"{image.stem}.report.json"
    assert str(html_path) in result.stdout and str(json_path) in result.stdout
    assert not list(out.glob(".*.tmp"))
    return html_path.read_text(encoding="utf-8"), json.loads(json_path.read_text())


def cards(html: str) -> list[str]:
    """The HTML of each method card, in run order."""
    return html.split("<article")[1:]


def decode_first_png(card: str) -> np.ndarray:
    payload = card.split(IMG_SRC, 1)[1].split('"', 1)[0]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


def check_method_panels(html: str, record: dict) -> None:
    methods = record["methods"]
    assert len(cards(html)) == len(methods)
    for card, entry in zip(cards(html), methods, strict=True):
        assert {"name", "score", "reading", "applicable", "status", "facts"} <= set(entry)
        assert f"<h3>{entry['name']}</h3>" in card
        if entry["status"] == "error":
            assert entry["error"] and IMG_SRC not in card
            continue
        assert isinstance(entry["reading"], str) and entry["reading"]
        assert 0.0 <= entry["score"] <= 1.0
        if entry["applicable"]:
            # heatmap + overlay, plus one small panel per extra map
            assert card.count(IMG_SRC) == 2 + len(entry["maps"]) + len(entry["figures"])
            assert decode_first_png(card).ndim == 3
        else:
            assert IMG_SRC not in card


def test_jpeg_report_default_methods(jpeg_file, tmp_path):
    html, record = run_explain(jpeg_file, tmp_path / "out")
    assert record["schema"] == report.EXPLAIN_SCHEMA
    facts = record["input"]
    assert facts["format"] == "JPEG" and (facts["width"], facts["height"]) == (160, 128)
    assert facts["bytes"] == jpeg_file.stat().st_size and "exif" in facts
    assert "has_exif_thumbnail" in facts
    jpeg = facts["jpeg"]
    assert jpeg["quality_estimate"] == 85 and jpeg["standard_ijg_tables"] is True
    assert len(jpeg["quant_tables"]) == 3
    assert html.count('<table class="qt">') == 3
    assert "exactly quality 85" in html
    # Every registered method with its weights present ran, in registry order.
    assert [m["name"] for m in record["methods"]] == report.default_methods()
    check_method_panels(html, record)
    assert html.count("<script") == 0


def test_png_report_marks_jpeg_only_methods_not_applicable(png_file, tmp_path, fake_methods):
    html, record = run_explain(png_file, tmp_path / "out", "--methods", "ela,jpegonly")
    assert record["input"]["format"] == "PNG" and "jpeg" not in record["input"]
    by_name = {m["name"]: m for m in record["methods"]}
    assert by_name["jpegonly"]["applicable"] is False
    assert by_name["jpegonly"]["status"] == "not_applicable"
    assert "needs JPEG data" in by_name["jpegonly"]["reading"]
    assert by_name["ela"]["applicable"] is True
    assert record["summary"]["not_applicable"] == ["jpegonly"]
    assert record["double_compression"] == []  # facts of a method that did not apply are ignored
    assert "Not a JPEG file" in html
    check_method_panels(html, record)


def test_png_that_was_a_jpeg_shows_its_table_read_from_the_pixels(jpeg_file, tmp_path):
    png = tmp_path / "in" / "resaved.png"
    png.write_bytes(png_bytes(image_from_bytes(jpeg_file.read_bytes()).rgb))
    html, record = run_explain(png, tmp_path / "out", "--methods", "dq")
    assert record["input"]["format"] == "PNG"
    assert record["input"]["jpeg"]["source"] == "pixels"
    assert record["input"]["jpeg"]["quality_estimate"] == 85
    assert "estimated from the pixels of this PNG" in html and "Not a JPEG file" not in html


def test_a_cropped_resave_shows_the_offset_grid(tmp_path):
    import cv2

    from tests.helpers import REPO

    photo = image_from_bytes((REPO / "examples" / "splice.jpg").read_bytes()).rgb
    photo = cv2.resize(photo, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    pixels = image_from_bytes(encode_jpeg(photo, 80)).rgb
    png = tmp_path / "cropped.png"
    png.write_bytes(png_bytes(np.ascontiguousarray(pixels[3:, 5:])))
    html, record = run_explain(png, tmp_path / "out", "--methods", "dq")
    assert record["input"]["jpeg"]["source"] == "pixels"
    assert record["input"]["jpeg_history_from_pixels"]["grid_offset"] == [5, 3]
    assert "starts 5 px down and 3 px right" in html


def test_generic_facts_fill_the_jpeg_section(jpeg_file, tmp_path, fake_methods):
    html, record = run_explain(jpeg_file, tmp_path / "out", "--methods", "jpegonly")
    assert record["double_compression"] == [
        {"method": "jpegonly", "double_compressed": True, "primary_quality_estimate": 71}
    ]
    assert "first compression at about quality 71" in html
    entry = record["methods"][0]
    assert entry["maps"] == ["half"] and entry["status"] == "flagged"
    # The heatmap panel is the colour map itself: 0.9 on the top half, 0 below.
    heat = decode_first_png(cards(html)[0])
    assert np.array_equal(heat[0, 0], colorize(np.float32([0.9]))[0])
    assert np.array_equal(heat[-1, -1], colorize(np.float32([0.0]))[0])
    assert record["summary"]["flagged"] == [{"method": "jpegonly", "score": entry["score"]}]
    check_method_panels(html, record)


def test_the_jpeg_section_says_when_coefficients_came_from_the_decoder(
        jpeg_file, tmp_path, fake_methods, monkeypatch):
    pytest.importorskip("jpegio")
    monkeypatch.setenv("FORGECTL_JPEG_READER", "jpegio")
    html, _ = run_explain(jpeg_file, tmp_path / "a", "--methods", "jpegonly")
    assert "recomputed from the decoded pixels" not in html
    monkeypatch.setenv("FORGECTL_JPEG_READER", "decoder")
    html, record = run_explain(jpeg_file, tmp_path / "b", "--methods", "jpegonly")
    assert "luminance coefficients recomputed from the decoded pixels" in html
    assert record["input"]["jpeg"]["reader"] == "decoder"


def test_failing_method_is_an_error_panel_not_an_abort(jpeg_file, tmp_path, fake_methods):
    html, record = run_explain(jpeg_file, tmp_path / "out", "--methods", "failing,ela")
    failing, ela = record["methods"]
    assert failing["status"] == "error" and failing["score"] is None
    assert failing["error"] == "RuntimeError: analysis exploded with a second line"
    assert ela["status"] != "error" and ela["score"] is not None
    assert record["summary"]["error"] == ["failing"]
    assert "RuntimeError: analysis exploded with a second line" in cards(html)[0]
    check_method_panels(html, record)


def test_existing_backend_raising_is_caught(jpeg_file, tmp_path, monkeypatch):
    def explode(self, image):
        raise ValueError("bad state")

    monkeypatch.setattr(registry.get_class("ela"), "analyze", explode)
    _, record = run_explain(jpeg_file, tmp_path / "out", "--methods", "ela")
    assert record["methods"][0]["error"] == "ValueError: bad state"


def test_default_selection_skips_methods_without_weights(fake_methods):
    names = report.default_methods()
    assert "needsweights" not in names
    assert {"failing", "jpegonly", "ela"} <= set(names)


def test_exif_text_is_escaped(tmp_path, make_image):
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    exif = Image.Exif()
    exif[0x0131] = hostile  # Software
    exif[0x010F] = "Cam&Co"  # Make
    path = tmp_path / "evil.jpg"
    Image.fromarray(make_image(64, 80, seed=6)).save(path, quality=90, exif=exif.tobytes())
    html, record = run_explain(path, tmp_path / "out", "--methods", "ela")
    assert record["input"]["exif"]["software"] == hostile  # the JSON keeps the raw text
    assert "<script" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "Cam&amp;Co" in html


def test_escape_bounds_and_cleans_text():
    assert report.esc("a\x00b\nc") == "a b c"
    long = report.esc("x" * 1000)
    assert len(long) == report.MAX_TEXT and long.endswith("\u2026")
    assert report.esc("'\"<>&") == "&#x27;&quot;&lt;&gt;&amp;"


def test_large_input_is_downscaled_in_the_report(tmp_path, make_image):
    path = tmp_path / "big.png"
    Image.fromarray(make_image(600, 900, seed=7)).save(path)
    html, _ = run_explain(path, tmp_path / "out", "--methods", "ela")
    sizes = [
        Image.open(io.BytesIO(base64.b64decode(m))).size
        for m in re.findall(r'data:image/png;base64,([^"]+)"', html)
    ]
    assert sizes and max(w for w, _ in sizes) <= report.PREVIEW_BOX[0]
    heat_w, heat_h = decode_first_png(cards(html)[0]).shape[1::-1]
    assert (heat_w, heat_h) == (400, 267)  # fits PANEL_BOX, aspect kept


def test_unknown_method_is_a_usage_error(jpeg_file, tmp_path):
    result = runner.invoke(
        app, ["explain", str(jpeg_file), "--out", str(tmp_path), "--methods", "nope"]
    )
    assert result.exit_code != 0
    assert "unknown method" in str(result.exception)
    assert not list(tmp_path.glob("*.report.*"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FORGECTL_DEBUG="")
    return subprocess.run(
        [sys.executable, "-m", "forgectl", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )


def test_bad_inputs_give_one_line_errors(tmp_path):
    missing = run_cli("explain", str(tmp_path / "missing.jpg"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"forgectl: error: no such file: {tmp_path / 'missing.jpg'}"
    ]
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    bad = run_cli("explain", str(not_image), "--out", str(tmp_path / "o"), "--methods", "ela")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "not an image" in bad.stderr
    assert not (tmp_path / "o").exists()


def test_out_is_required(jpeg_file):
    result = runner.invoke(app, ["explain", str(jpeg_file)])
    assert result.exit_code == 2 and "--out" in result.output


def test_report_never_modifies_the_input(jpeg_file, tmp_path):
    before = jpeg_file.read_bytes()
    run_explain(jpeg_file, jpeg_file.parent, "--methods", "ela")  # out = the input's folder
    assert jpeg_file.read_bytes() == before


def test_image_from_array_report_renders(make_image):
    image = image_from_array(make_image(64, 64, seed=8), jpeg_quality=70)
    explanation = report.explain_image(image, ["ela"])
    html = report.render_html(explanation)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "Content-Security-Policy" in html
    record = report.build_record(explanation)
    json.dumps(record)  # JSON-ready without a custom encoder


def test_an_image_on_standard_input_is_reported_and_kept(jpeg_file, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "forgectl", "explain", "-", "--out", str(out), "--methods", "ela"],
        input=jpeg_file.read_bytes(), capture_output=True, cwd=REPO, timeout=300,
        env=dict(os.environ, FORGECTL_DEBUG=""))
    assert result.returncode == 0, result.stderr
    assert (out / "stdin.jpg").read_bytes() == jpeg_file.read_bytes()
    record = json.loads((out / "stdin.report.json").read_text())
    assert record["input"]["format"] == "JPEG" and (out / "stdin.report.html").is_file()
