"""MUN on onnxruntime without torch: both shipped twins (``weights/mun-tiny.onnx`` and the
noise extractor's ``weights/noiseprint-tiny.onnx``, written by ``forgectl export --method mun
--shipped``), the numpy tiling loop and anomaly map they run through, and their agreement with
the torch runtime. Tests that need the shipped files skip cleanly without them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from forgectl.analysis.noiseprint import extract_tiled, noiseprint_heatmap, noiseprint_input
from forgectl.errors import WeightsError
from forgectl.intake import encode_jpeg, image_from_array
from forgectl.weights import weights_dir
from tests.helpers import natural_image, run_without_torch

TOL = 1e-4


@pytest.fixture(scope="module")
def twins() -> tuple[Path, Path]:
    """The shipped ONNX twins of MUN and of its noise extractor."""
    folder = weights_dir()
    mun, extractor = folder / "mun-tiny.onnx", folder / "noiseprint-tiny.onnx"
    if not (mun.is_file() and extractor.is_file()):
        pytest.skip("shipped MUN twins absent (forgectl export --method mun --shipped)")
    return mun, extractor


def test_localize_mun_runs_where_torch_cannot_be_imported(twins, tmp_path):
    """The default runtime of `localize -m mun` is onnx once the twins exist, and neither the
    command nor its worker process imports torch (``run_without_torch`` blocks it in every
    interpreter that starts, so a stray import, e.g. of ``forgectl.nets``, fails the run)."""
    src = tmp_path / "photo.jpg"
    src.write_bytes(encode_jpeg(natural_image(72, 104, seed=11), 85))
    env = {"FORGECTL_THREADS": "1", "OMP_NUM_THREADS": "1",
           "FORGECTL_WEIGHTS_DIR": str(twins[0].parent)}
    out = tmp_path / "out"
    done = run_without_torch(["localize", src, "-m", "mun", "--out", out, "--json"], tmp_path,
                             env, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    record = json.loads((out / "photo.json").read_text())
    assert record["method"]["runtime"] == "onnx"
    assert record["method"]["weights"] == "mun-tiny.onnx"
    assert record["facts"]["noiseprint_weights"] == "noiseprint-tiny.safetensors"
    for suffix in (".mask.png", ".heatmap.png", ".overlay.png"):
        assert (out / f"photo{suffix}").is_file()
    # The control: the torch runtime fails there, so torch really was out of reach.
    done = run_without_torch(["localize", src, "-m", "mun", "--runtime", "torch", "--out",
                              tmp_path / "control"], tmp_path, env, timeout=300)
    assert done.returncode != 0 and "torch" in done.stderr.lower()


def test_onnx_and_torch_runtimes_give_the_same_maps(twins):
    pytest.importorskip("torch")
    from forgectl.backends.mun import MunBackend

    onnx, torch_ = MunBackend(runtime="onnx", tile=96, overlap=16), MunBackend(
        runtime="torch", tile=96, overlap=16)
    # Tiled (two tiles of 96 per axis) and odd-sized, so blending and padding are covered.
    image = image_from_array(natural_image(101, 150, seed=12), jpeg_quality=80)
    a, b = onnx.localize(image), torch_.localize(image)
    assert float(np.abs(a.heatmap - b.heatmap).max()) <= TOL
    assert float(np.abs(a.maps["noiseprint"] - b.maps["noiseprint"]).max()) <= TOL
    assert a.facts == b.facts and a.facts["tiles"] == 4


def test_tiled_extraction_through_the_twin_equals_one_pass(twins):
    """The numpy loop with small tiles gives the twin's one-pass result (margins right),
    using only the margin and scale the twin's own card records."""
    from forgectl.backends.learned import OnnxRunner

    run = OnnxRunner(twins[1], threads=1)
    export = run.card["export"]
    margin = export["constraints"]["receptive_margin"]
    x = noiseprint_input(natural_image(77, 90, seed=13), export["inputs"]["image"]["scale"])
    full = run({"image": x})["noiseprint"]
    tiled = extract_tiled(run, x, margin, tile=32)
    np.testing.assert_allclose(tiled, full, atol=1e-5, rtol=0)
    # Too small a margin shows: the check above would catch a wrong card.
    assert np.abs(extract_tiled(run, x, margin - 2, tile=32) - full).max() > 1e-3


def test_onnx_runtime_needs_the_extractor_twin(twins, tmp_path, monkeypatch):
    from forgectl.backends.mun import MunBackend

    (tmp_path / "mun-tiny.onnx").symlink_to(twins[0])
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(tmp_path))
    backend = MunBackend(runtime="onnx")
    with pytest.raises(WeightsError, match="noiseprint-tiny.onnx.*--shipped"):
        backend.localize(image_from_array(natural_image(64, 64, seed=1), jpeg_quality=90))


def test_numpy_anomaly_map_matches_the_torch_formula():
    """The anomaly map moved to numpy (the onnx path has no torch); this is the torch formula
    MUN used before, restated, to pin that the maps did not change beyond float rounding."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    def reference(residual: torch.Tensor, window: int) -> torch.Tensor:
        _, _, h, w = residual.shape
        ys = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1)
        xs = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w)
        k = 2.0 * math.pi / 8
        r = residual
        maps = torch.cat([r, r * r, r * torch.cos(k * xs), r * torch.sin(k * xs),
                          r * torch.cos(k * ys), r * torch.sin(k * ys)], dim=1)
        pooled = F.avg_pool2d(maps, window + 1 - window % 2, stride=1, padding=window // 2,
                              count_include_pad=False)
        desc = torch.cat([pooled[:, :1], torch.log(pooled[:, 1:2].clamp_min(1e-30)),
                          pooled[:, 2:]], dim=1)
        flat = desc.flatten(2)
        med = flat.median(dim=2, keepdim=True).values
        mad = (flat - med).abs().median(dim=2, keepdim=True).values
        scale = 1.4826 * mad + 1e-3 * flat.std(dim=2, keepdim=True) + 1e-20
        z2 = (((flat - med) / scale) ** 2).mean(dim=1, keepdim=True)
        return (z2 / (z2 + 9.0)).view(1, 1, h, w)

    rng = np.random.default_rng(0)
    residual = (rng.standard_normal((61, 90)) * 0.3).astype(np.float32)
    residual[20:40, 30:60] *= 3.0  # a region of another energy
    for window in (32, 15):
        ref = reference(torch.from_numpy(residual)[None, None], window)[0, 0].numpy()
        np.testing.assert_allclose(noiseprint_heatmap(residual, window), ref, atol=1e-5, rtol=0)
