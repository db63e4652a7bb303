"""Reliability of `localize` (issue 17): nothing lost on SIGKILL, `--resume`, SIGTERM/SIGINT,
per-image timeout, memory bound and crash isolation, full disk and unwritable folders, weights
integrity, determinism across runs, thread counts and runtimes.

The kill and signal tests run the real command in a subprocess on ~12 tiny images with `ela`;
timeouts, memory and crashes use a method defined here (registered for the test) that crashes,
hangs or allocates on images named so.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forgectl import outputs, pipeline, registry
from forgectl.backends.base import Backend, MethodSpec, Result
from forgectl.intake import encode_jpeg
from forgectl.outputs import ResultsLog, read_jsonl
from forgectl.registry import MethodEntry
from forgectl.weights import CHECKSUMS, sha256_file
from tests.helpers import REPO, invoke, natural_image, weights_with_damaged_twin

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "FORGECTL_THREADS": "1", "FORGECTL_DEBUG": ""}


class FlakyBackend(Backend):
    """A test method: a smooth heatmap, except on images whose file name says ``crash``
    (segfault), ``libjpeg`` (jpegio on a non-JPEG: libjpeg's error handler calls exit(1), no
    Python exception), ``hang`` (sleeps), ``hog`` (allocates until stopped) or ``bug``."""

    spec = MethodSpec(name="flaky", summary="test method that misbehaves on request")

    def analyze(self, image):
        name = Path(image.name).name
        if "crash" in name:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "libjpeg" in name:
            import jpegio

            jpegio.read(str(image.path))
        if "hang" in name:
            time.sleep(600)
        if "hog" in name:
            hoard = []
            for _ in range(80):  # up to 8 GB, 100 MB at a time, touched
                hoard.append(np.ones(100 * 2**20, np.uint8))
                time.sleep(0.005)
        if "bug" in name:
            raise ZeroDivisionError("division by zero")
        h, w = image.height, image.width
        heat = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
        return Result.from_heatmap(heat, self.threshold)


@pytest.fixture
def flaky():
    with registry.registered(MethodEntry("flaky", f"{__name__}:FlakyBackend")):
        yield "flaky"


def _folder(path: Path, n: int = 12, broken: bool = True, size: tuple[int, int] = (72, 96)):
    path.mkdir(parents=True)
    for i in range(n - int(broken)):
        data = encode_jpeg(natural_image(*size, seed=i), 80 + i % 3 * 5)
        (path / f"img{i:02d}.jpg").write_bytes(data)
    if broken:
        good = (path / "img00.jpg").read_bytes()
        (path / "zz-broken.jpg").write_bytes(good[: len(good) // 2])
    return path


def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forgectl", *map(str, args)], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forgectl", *map(str, args)], cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=120)


def _wait_for_jsons(out: Path, n: int, proc: subprocess.Popen, limit: float = 60) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if out.is_dir() and sum(1 for p in out.glob("*.json")) >= n:
            return
        time.sleep(0.002)


def _canonical(record: dict, out: Path) -> str:
    """A record without what legitimately differs between runs: timings, the output folder."""
    rec = {k: v for k, v in record.items() if k not in ("timings", "outputs")}
    return json.dumps(rec, sort_keys=True).replace(str(out), "OUT")


def _state(out: Path) -> tuple[dict[str, bytes], dict[str, str], list[str]]:
    masks = {p.name: p.read_bytes() for p in sorted(out.glob("*.mask.png"))}
    jsons = {p.name: _canonical(json.loads(p.read_text()), out) for p in sorted(out.glob("*.json"))}
    rows, dropped = read_jsonl(out / "results.jsonl")
    assert dropped == 0
    return masks, jsons, sorted(_canonical(r, out) for r in rows)


def _assert_only_complete_sets(out: Path) -> None:
    """Every image has all four files with a complete JSON, or none; no temporary files."""
    assert not list(out.glob(".*.tmp")), list(out.glob(".*.tmp"))
    stems = {p.name.split(".")[0] for p in out.glob("img*.*")}
    for stem in stems:
        present = [(out / f"{stem}{s}").exists() for s in outputs.OUTPUT_SUFFIXES
                   if s != ".reliability.png"]  # only methods with a reliability map write it
        assert all(present), (stem, present)
        assert json.loads((out / f"{stem}.json").read_text())["complete"] is True


def test_sigkill_keeps_finished_records_and_resume_matches_uninterrupted_run(tmp_path):
    folder = _folder(tmp_path / "in", n=16)
    ref = tmp_path / "ref"
    done = _run("localize", folder, "-m", "ela", "--out", ref)
    assert done.returncode == 1, done.stderr  # the broken file
    out = tmp_path / "out"
    rng = random.Random(int(os.environ.get("FORGECTL_KILL_SEED", "17")))  # vary to explore
    kills = 0
    for round_ in range(3):  # kill the batch, then kill each resume, at random points
        args = ["localize", folder, "-m", "ela", "--out", out] + (["--resume"] if round_ else [])
        proc = _cli(*args)
        before = len(list(out.glob("*.json"))) if out.is_dir() else 0
        _wait_for_jsons(out, before + rng.randint(1, 3), proc)
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
        rows, dropped = read_jsonl(out / "results.jsonl")
        assert dropped <= 1  # at most a torn last line
        finished = {p.name[: -len(".json")] for p in out.glob("*.json")}
        # Every record written names an image whose outputs are complete (JSON goes last).
        assert {Path(r["outputs"]["json"]).stem for r in rows if "error" not in r} <= finished
    assert kills >= 2, "the batch finished before it could be killed: make it longer"
    final = _run("localize", folder, "-m", "ela", "--out", out, "--resume")
    assert final.returncode == 1 and "finished earlier, kept" in final.stderr, final.stderr
    _assert_only_complete_sets(out)
    masks, jsons, rows = _state(out)
    ref_masks, ref_jsons, ref_rows = _state(ref)
    assert masks == ref_masks and len(masks) == 15
    assert jsons == ref_jsons
    assert rows == ref_rows and len(rows) == 16  # no duplicates, the failure listed once


def test_a_second_signal_in_a_finalizer_prints_no_traceback():
    """A second SIGTERM / Ctrl-C can land while worker pools shut down, inside a finalizer,
    where Python reports it as unraisable (with a traceback); the CLI keeps those quiet and
    passes every other unraisable error on."""
    import types

    from forgectl.cli import quiet_interrupts
    from forgectl.errors import Terminated

    seen = []
    hook = quiet_interrupts(seen.append)
    for exc in (Terminated(), KeyboardInterrupt()):
        hook(types.SimpleNamespace(exc_type=type(exc), exc_value=exc, exc_traceback=None,
                                   err_msg=None, object=None))
    assert seen == []
    other = types.SimpleNamespace(exc_type=ValueError, exc_value=ValueError("x"),
                                  exc_traceback=None, err_msg=None, object=None)
    hook(other)
    assert seen == [other]


@pytest.mark.parametrize("sig,code,twice", [(signal.SIGTERM, 143, False),
                                             (signal.SIGINT, 130, False),
                                             (signal.SIGTERM, 143, True)])
def test_sigterm_and_sigint_drop_the_image_in_progress_and_exit_128_plus_signal(
        tmp_path, sig, code, twice):
    folder = _folder(tmp_path / "in", n=16, broken=False, size=(128, 160))
    out = tmp_path / "out"
    proc = _cli("localize", folder, "-m", "ela", "--out", out)
    _wait_for_jsons(out, 3, proc)
    proc.send_signal(sig)
    if twice:  # a second signal interrupts at once, wherever the command is
        time.sleep(0.01)
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    # A second SIGTERM that lands while the interpreter exits kills it by the signal: a shell
    # sees 143 either way.
    assert proc.returncode == code or twice and proc.returncode == -sig, err
    if not twice:
        assert f"interrupted by {signal.Signals(sig).name}" in err and "--resume" in err
    assert "Traceback" not in err
    _assert_only_complete_sets(out)
    rows, dropped = read_jsonl(out / "results.jsonl")
    assert dropped == 0 and len(rows) == len(list(out.glob("*.json"))) < 16
    again = _run("localize", folder, "-m", "ela", "--out", out, "--resume")
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(out / "results.jsonl")[0]) == 16


def test_crash_timeout_memory_and_bug_fail_one_image_each_and_the_batch_goes_on(
        tmp_path, flaky):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a", "crash", "libjpeg", "hang", "hog", "bug", "z"):
        Image.fromarray(natural_image(40, 48, seed=1)).save(folder / f"{name}.png")
    out = tmp_path / "out"
    result = invoke(["localize", folder, "-m", flaky, "--out", out, "--timeout", "6",
                     "--max-memory", "400"])
    assert result.exit_code == 70, result.output  # the bug image: an internal error
    rows = {Path(r["input"]["path"]).stem: r for r in read_jsonl(out / "results.jsonl")[0]}
    assert set(rows) == {"a", "crash", "libjpeg", "hang", "hog", "bug", "z"}
    assert "error" not in rows["a"] and "error" not in rows["z"]
    failed = ("crash", "libjpeg", "hang", "hog", "bug")
    kinds = {k: rows[k].get("error_kind") for k in failed}
    assert kinds == {"crash": "crash", "libjpeg": "crash", "hang": "timeout", "hog": "memory",
                     "bug": "internal"}
    assert "crashed (SIGSEGV)" in rows["crash"]["error"]
    assert "exited unexpectedly (code 1)" in rows["libjpeg"]["error"]
    assert "--timeout" in rows["hang"]["error"] and "--max-memory" in rows["hog"]["error"]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 5 and all(len(line) < 300 for line in errors)
    for stem in failed:
        assert not list(out.glob(f"{stem}.*")) and not list(out.glob(f".{stem}.*"))
    assert (out / "z.json").is_file()


def test_leaving_a_runner_on_an_exception_kills_its_worker_at_once(tmp_path, flaky):
    """A second Ctrl-C lands wherever the command is: the worker is killed, not waited for."""
    Image.fromarray(natural_image(32, 32)).save(tmp_path / "hang.png")
    item = pipeline.InputFile(tmp_path / "hang.png", tmp_path / "out" / "hang")

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    runner = pipeline.IsolatedRunner(registry.load(flaky), timeout=0)
    t0 = time.monotonic()
    try:
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        with pytest.raises(KeyboardInterrupt), runner:
            runner.run(item)
        elapsed = time.monotonic() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert runner._proc is None and elapsed < 3.5  # not close()'s 5 s wait for the worker
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_workers_never_come_from_a_fork_of_this_process(tmp_path):
    """A fork copies other threads' locks in whatever state they are (OpenCV's pool, started
    here; torch's OpenMP): workers come from a fork server, and work."""
    import cv2

    cv2.setNumThreads(2)
    cv2.GaussianBlur(np.zeros((512, 512), np.float32), (9, 9), 2)  # starts OpenCV's pool
    assert pipeline._context().get_start_method() in ("forkserver", "spawn")
    folder = _folder(tmp_path / "in", n=2, broken=False)
    result = invoke(["localize", folder, "-m", "ela", "--out", tmp_path / "out"])
    assert result.exit_code == 0, result.output


def test_no_isolate_runs_in_process_and_refuses_worker_only_options(tmp_path, flaky):
    folder = _folder(tmp_path / "in", n=3, broken=False)
    refused = invoke(["localize", folder, "-m", "ela", "--out", tmp_path / "o",
                      "--no-isolate", "--timeout", "5"])
    assert refused.exit_code == 2 and "--no-isolate" in refused.output
    ok = invoke(["localize", folder, "-m", "ela", "--out", tmp_path / "o", "--no-isolate"])
    assert ok.exit_code == 0, ok.output
    assert len(read_jsonl(tmp_path / "o" / "results.jsonl")[0]) == 3


def test_resume_redoes_what_changed_and_drops_a_torn_last_line(tmp_path):
    folder = _folder(tmp_path / "in", n=4, broken=False)
    out = tmp_path / "out"
    assert invoke(["localize", folder, "-m", "ela", "--out", out, "--no-isolate"]).exit_code == 0
    plan = pipeline.plan_outputs(sorted(folder.glob("*.jpg")), out)
    backend = registry.load("ela")
    settings = pipeline.run_settings(backend)
    assert all(pipeline.completed_record(item, settings) for item in plan)
    # A different threshold or option, a changed mask, a changed input: not finished.
    assert pipeline.completed_record(plan[0], pipeline.run_settings(
        registry.load("ela", threshold=0.4))) is None
    assert pipeline.completed_record(plan[0], pipeline.run_settings(
        registry.load("ela", quality=80))) is None
    mask = out / "img01.mask.png"
    mask.write_bytes(mask.read_bytes()[:-5])
    assert pipeline.completed_record(plan[1], settings) is None
    (folder / "img02.jpg").write_bytes(encode_jpeg(natural_image(72, 96, seed=99), 80))
    assert pipeline.completed_record(plan[2], settings) is None
    with open(out / "results.jsonl", "a") as fh:
        fh.write('{"schema": "forgectl.result/1", "inp')  # a torn last line
    result = invoke(["localize", folder, "-m", "ela", "--out", out, "--resume", "--no-isolate"])
    assert result.exit_code == 0 and "(2 finished earlier, kept)" in result.stderr
    rows, dropped = read_jsonl(out / "results.jsonl")
    assert dropped == 0 and sorted(Path(r["input"]["path"]).name for r in rows) == [
        "img00.jpg", "img01.jpg", "img02.jpg", "img03.jpg"]
    assert pipeline.completed_record(plan[2], settings)["input"]["sha256"] == (
        sha256_file(folder / "img02.jpg"))


def test_disk_full_stops_with_exit_74_and_leaves_nothing_half_written(tmp_path, monkeypatch):
    folder = _folder(tmp_path / "in", n=6, broken=False)
    out = tmp_path / "out"
    real_replace = os.replace
    calls = {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] > 10:  # results.jsonl, two images (4 files each), then half a third
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", replace)
    result = invoke(["localize", folder, "-m", "ela", "--out", out, "--no-isolate"])
    assert result.exit_code == 74, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("forgectl: error: cannot write ")
    assert "No space left on device" in lines[-1] and "--resume" in lines[-1]
    _assert_only_complete_sets(out)
    assert len(list(out.glob("*.json"))) == 2
    assert len(read_jsonl(out / "results.jsonl")[0]) == 2
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    again = invoke(["localize", folder, "-m", "ela", "--out", out, "--resume", "--no-isolate"])
    assert again.exit_code == 0 and "(2 finished earlier, kept)" in again.stderr


def test_results_log_cuts_a_failed_line_back(tmp_path, monkeypatch):
    log = ResultsLog(tmp_path / "r.jsonl", [{"a": 1}])
    log.append({"b": 2})
    real_write = os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "write", half_then_full)
    with pytest.raises(outputs.OutputError, match="No space left"):
        log.append({"c": "x" * 100})
    monkeypatch.setattr(outputs.os, "write", real_write)
    log.append({"d": 4})
    log.close()
    assert read_jsonl(tmp_path / "r.jsonl") == ([{"a": 1}, {"b": 2}, {"d": 4}], 0)


def test_unwritable_output_folder_is_one_line_exit_74(tmp_path):
    img = tmp_path / "x.jpg"
    img.write_bytes(encode_jpeg(natural_image(32, 32), 85))
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    for out in (blocker, blocker / "sub"):
        result = invoke(["localize", img, "-m", "ela", "--out", out])
        assert result.exit_code == 74, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("forgectl: error: cannot write")
        assert "0x" not in lines[0]


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_damaged_weights_are_refused_once_with_one_line(tmp_path, monkeypatch, damage):
    shipped = REPO / "weights"
    copy = tmp_path / "weights"
    copy.mkdir()
    for name in ("omni-tiny.safetensors", "omni-tiny.json"):
        (copy / name).write_bytes((shipped / name).read_bytes())
    data = bytearray((copy / "omni-tiny.safetensors").read_bytes())
    if damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        data[len(data) // 2] ^= 0x10
    (copy / "omni-tiny.safetensors").write_bytes(bytes(data))
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(copy))
    folder = _folder(tmp_path / "in", n=2, broken=False)
    result = invoke(["localize", folder, "-m", "omni", "--out", tmp_path / "out"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        "forgectl: error: omni-tiny.safetensors does not match the sha256 in its model card "
        "(truncated or modified file): restore it from the repository or retrain"]
    assert not list((tmp_path / "out").glob("img*"))


@pytest.mark.parametrize("method", ["omni", "auto"])
def test_a_damaged_onnx_twin_is_refused_with_one_line(tmp_path, monkeypatch, method):
    """auto too: a fusion run with a member blinded by its damaged file would give other
    numbers under the same name (the omni twin auto runs: its own kept copy, or omni's)."""
    twin = "omni-tiny.onnx"
    if method == "auto":
        from forgectl.fusion.backend import AutoBackend

        twin = AutoBackend().member("omni").weights_path.name
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR",
                       str(weights_with_damaged_twin(tmp_path / "weights", twin)))
    folder = _folder(tmp_path / "in", n=2, broken=False)
    result = invoke(["localize", folder, "-m", method, "--out", tmp_path / "out"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines() == [
        f"forgectl: error: {twin} does not match its sha256 in {CHECKSUMS} (truncated "
        "or modified file): reinstall forgectl, or re-export it with `forgectl export`"]
    assert not (tmp_path / "out").exists()  # nothing is left for a run that could not start
    (tmp_path / "mine").mkdir()  # a folder the user made stays, emptied of the run's log
    result = invoke(["localize", folder, "-m", method, "--out", tmp_path / "mine"])
    assert result.exit_code == 1 and list((tmp_path / "mine").iterdir()) == []


def test_the_checksum_list_is_kept_by_whoever_writes_a_twin(tmp_path, monkeypatch):
    from forgectl.weights import record_sha256, recorded_sha256

    own = tmp_path / "own"  # a folder of one's own without a list: left as it is
    own.mkdir()
    (own / "a.onnx").write_bytes(b"one")
    record_sha256(own / "a.onnx")
    assert not (own / CHECKSUMS).exists() and recorded_sha256(own / "a.onnx") is None
    shipped = tmp_path / "shipped"  # the shipped folder: the list is made, then kept sorted
    shipped.mkdir()
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(shipped))
    for name, data in (("b.onnx", b"two"), ("a.onnx", b"one"), ("b.onnx", b"three")):
        (shipped / name).write_bytes(data)
        record_sha256(shipped / name)
    lines = (shipped / CHECKSUMS).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == ["a.onnx", "b.onnx"]
    assert recorded_sha256(shipped / "b.onnx") == hashlib.sha256(b"three").hexdigest()


def _image(tmp_path: Path, size=(96, 128), seed=5) -> Path:
    path = tmp_path / "in" / "img.jpg"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(encode_jpeg(natural_image(*size, seed=seed), 88))
    return path


def _outputs_of(backend, path: Path, folder: Path) -> tuple[bytes, str]:
    record = pipeline.process_file(backend, pipeline.InputFile(path, folder / "img"))
    return (folder / "img.mask.png").read_bytes(), _canonical(record, folder)


def test_classical_methods_are_byte_identical_across_runs_and_thread_counts(tmp_path):
    import cv2

    path = _image(tmp_path, (128, 160))
    saved = cv2.getNumThreads()
    try:
        for method in ("ela", "dq", "noise", "copymove"):
            runs = []
            for i, threads in enumerate((1, 2, 1)):
                cv2.setNumThreads(threads)
                runs.append(_outputs_of(registry.load(method), path, tmp_path / f"{method}{i}"))
            assert runs[0] == runs[1] == runs[2], method
    finally:
        cv2.setNumThreads(saved)


def test_omni_is_deterministic_across_runs_and_close_across_threads_and_runtimes(
        tmp_path, monkeypatch):
    """Same thread count and runtime: byte-identical mask and record (timings aside). Other
    thread counts and the exported ONNX graph sum floats in another order, so the heatmap
    moves by up to ~1e-5 and a mask pixel may flip only where the heatmap is that close to the
    threshold; the test checks exactly that and prints how many flipped."""
    import torch

    from forgectl import export as ex
    from forgectl.backends.omni import OmniBackend

    path = _image(tmp_path)
    saved = torch.get_num_threads()
    results = {}
    try:
        monkeypatch.setenv("FORGECTL_THREADS", "1")  # read when the weights load
        t1 = registry.load("omni", runtime="torch")
        heat = pipeline.analyze_file(t1, path)[1].heatmap
        # A threshold inside the heatmap's range, so the mask has an edge to flip on.
        threshold = float(np.quantile(heat, 0.9))
        t1.threshold = threshold
        first = _outputs_of(t1, path, tmp_path / "run1")
        assert _outputs_of(t1, path, tmp_path / "run2") == first
        assert _outputs_of(registry.load("omni", threshold=threshold, runtime="torch"), path,
                           tmp_path / "run3") == first
        results["t1"] = pipeline.analyze_file(t1, path)[1]
        monkeypatch.setenv("FORGECTL_THREADS", "2")
        t2 = registry.load("omni", threshold=threshold, runtime="torch")
        results["t2"] = pipeline.analyze_file(t2, path)[1]
    finally:
        torch.set_num_threads(saved)
    onnx = tmp_path / "omni.onnx"
    ex.export_model(t1, "onnx", onnx, images=ex.sample_images(((64, 96, 85),)))
    exported = OmniBackend(weights=onnx, runtime="onnx", threshold=threshold)
    results["onnx"] = pipeline.analyze_file(exported, path)[1]
    ref = results["t1"]
    for label in ("t2", "onnx"):
        other = results[label]
        diff = np.abs(ref.heatmap - other.heatmap)
        flipped = ref.mask != other.mask
        print(f"t1 vs {label}: max |heatmap diff| {diff.max():.1e}, {int(flipped.sum())} of "
              f"{flipped.size} mask pixels differ")
        # float32 logits of a few units summed in another order differ by ~1e-5 (onnxruntime's
        # convolutions against torch's): seen 1.1e-5 on the heatmap with the 2026-12-05 weights
        assert diff.max() < 3e-5
        assert np.all(np.abs(ref.heatmap[flipped] - threshold) < 3e-5)
        assert abs(ref.score - other.score) < 3e-5
        assert ref.facts == other.facts
