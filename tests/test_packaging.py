"""The default install is torch-free and self-contained (issue #20): every ready method runs on
what ships (ONNX twins in onnxruntime, numpy/OpenCV), the twins match the weights they were
exported from, and a wheel carries them so `pip install .` runs learned methods."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from setuptools import find_packages

from forgectl import registry
from forgectl.backends.learned import LearnedBackend, OnnxRunner
from forgectl.weights import CHECKOUT_DIR, CHECKSUMS, sha256_file
from tests.helpers import POSIX_ONLY, REPO, natural_image, run_without_torch

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _learned_ready() -> list[str]:
    return [m for m in registry.available() if registry.get_spec(m).kind == "learned"]


def _twins() -> list[Path]:
    return sorted(CHECKOUT_DIR.glob("*.onnx"))


def test_the_package_list_is_the_source_tree():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(REPO), include=["forgectl*"]))
    assert listed - {"forgectl._shipped"} == found
    assert PYPROJECT["tool"]["setuptools"]["package-dir"]["forgectl._shipped"] == "weights"


def test_torch_is_only_in_the_train_extra():
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    for heavy in ("torch", "timm", "onnx>"):
        assert heavy not in deps.replace("onnxruntime", "")
    assert any(d.startswith("torch") for d in PYPROJECT["project"]["optional-dependencies"]
               ["train"])


@pytest.mark.slow
@pytest.mark.parametrize("twin", _twins(), ids=lambda p: p.name)
def test_every_shipped_twin_is_the_export_of_the_weights_beside_it(twin):
    export = (OnnxRunner(twin, threads=1).card or {}).get("export") or {}
    source = CHECKOUT_DIR / str(export.get("source_weights"))
    kept = twin.with_suffix(".safetensors")  # a member file auto keeps, renamed with its twin
    if twin.name.startswith("auto-") and kept.is_file():
        source = kept
    assert source.is_file(), f"{twin.name}: exported from {source.name}, which is not shipped"
    assert export["source_weights_sha256"] == sha256_file(source), (
        f"{twin.name} no longer matches {source.name}: forgectl export --method "
        f"{export.get('method')} --shipped")
    assert export["parity"]["max_abs_diff"] <= export["parity"]["tolerance"]
    if export.get("precision") == "int8":  # quantized from the float twin beside it
        quant = OnnxRunner(twin, threads=1).card["quantization"]
        assert quant["source_sha256"] == sha256_file(CHECKOUT_DIR / quant["source"]), (
            f"{twin.name} was quantized from another {quant['source']}: forgectl export "
            f"--method {export.get('method')} --int8 --calibration DIR")
        comparison = quant["comparison"]
        assert all(r["mean_abs_diff"] <= comparison["tolerance_mean_abs_diff"]
                   for r in comparison["samples"])


def test_the_checksum_list_names_every_shipped_twin_with_its_digest():
    listed = {}
    for line in (CHECKOUT_DIR / CHECKSUMS).read_text().splitlines():
        digest, name = line.split(None, 1)
        listed[name.lstrip("*")] = digest
    assert sorted(listed) == [t.name for t in _twins()], (
        f"{CHECKSUMS} and the twins in weights/ differ: re-export with forgectl export")
    for twin in _twins():
        assert listed[twin.name] == sha256_file(twin), f"{twin.name}: stale line in {CHECKSUMS}"


def test_runtime_torch_without_torch_is_refused_before_any_image(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(natural_image(64, 80, seed=3)).save(photo, quality=88)
    for method in ("omni", "auto"):  # auto: refused too, not run with blind members
        done = run_without_torch(["localize", str(photo), "-m", method, "--runtime", "torch",
                                  "--out", str(tmp_path / method)], tmp_path)
        assert done.returncode == 2, f"{method}: {done.stderr[-800:]}"
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "needs PyTorch" in lines[0], done.stderr
        assert "forgectl[train]" in lines[0]
        assert not (tmp_path / method / "photo.json").exists()


def test_localize_and_benchmark_need_no_posix_only_module(tmp_path):
    """Windows has no ``resource``, ``fcntl``, ``termios``, ``pwd`` or ``grp``: the default
    install's commands must not import them (the benchmark's memory figure imported
    ``resource`` at the top of its module, so every benchmark failed there)."""
    photo = tmp_path / "data" / "authentic" / "photo.jpg"
    photo.parent.mkdir(parents=True)
    Image.fromarray(natural_image(64, 80, seed=3)).save(photo, quality=88)
    for args in (["localize", photo, "-m", "ela", "--no-isolate", "--out", tmp_path / "out"],
                 ["benchmark", tmp_path / "data", "-m", "ela", "-j", "1", "--bootstrap", "0",
                  "--no-plots", "--out", tmp_path / "report"]):
        done = run_without_torch(args, tmp_path, also=POSIX_ONLY)
        assert done.returncode == 0, f"{args[0]}: {done.stderr[-800:]}"
    assert (tmp_path / "out" / "photo.json").is_file()
    assert json.loads((tmp_path / "report" / "report.json").read_text())["rows"]


@pytest.mark.parametrize("method", _learned_ready())
def test_every_learned_method_ships_its_twins(method):
    backend = registry.load(method)
    assert isinstance(backend, LearnedBackend)
    assert backend.engine == "onnx", f"{method}: no ONNX twin beside its weights"
    for aux in backend.auxiliary_networks():
        assert aux.twin.is_file(), f"{method}: {aux.twin.name} is not shipped"


@pytest.mark.slow
def test_every_method_runs_by_default_without_torch(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(natural_image(160, 224, seed=3)).save(photo, quality=88)
    for method in registry.available():
        out = tmp_path / method
        done = run_without_torch(["localize", str(photo), "-m", method, "--out", str(out)],
                                 tmp_path, {"FORGECTL_THREADS": "2"})
        assert done.returncode == 0, f"{method}: {done.stderr[-800:]}"
        record = json.loads((out / "photo.json").read_text())
        if registry.get_spec(method).kind in ("learned", "fusion"):
            # A fusion names its members' runtimes joined by "+" (omni int8, reconwave onnx).
            runtimes = set(record["method"]["runtime"].split("+"))
            assert runtimes and runtimes <= {"onnx", "int8"}, method
        assert np.isfinite(record["score"]), method


@pytest.mark.slow
def test_the_wheel_carries_the_weights_and_runs_without_torch(tmp_path):
    """Build the wheel, install it (default extras) into a new venv, localize with a learned
    method from outside the checkout: the weights come from the package, torch is absent."""
    wheels = tmp_path / "wheels"
    # setuptools stages files in the checkout's build/ and never deletes what left weights/:
    # a build/ this test leaves behind would put a retired twin into the next wheel.
    had_build = (REPO / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                        "--no-build-isolation", "-w", str(wheels), str(REPO)], check=True,
                       cwd=tmp_path, timeout=600)
    finally:
        if not had_build:
            shutil.rmtree(REPO / "build", ignore_errors=True)
    wheel = next(wheels.glob("forgectl-*.whl"))
    assert wheel.stat().st_size < 100e6, f"wheel is {wheel.stat().st_size / 1e6:.0f} MB"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"),
                    str(wheel)], check=True, cwd=tmp_path, timeout=1200)
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORGECTL_WEIGHTS_DIR", "PYTHONPATH")}
    done = subprocess.run([str(env_dir / "bin" / "forgectl"), "localize",
                           str(REPO / "examples" / "splice.jpg"), "-m", "omni", "--out", "out"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-800:]
    record = json.loads((tmp_path / "out" / "splice.json").read_text())
    assert record["method"]["runtime"] == "onnx"  # omni runs its float ONNX twin from the wheel
    shipped = subprocess.run(
        [str(py), "-c", "from forgectl.weights import weights_dir; print(weights_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert "site-packages" in shipped
    assert (Path(shipped) / CHECKSUMS).is_file()  # the twins' digests travel with them
