"""`localize -j N`: images in N worker processes at once, with the outputs, results.jsonl and
stdout of one worker (order included), and a bad file or a stop handled as with one."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from forgectl import pipeline
from tests.helpers import invoke, natural_image


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:02d}.jpg"
        Image.fromarray(natural_image(96 + 8 * i, 128, seed=i)).save(path, quality=85)
        paths.append(path)
    return paths


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix != ".json" and p.name != "results.jsonl"}


def _records(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _comparable(record: dict) -> dict:
    """A record without what differs between any two runs: timings, and the output paths
    (another --out; their bytes are compared, and output_sha256 stays in)."""
    return {k: v for k, v in record.items() if k not in ("timings", "outputs")}


def test_j2_gives_the_outputs_and_log_of_j1_in_input_order(tmp_path):
    inputs = _images(tmp_path / "in", 5)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    runs = {}
    for j in (1, 2):
        out = tmp_path / f"j{j}"
        result = invoke(["localize", tmp_path / "in", "-m", "ela", "--out", out, "-j", j,
                         "--json"])
        assert result.exit_code == 1, result.output  # the broken file, the batch went on
        runs[j] = (out, result)
    (o1, r1), (o2, r2) = runs[1], runs[2]
    assert _outputs(o1) == _outputs(o2)
    assert [_comparable(r) for r in _records(o1)] == [_comparable(r) for r in _records(o2)]
    assert [json.loads(x)["input"]["path"] if "input" in json.loads(x) else None
            for x in r1.stdout.splitlines()] == \
           [json.loads(x)["input"]["path"] if "input" in json.loads(x) else None
            for x in r2.stdout.splitlines()]
    assert len([r for r in _records(o2) if "error" not in r]) == len(inputs)
    assert "in 2 worker processes" in r2.stderr


def test_worker_count_defaults_to_the_cpus_and_never_exceeds_the_images(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert pipeline.local_workers(None, 100) == 8
    assert pipeline.local_workers(None, 3) == 3
    assert pipeline.local_workers(4, 100) == 4
    assert pipeline.local_workers(4, 0) == 1
