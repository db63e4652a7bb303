"""ReConWave's restoration module on the onnx runtime (issue #20): its two networks as
auxiliary networks with ONNX twins, one numpy loop for both runtimes, and no torch import.

Shipped-weights tests skip when the twins are absent (``forgectl export --method reconwave
--shipped`` writes them). Images are tiny; the random-init restorer tests need no weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from forgectl.analysis.disturbance import brightness, contrast
from forgectl.backends import restorer as R
from forgectl.backends.restorer import CLASSIFIER, RESTORER, Restorer, twin_path
from forgectl.intake import encode_jpeg
from forgectl.nets.restoration import (
    RestorerGraph,
    SwinRestorer,
    disturbance_features,
    traceable_restorer,
)
from forgectl.outputs import png_bytes
from forgectl.weights import sha256_file, weights_dir
from tests.helpers import natural_image, run_without_torch

torch.set_num_threads(1)

SHIPPED = weights_dir() / R.DEFAULT_RESTORE_WEIGHTS
TWINS = [twin_path(SHIPPED, n) for n in (CLASSIFIER, RESTORER)]
LOCALIZER_TWIN = weights_dir() / "reconwave-tiny.onnx"
needs_twins = pytest.mark.skipif(
    not all(p.is_file() for p in [*TWINS, LOCALIZER_TWIN]),
    reason="reconwave's ONNX twins are not shipped (forgectl export --method reconwave --shipped)",
)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("FORGECTL_THREADS", "1")


@needs_twins
def test_reconwave_and_restore_run_without_torch(tmp_path):
    # What the torch-free package ships (pyproject: *.onnx, *.json): no .safetensors.
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for f in [*TWINS, LOCALIZER_TWIN, LOCALIZER_TWIN.with_suffix(".json"),
              SHIPPED.with_suffix(".json")]:
        (shipped / f.name).symlink_to(f)
    photo, bright = tmp_path / "photo.jpg", tmp_path / "bright.png"
    photo.write_bytes(encode_jpeg(natural_image(64, 96, seed=1), 90))
    bright.write_bytes(png_bytes(brightness(natural_image(48, 64, seed=2), 0.4)))
    env = {"FORGECTL_WEIGHTS_DIR": str(shipped), "FORGECTL_THREADS": "1"}
    runs = {
        "localize": ["localize", photo, "-m", "reconwave", "-o", tmp_path / "loc"],
        "restore": ["restore", bright, "-o", tmp_path / "res"],
        "stage": ["localize", bright, "-m", "ela", "--restore", "auto", "-o", tmp_path / "ela"],
    }
    for name, args in runs.items():
        done = run_without_torch(args, tmp_path, env, timeout=300)
        assert done.returncode == 0, f"{name}: {done.stderr[-800:]}"
    record = json.loads((tmp_path / "loc" / "photo.json").read_text())
    assert record["method"]["runtime"] == "onnx"
    assert record["facts"]["restoration"]["runtime"] == "onnx"
    assert (tmp_path / "loc" / "photo.mask.png").is_file()
    restored = json.loads((tmp_path / "res" / "bright.restore.json").read_text())
    assert restored["restoration"]["runtime"] == "onnx" and restored["restoration"]["restored"]
    assert (tmp_path / "res" / "bright.restored.png").is_file()
    stage = json.loads((tmp_path / "ela" / "bright.json").read_text())["restoration"]
    assert stage["fired"] and stage["decision"]["runtime"] == "onnx"
    # The stage names the weights by the sha256 their card records, as with the file there.
    assert stage["settings"]["weights_sha256"] == sha256_file(SHIPPED)


@needs_twins
@pytest.mark.parametrize(("kind", "value", "shape"), [
    ("brightness", 0.5, (72, 88)), ("brightness", -0.5, (40, 56)), ("contrast", 2.0, (6, 7)),
])
def test_onnx_restores_as_torch(kind, value, shape):
    rgb = natural_image(*shape, seed=3)
    disturbed = brightness(rgb, value) if kind == "brightness" else contrast(rgb, value)
    # Tile 32: several blended tiles; the 6 x 7 image pads to one window and is grown.
    out = {}
    for runtime in ("torch", "onnx"):
        restorer = Restorer(tile=32, overlap=8, runtime=runtime)
        facts = restorer.decide(disturbed, force=True)
        assert facts["runtime"] == runtime
        if not facts["restored"]:  # the checks may veto on a tiny image: force the network
            facts = {"restored": True, "type": kind, "alpha": value if kind == "brightness"
                     else None, "beta": value if kind == "contrast" else None}
        out[runtime] = (restorer.apply(disturbed, facts), facts)
    (a, fa), (b, fb) = out["torch"], out["onnx"]
    assert {**fa, "runtime": None} == {**fb, "runtime": None}
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # 1/255


@needs_twins
def test_shipped_twins_are_the_export_of_the_shipped_weights():
    from forgectl.export import read_card

    digest = sha256_file(SHIPPED)
    for network, twin in zip((CLASSIFIER, RESTORER), TWINS, strict=True):
        export = read_card(twin)["export"]
        assert export["network"] == network and export["method"] == "reconwave"
        assert export["source_weights_sha256"] == digest, f"{twin.name} is stale: re-export"
        assert export["parity"]["max_abs_diff"] <= export["parity"]["tolerance"]


@needs_twins
def test_auto_runtime_takes_the_twins_and_a_bare_weights_file_takes_torch(tmp_path):
    assert R.resolve_runtime("auto", SHIPPED) == "onnx"
    lone = tmp_path / SHIPPED.name
    lone.write_bytes(b"")
    assert R.resolve_runtime("auto", lone) == "torch"


def test_numpy_features_match_the_training_features():
    from forgectl.nets import restoration as nets

    # Copied into the torch-free module: they must stay the training's.
    assert (R.DISTURBANCE_CLASSES, R.STAT_QUANTILES, R.STAT_SIDE) == (
        nets.DISTURBANCE_CLASSES, nets.STAT_QUANTILES, nets.STAT_SIDE)
    for rgb in (natural_image(37, 53, seed=4), contrast(natural_image(300, 700, seed=5), 2.0),
                np.zeros((9, 9, 3), np.uint8)):
        feeds = R.disturbance_features(rgb, 96, 32)
        x = torch.from_numpy(np.array(rgb.transpose(2, 0, 1))).float()[None] / 255
        thumb, stats = disturbance_features(x, 96, 32)
        np.testing.assert_allclose(feeds["thumb"], thumb.numpy(), atol=2e-6)
        np.testing.assert_allclose(feeds["stats"], stats.numpy(), atol=2e-6)


@pytest.mark.parametrize(("height", "width"), [(8, 24), (16, 16), (24, 40)])
def test_traceable_restorer_is_the_restorer(height, width):
    torch.manual_seed(0)
    net = SwinRestorer(dim=16, groups=[2], heads=2, window=8).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)  # a zero output conv would hide everything
    x = torch.rand(1, 3, height, width)
    cond = torch.from_numpy(R.decided_condition("brightness", -0.3, None))
    with torch.inference_mode():
        eager = RestorerGraph(net)(x, cond)[0]
        traced = traceable_restorer(net, x, cond).clamp(0, 1)
    torch.testing.assert_close(traced, eager, atol=1e-5, rtol=0)


def test_restore_command_rejects_runtime_with_classical(tmp_path, cli):
    src = tmp_path / "in.png"
    src.write_bytes(png_bytes(natural_image(16, 16, seed=6)))
    res = cli(["restore", src, "--mode", "classical", "--runtime", "onnx", "-o", tmp_path])
    assert res.exit_code == 2 and "--runtime" in res.stderr
