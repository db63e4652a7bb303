"""`forgectl export` and `localize --runtime onnx`: parity, dynamic sizes, embedded card, errors.

Learned methods are exported from a randomly initialised tiny Omni-IML saved to a temporary
weights file and card (the loading path users hit), so the tests need no shipped weights; the
contract test also walks every learned method in the registry. Images are tiny and the
backend's tile is 96, so the parity runs cover single tiles of two sizes and a tiled image.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from forgectl import export as ex
from forgectl import registry
from forgectl.backends.learned import OnnxRunner
from forgectl.backends.omni import ROUTE_FUSED, ROUTE_GATE, ROUTE_RGB, OmniBackend
from forgectl.cli import app
from forgectl.errors import UsageError, WeightsError
from forgectl.intake import encode_jpeg, load_image
from tests.helpers import REPO, natural_image, write_random_weights

torch.set_num_threads(1)

TOL = ex.DEFAULT_TOLERANCE
#: Parity inputs: with tile 96, a 64x96 single tile, an 80x72 PNG padded to 96x96 (RGB route)
#: and a 128x160 JPEG cut into 96x96 tiles (gate over tiles, blending).
SMALL = ((64, 96, 85), (80, 72, None), (128, 160, 75))
LEARNED = [m for m in registry.available() if registry.get_spec(m).kind == "learned"]
#: The random-init omni always runs, so the contract test never tests nothing.
RANDOM_OMNI = "omni(random-init)"


def _write_weights(folder):
    from forgectl.nets.omni import OmniIML
    from forgectl.recipes.omni import recipe

    torch.manual_seed(0)
    config = copy.deepcopy(recipe().configs["tiny"])
    config["model"]["pretrained"] = False
    model = OmniIML(config["model"], with_box_head=False, pretrained=False)
    return write_random_weights(model, folder / "omni-tiny.safetensors", "omni", config)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _write_weights(tmp_path_factory.mktemp("omni-weights"))


@pytest.fixture(scope="module")
def backend(weights):
    return OmniBackend(weights=weights, tile=96, overlap=16)


@pytest.fixture(scope="module")
def small_images():
    return ex.sample_images(SMALL)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, backend, small_images):
    """One export per format of the random-init omni, shared by the tests below."""
    folder = tmp_path_factory.mktemp("exported")
    cache = {}

    def get(fmt: str) -> ex.ExportReport:
        if fmt not in cache:
            out = folder / ("omni.onnx" if fmt == "onnx" else "omni.pt")
            cache[fmt] = ex.export_model(backend, fmt, out, images=small_images)
        return cache[fmt]

    return get


@pytest.fixture
def two_samples(monkeypatch):
    """Parity on two small samples (the default set is larger, and slower)."""
    monkeypatch.setattr(ex, "SAMPLES", SMALL[:2])


def _feeds(h: int, w: int, route: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((1, 3, h, w)).astype(np.float32),
            "dct": rng.integers(0, 21, (1, h, w)).astype(np.uint8),
            "qtable": rng.integers(1, 60, (1, 8, 8)).astype(np.int64),
            "route": np.array([route], np.int64)}


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("fmt", ex.FORMATS)
@pytest.mark.parametrize("method", [*LEARNED, RANDOM_OMNI])
def test_every_learned_backend_exports_and_passes_parity(method, fmt, exported, backend,
                                                         small_images, tmp_path):
    if method == RANDOM_OMNI:
        report, source = exported(fmt), backend
    else:
        source = registry.load(method, runtime="torch")
        out = tmp_path / (f"{method}.onnx" if fmt == "onnx" else f"{method}.pt")
        report = ex.export_model(source, fmt, out, images=small_images)
    assert "onnx" in source.runtimes
    assert report.path.is_file() and report.format == fmt
    assert report.max_abs_diff <= TOL
    assert len(report.samples) == len(small_images)
    card = ex.read_card(report.path)
    assert card["export"]["method"] == source.spec.name
    assert card["export"]["parity"]["max_abs_diff"] == report.max_abs_diff
    if fmt == "onnx":  # the exported file also runs as a backend runtime
        import onnx

        # Node names only where an int8 twin picks its float nodes by them (smaller files).
        nodes = onnx.load(str(report.path)).graph.node
        assert any(n.name for n in nodes) == ("int8" in source.runtimes)
        onnx_backend = type(source)(weights=report.path, runtime="onnx",
                                    **getattr(source, "options", {}))
        image = small_images[-1]
        diff = np.abs(onnx_backend.localize(image).heatmap - source.localize(image).heatmap)
        assert float(diff.max()) <= TOL


# ------------------------------------------------------------------ the exported graph


def test_parity_covers_two_graph_sizes_and_tiling(exported, backend, small_images):
    report = exported("onnx")
    sizes = {tuple(r["size"]) for r in report.samples}
    assert len(sizes) == 3 and report.max_abs_diff <= TOL
    modalities = {r["modality"] for r in report.samples}
    assert "rgb" in modalities  # the PNG sample is forced onto the RGB route
    tiled = backend.localize(small_images[-1]).facts
    assert tiled["tiles"] > 1 and tiled["gate_tiles"] > 1


@pytest.mark.parametrize("fmt", ex.FORMATS)
def test_dynamic_height_and_width_match_torch_on_every_route(fmt, exported, backend):
    report = exported(fmt)
    names = backend.export_graph().input_names, backend.export_graph().output_names
    runner = (OnnxRunner(report.path) if fmt == "onnx"
              else ex.TorchScriptRunner(report.path, *names))
    torch_run = backend.torch_runner()
    for h, w in ((64, 64), (96, 160)):  # neither is the trace size (224 x 288)
        for route in (ROUTE_GATE, ROUTE_FUSED, ROUTE_RGB):
            feeds = _feeds(h, w, route, seed=h + route)
            got, ref = runner(feeds), torch_run(feeds)
            assert got["mask"].shape == (1, 1, h, w)
            assert float(np.abs(got["mask"] - ref["mask"]).max()) <= TOL
            assert bool(got["use_rgb"][0]) == bool(ref["use_rgb"][0])
            if route == ROUTE_GATE:
                assert abs(float(got["gate"][0]) - float(ref["gate"][0])) <= TOL
            else:
                assert bool(got["use_rgb"][0]) == (route == ROUTE_RGB)


def test_a_gate_reading_the_grid_profile_exports_with_dynamic_sizes(tmp_path):
    from forgectl.nets.omni import OmniIML
    from forgectl.recipes.omni import recipe

    torch.manual_seed(1)
    config = copy.deepcopy(recipe().configs["tiny"])
    config["model"].update(pretrained=False, gate_grid_profile=True)
    model = OmniIML(config["model"], with_box_head=False, pretrained=False)
    torch.nn.init.normal_(model.gate.profile[2].weight, std=3.0)  # trained: it counts
    path = write_random_weights(model, tmp_path / "omni-tiny.safetensors", "omni", config)
    backend = OmniBackend(weights=path, tile=96, overlap=16)
    report = ex.export_model(backend, "onnx", tmp_path / "omni.onnx",
                             images=ex.sample_images(SMALL[:1]))
    runner, torch_run = OnnxRunner(report.path), backend.torch_runner()
    for h, w in ((64, 64), (96, 160)):  # strided phase slices follow the size
        feeds = _feeds(h, w, ROUTE_GATE, seed=h)
        got, ref = runner(feeds), torch_run(feeds)
        assert abs(float(got["gate"][0]) - float(ref["gate"][0])) <= TOL


def test_self_correlation_exports_with_dynamic_sizes(tmp_path):
    from forgectl.nets.omni import OmniIML
    from forgectl.recipes.omni import recipe

    torch.manual_seed(2)
    config = copy.deepcopy(recipe().configs["tiny"])
    config["model"].update(pretrained=False,
                           self_correlation={"dim": 16, "k": 4, "exclude": 1})
    model = OmniIML(config["model"], with_box_head=False, pretrained=False)
    torch.nn.init.normal_(model.self_correlation.head[-1].weight, std=1.0)  # trained: it counts
    path = write_random_weights(model, tmp_path / "omni-tiny.safetensors", "omni", config)
    backend = OmniBackend(weights=path, tile=96, overlap=16)
    report = ex.export_model(backend, "onnx", tmp_path / "omni.onnx",
                             images=ex.sample_images(SMALL[:1]))
    runner, torch_run = OnnxRunner(report.path), backend.torch_runner()
    # The neighbourhood mask and the reshape follow the size (2x2 to 6x10 cells at stride 16).
    for h, w in ((32, 32), (64, 64), (96, 160)):
        feeds = _feeds(h, w, ROUTE_FUSED, seed=h)
        got, ref = runner(feeds), torch_run(feeds)
        assert float(np.abs(got["mask"] - ref["mask"]).max()) <= TOL


def test_onnx_inputs_have_symbolic_height_and_width(exported):
    import onnx

    model = onnx.load(str(exported("onnx").path))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input}
    assert dims == {"image": [1, 3, "height", "width"], "dct": [1, "height", "width"],
                    "qtable": [1, 8, 8], "route": [1]}


def test_model_card_is_embedded_with_the_input_contract(exported, weights):
    import onnx

    source = json.loads(weights.with_suffix(".json").read_text())
    props = {p.key: p.value for p in onnx.load(str(exported("onnx").path)).metadata_props}
    onnx_card = json.loads(props["model_card"])
    ts_card = ex.read_card(exported("torchscript").path)
    for card, fmt in ((onnx_card, "onnx"), (ts_card, "torchscript")):
        assert card["config"] == source["config"] and card["method"] == "omni"
        e = card["export"]
        assert e["format"] == fmt and e["source_weights"] == weights.name
        assert e["inputs"]["image"]["mean"] == [0.5] * 3 == e["inputs"]["image"]["std"]
        assert e["inputs"]["dct"]["clip"] == 20 and e["inputs"]["dct"]["dtype"] == "uint8"
        assert e["constraints"]["multiple"] == 32 and e["constraints"]["batch"] == 1
        assert e["dynamic_axes"]["image"] == {"2": "height", "3": "width"}
        assert e["parity"]["tolerance"] == TOL and e["parity"]["samples"]


# ------------------------------------------------------------------ failures


def test_failing_parity_exits_nonzero_and_writes_nothing(weights, tmp_path, monkeypatch,
                                                          capsys, two_samples):
    from forgectl import cli

    original = ex.exportable_copy

    def perturbed(module):
        clone = original(module)
        with torch.no_grad():
            clone.net.decoder.classifier.bias += 0.05  # a small, real disagreement
        return clone

    monkeypatch.setattr(ex, "exportable_copy", perturbed)
    out = tmp_path / "out" / "omni.onnx"
    monkeypatch.setattr(sys, "argv", ["forgectl", "export", "--method", "omni", "--weights",
                                      str(weights), "--out", str(out)])
    monkeypatch.setenv("FORGECTL_DEBUG", "")
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.startswith("forgectl: error: exported onnx model differs from PyTorch")
    assert err.count("\n") == 1 and "nothing written" in err
    assert not out.exists() and (not out.parent.exists() or not list(out.parent.iterdir()))


def test_export_usage_errors(backend, tmp_path, weights):
    result = CliRunner().invoke(app, ["export", "--method", "ela", "--out", "x.onnx"])
    assert result.exit_code != 0 and isinstance(result.exception, UsageError)
    with pytest.raises(UsageError, match="known: onnx"):
        ex.export_model(backend, "tflite", tmp_path / "x.tflite")
    with pytest.raises(UsageError, match=r"\.onnx"):
        ex.export_model(backend, "onnx", tmp_path / "x.bin")
    with pytest.raises(UsageError, match="overwrite"):
        ex.export_model(backend, "torchscript", weights)
    assert not list(tmp_path.iterdir())


def test_runtime_option_errors(weights, exported, tmp_path):
    with pytest.raises(UsageError, match="cannot run with --runtime onnx"):
        registry.load("ela", runtime="onnx")
    with pytest.raises(UsageError, match="unknown runtime"):
        registry.load("ela", runtime="tensorrt")
    with pytest.raises(UsageError, match="pass --weights FILE.onnx"):
        OmniBackend(weights=weights, runtime="onnx")
    with pytest.raises(UsageError, match="add --runtime onnx"):
        OmniBackend(weights=exported("onnx").path, runtime="torch")
    with pytest.raises(WeightsError, match="forgectl export"):
        OmniBackend(weights=tmp_path / "missing.onnx", runtime="onnx")
    image = ex.sample_images(SMALL[:1])[0]
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="cannot load ONNX model"):
        OmniBackend(weights=bogus, runtime="onnx").localize(image)
    import onnx

    model = onnx.load(str(exported("onnx").path))
    for card in (None, {"export": {"method": "other"}}):
        del model.metadata_props[:]
        if card is not None:
            onnx.helper.set_model_props(model, {"model_card": json.dumps(card)})
        foreign = tmp_path / "foreign.onnx"
        onnx.save(model, str(foreign))
        with pytest.raises(WeightsError, match="was not exported for omni"):
            OmniBackend(weights=foreign, runtime="onnx").localize(image)


# ------------------------------------------------------------------ CLI


def test_cli_export_end_to_end(weights, tmp_path, two_samples):
    out = tmp_path / "cli" / "omni.onnx"
    args = ["export", "--method", "omni", "--weights", str(weights), "--format", "onnx",
            "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "parity max |diff|" in result.output
    card = ex.read_card(out)
    assert card["export"]["format"] == "onnx" and len(card["export"]["parity"]["samples"]) == 2
    assert card["export"]["parity"]["max_abs_diff"] <= TOL
    assert [p.name for p in out.parent.iterdir()] == ["omni.onnx"]  # no temporary left


def test_localize_runtime_onnx_gives_the_torch_mask(weights, exported, tmp_path,
                                                    two_samples):
    src = tmp_path / "in" / "photo.jpg"
    src.parent.mkdir()
    src.write_bytes(encode_jpeg(natural_image(96, 128, seed=5), 85))
    records, masks = {}, {}
    for runtime, model in (("torch", weights), ("onnx", exported("onnx").path)):
        out = tmp_path / runtime
        result = CliRunner().invoke(app, ["localize", str(src), "--method", "omni", "--weights",
                                          str(model), "--runtime", runtime, "--out", str(out),
                                          "--json"])
        assert result.exit_code == 0, result.output
        records[runtime] = json.loads((out / "photo.json").read_text())
        masks[runtime] = np.asarray(Image.open(out / "photo.mask.png")) > 0
    assert records["torch"]["method"]["runtime"] == "torch"
    assert records["onnx"]["method"]["runtime"] == "onnx"
    assert records["onnx"]["method"]["weights"] == "omni.onnx"
    assert records["onnx"]["facts"]["modality"] == records["torch"]["facts"]["modality"]
    # Same mask wherever the decision is not within float noise of the threshold (a random
    # model puts many pixels near 0.5, where a 1e-7 difference may flip a pixel).
    heat = OmniBackend(weights=weights).localize(load_image(src)).heatmap
    decisive = np.abs(heat - 0.5) > TOL
    assert decisive.mean() > 0.95
    assert np.array_equal(masks["onnx"][decisive], masks["torch"][decisive])


def test_onnx_runtime_needs_no_torch_and_its_threads_sleep(exported, tmp_path):
    src = tmp_path / "photo.jpg"
    src.write_bytes(encode_jpeg(natural_image(64, 96, seed=6), 85))
    code = f"""
import json, sys, time
from forgectl.cli import app
try:
    # --no-isolate: the analysis runs in this process, where torch and spinning are checked.
    app(["localize", {str(src)!r}, "--method", "omni", "--runtime", "onnx", "--weights",
         {str(exported("onnx").path)!r}, "--out", {str(tmp_path / "out")!r}, "--no-isolate"],
        standalone_mode=False)
except SystemExit:
    pass
t0 = time.process_time()
time.sleep(0.5)
print(json.dumps({{"torch": "torch" in sys.modules, "idle_cpu_s": time.process_time() - t0}}))
"""
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "FORGECTL_THREADS": "2",
           "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert facts["torch"] is False
    # Measured on 2 threads: ~0.06 s of spinning in the 0.5 s after a run with spinning on,
    # ~1e-4 s with it off.
    assert facts["idle_cpu_s"] < 0.02
    assert (tmp_path / "out" / "photo.mask.png").is_file()


def test_onnx_session_threads_do_not_spin_after_a_run(exported):
    runner = OnnxRunner(exported("onnx").path, threads=2)
    runner(_feeds(64, 64, ROUTE_GATE))
    t0 = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - t0 < 0.02  # spinning threads: ~0.06 s (process-wide CPU)


def test_help_does_not_import_torch_with_export_wired():
    code = "import sys, forgectl.cli, forgectl.commands.export; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False"
