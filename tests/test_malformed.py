"""The malformed-input corpus (tests/malformed.py, ~590 files) through `localize`'s pipeline.

Every file goes through the worker process with `ela` (the real path: decode, analyse, write,
timeout, memory bound, crash isolation): each gives a result or a one-line input error as its
family says, none crashes, hangs or hits an internal error. A few more methods run in process
on the files that must work (odd but valid images). Every registered method on every file is
benchmarks/malformed_corpus.py (minutes, not for CI).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from forgectl import pipeline, registry
from forgectl.errors import InputError
from forgectl.intake import image_from_bytes
from forgectl.outputs import read_jsonl
from tests import malformed
from tests.helpers import invoke

#: A Python object's repr, or a library's temporary file name: internals, not messages.
INTERNALS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>|tempfile|decoder error -?\d|Traceback")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[malformed.Sample]]:
    folder = tmp_path_factory.mktemp("malformed")
    return folder, malformed.build(folder)


def _check_message(message: str) -> None:
    assert "\n" not in message and len(message) < 300, message
    assert not INTERNALS.search(message), message


def test_corpus_has_every_family_and_over_500_files(corpus):
    _, samples = corpus
    families = malformed.by_family(samples)
    assert len(samples) >= 500
    assert set(families) == {"arithmetic", "bitflip", "bomb-declared", "bomb-real", "exif",
                             "not-image", "size", "splice", "truncated", "variant",
                             "wrong-ext", "zero-byte", "zerofill"}
    assert families["bomb-real"] == families["bomb-declared"] - 2 == 6  # every format


@pytest.mark.parametrize("reader", ["jpegio", "decoder"])
def test_every_file_with_ela_in_the_worker_gives_a_result_or_one_line_error(
        corpus, tmp_path, monkeypatch, reader):
    """With either JPEG reader (the default install has no jpegio): the worker inherits it."""
    if reader == "jpegio":
        pytest.importorskip("jpegio")
    monkeypatch.setenv("FORGECTL_JPEG_READER", reader)
    folder, samples = corpus
    plan = pipeline.plan_outputs([folder / s.name for s in samples], tmp_path / "out")
    outcomes: dict[str, list[str]] = {}
    with pipeline.IsolatedRunner(registry.load("ela"), timeout=30, max_memory_mb=1500) as run:
        for sample, item in zip(samples, plan, strict=True):
            record = run.run(item)
            if "error" in record:
                _check_message(record["error"])
                kind = record["error_kind"]
                got = "error" if kind == "input" else kind
                assert not item.out_stem.with_suffix(".mask.png").exists()
            else:
                got = "ok"
                assert record["complete"] and Path(record["outputs"]["mask"]).is_file()
            if sample.expect != "any" and got != sample.expect or got not in ("ok", "error"):
                outcomes.setdefault(f"{sample.expect}->{got}", []).append(sample.name)
        peak = run.peak_rss_mb
    assert outcomes == {}
    assert run.restarts == 0 and peak < 1000


@pytest.mark.parametrize("method", [
    "dq", "copymove", "ghost", "grid", "noise",
])
def test_other_methods_analyse_every_odd_but_valid_file(corpus, method):
    folder, samples = corpus
    backend = registry.load(method)
    failures = []
    for sample in samples:
        if sample.expect != "ok" or (sample.family == "size" and "10000" in sample.name):
            continue
        try:
            pipeline.analyze_file(backend, folder / sample.name)
        except Exception as exc:  # noqa: BLE001 - any failure here is a finding
            failures.append(f"{sample.name}: {type(exc).__name__}: {exc}")
    assert failures == []


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n" + bytes(50), b"II*\x00" + b"\x07" * 50, b"GIF89a" + b"\x01" * 30,
    b"BM" + b"\x01" * 60, b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(20),
])
def test_decode_errors_name_no_python_objects(data):
    with pytest.raises(InputError) as info:
        image_from_bytes(data)
    _check_message(str(info.value))
    assert str(info.value).startswith("cannot decode ")


def test_cli_batch_over_a_slice_of_the_corpus(corpus, tmp_path):
    """Through the real command: a result or a one-line error per file, exit 1, no traceback."""
    folder, samples = corpus
    picked = [folder / s.name for s in samples[::25]]
    out = tmp_path / "out"
    result = invoke(["localize", *picked, "-m", "ela", "--out", out])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    for line in errors:
        _check_message(line)
    rows, dropped = read_jsonl(out / "results.jsonl")
    assert dropped == 0 and len(rows) == len(picked)
    assert sum("error" in r for r in rows) == len(errors) > 0
