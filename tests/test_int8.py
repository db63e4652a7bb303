"""The int8 runtime (issue #20): `forgectl export --int8` quantizes a float ONNX twin, the int8
runtime runs it, `auto` prefers it, and the shipped int8 twin stays close to the float one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from forgectl import registry
from forgectl.backends.learned import OnnxRunner, twin_name
from forgectl.export import INT8_TOLERANCE, quantize_int8
from forgectl.intake import image_from_array
from forgectl.weights import CHECKOUT_DIR, sha256_file
from tests.helpers import invoke, natural_image

SHIPPED_INT8 = CHECKOUT_DIR / "omni-tiny.int8.onnx"


def test_twin_names():
    assert twin_name("omni-tiny.safetensors", "onnx").name == "omni-tiny.onnx"
    assert twin_name("omni-tiny.safetensors", "int8").name == "omni-tiny.int8.onnx"
    assert twin_name("omni-tiny.safetensors", "torch").name == "omni-tiny.safetensors"


@pytest.mark.parametrize("args, message", [
    (["-m", "ela", "--int8", "--calibration", "."], "classical"),
    (["-m", "mun", "--int8", "--calibration", "."], "no int8 recipe"),
    (["-m", "omni", "--int8"], "--calibration"),
    (["-m", "omni", "--calibration", "."], "--calibration goes with --int8"),
])
def test_export_int8_usage_errors(args, message):
    result = invoke(["export", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_int8_is_refused_by_methods_without_an_int8_twin():
    result = invoke(["localize", "x.jpg", "-m", "ela", "--runtime", "int8"])
    assert result.exit_code == 2 and "cannot run with --runtime int8" in result.output


def test_auto_prefers_the_int8_twin_then_the_float_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(tmp_path))
    for name in ("omni-tiny.safetensors", "omni-tiny.json"):
        shutil.copy(CHECKOUT_DIR / name, tmp_path / name)
    assert registry.load("omni").runtime == "torch"
    shutil.copy(CHECKOUT_DIR / "omni-tiny.onnx", tmp_path / "omni-tiny.onnx")
    assert registry.load("omni").runtime == "onnx"
    # The twin's presence decides the runtime (nothing is run here): without a shipped int8
    # twin, the float one stands in under its name.
    shutil.copy(SHIPPED_INT8 if SHIPPED_INT8.is_file() else CHECKOUT_DIR / "omni-tiny.onnx",
                tmp_path / "omni-tiny.int8.onnx")
    backend = registry.load("omni")
    assert backend.runtime == "int8" and backend.engine == "onnx"
    assert backend.weights_path.name == "omni-tiny.int8.onnx"
    # The fusion's learned member follows when it runs the method's own file (here: the one
    # the shipped fusion was fitted on); its classical members have one runtime.
    fitted = tmp_path / "fitted"
    fitted.mkdir()
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(fitted))
    for name in ("auto-tiny.safetensors", "auto-tiny.json"):
        shutil.copy(CHECKOUT_DIR / name, fitted / name)
    own = "auto-tiny.omni" if (CHECKOUT_DIR / "auto-tiny.omni.json").is_file() else "omni-tiny"
    for suffix in (".safetensors", ".json", ".onnx"):
        shutil.copy(CHECKOUT_DIR / (own + suffix), fitted / ("omni-tiny" + suffix))
    shutil.copy(fitted / "omni-tiny.onnx", fitted / "omni-tiny.int8.onnx")
    fusion = registry.load("auto", runtime="int8")
    assert fusion.member("omni").runtime == "int8"
    # A member file the fusion keeps of its own has no int8 twin: it runs the float one.
    if own != "omni-tiny":
        monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(CHECKOUT_DIR))
        kept = registry.load("auto", runtime="int8").member("omni")
        assert kept.runtime == "onnx" and kept.weights_path.name == "auto-tiny.omni.onnx"


@pytest.mark.slow
def test_quantize_int8_writes_a_runnable_int8_twin(tmp_path, monkeypatch):
    """Random tiny omni: export the float twin, quantize it on a few photos, run it."""
    pytest.importorskip("torch")
    from forgectl.export import export_model
    from tests.test_omni import _write_weights

    weights = _write_weights(tmp_path, with_box_head=False)
    float_twin = tmp_path / "omni-tiny.onnx"
    export_model(registry.load("omni", weights=weights, runtime="torch"), "onnx", float_twin)
    photos = []
    for i in range(4):
        photos.append(tmp_path / f"photo{i}.jpg")
        Image.fromarray(natural_image(200, 264, seed=10 + i)).save(photos[-1], quality=85)
    backend = registry.load("omni", weights=float_twin, runtime="onnx")
    out = tmp_path / "omni-tiny.int8.onnx"
    # Random weights say nothing about int8 accuracy (the shipped twin's test does).
    report = quantize_int8(backend, photos, out, tolerance=1.0)
    assert out.is_file() and report.size_bytes == out.stat().st_size
    runner = OnnxRunner(out, threads=1)
    card = runner.card
    assert card["export"]["method"] == "omni" and card["export"]["precision"] == "int8"
    quant = card["quantization"]
    assert quant["source_sha256"] == sha256_file(float_twin)
    assert quant["kept_float_nodes"] > 0 and len(quant["comparison"]["samples"]) == 3
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    result = invoke(["localize", photos[0], "-m", "omni", "--weights", out, "--runtime", "int8",
                     "--out", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "photo0.json").read_text())
    assert record["method"]["runtime"] == "int8"


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_INT8.is_file(), reason="no shipped int8 twin")
def test_the_shipped_int8_twin_stays_close_to_the_float_one():
    """On a photo-like JPEG it was not calibrated on, the int8 heatmap is within the export
    tolerance of the float twin's (mean |diff|), and the masks mostly agree."""
    image = image_from_array(natural_image(480, 640, seed=21), name="q.jpg", jpeg_quality=88)
    floats = registry.load("omni", runtime="onnx").localize(image)
    ints = registry.load("omni", runtime="int8").localize(image)
    diff = np.abs(floats.heatmap - ints.heatmap)
    assert diff.mean() <= INT8_TOLERANCE
    assert (floats.mask != ints.mask).mean() <= 0.05
