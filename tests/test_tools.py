"""The maintenance tools that write shipped weights (tools/*.py), on tiny files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

torch = pytest.importorskip("torch")


def _weights(path: Path, value: float, steps: int, method: str = "omni") -> Path:
    from forgectl.weights import sha256_file, write_tensors

    write_tensors(path, {"w": torch.full((2, 3), value), "count": torch.tensor([steps])},
                  {"format": "forgectl.weights/1"})
    card = {"format": "forgectl.model_card/1", "method": method, "config_name": "tiny",
            "config": {"lr": value}, "metrics": {"val_f1": value},
            "training": {"steps": steps, "cpu_hours_total": steps / 100},
            "weights": {"file": path.name, "sha256": sha256_file(path)}}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def _average(out: Path, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "average_weights.py"), str(out),
                           *map(str, files)], capture_output=True, text=True, timeout=300)


def test_average_weights_means_floats_and_records_its_sources(tmp_path):
    from safetensors.torch import load_file

    from forgectl.weights import check_digest

    a = _weights(tmp_path / "a.safetensors", 1.0, 100)
    b = _weights(tmp_path / "b.safetensors", 2.0, 200)
    c = _weights(tmp_path / "c.safetensors", 6.0, 300)
    done = _average(tmp_path / "soup.safetensors", a, b, c)
    assert done.returncode == 0, done.stderr
    state = load_file(str(tmp_path / "soup.safetensors"))
    assert torch.allclose(state["w"], torch.full((2, 3), 3.0))
    assert state["count"].item() == 300  # integers from the last file
    card = json.loads((tmp_path / "soup.json").read_text())
    check_digest(tmp_path / "soup.safetensors", card)  # the card names the new file's digest
    sources = card["training"]["average"]["files"]
    assert [s["steps"] for s in sources] == [100, 200, 300]
    assert sources[0]["sha256"] == json.loads(a.with_suffix(".json").read_text())["weights"][
        "sha256"]
    assert "val_f1" not in card["metrics"]  # the last file's figures are not the average's


def test_average_weights_refuses_other_networks_and_damaged_files(tmp_path):
    a = _weights(tmp_path / "a.safetensors", 1.0, 100)
    other = _weights(tmp_path / "m.safetensors", 1.0, 100, method="mun")
    assert _average(tmp_path / "x.safetensors", a, other).returncode != 0
    damaged = _weights(tmp_path / "d.safetensors", 1.0, 100)
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x01")
    assert _average(tmp_path / "y.safetensors", a, damaged).returncode != 0
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()
