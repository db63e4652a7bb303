"""`localize --engine ray` (forgectl/engine_ray.py, docs/SCALE.md): the same outputs as the
local engine, a worker killed mid-run, an interrupted driver resumed, and Ray never imported
otherwise.

The Ray tests skip when ray is not installed (``pip install -e '.[ray]'``). They run the CLI
in subprocesses: one starts its own local Ray with 2 CPUs (``-j 2``); the others share a
2-CPU cluster that a fixture starts with ``ray start --head --block`` in a session of its own
and kills (by process group, then what is left of its session) at the end. Ray's files go to
the tests' temporary folders; its token stays in the environment (no ``~/.ray``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO, natural_image

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install -e '.[ray]')")
_RAY_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: no Ray settings of the caller, Ray's temporary files in
    ``tmp``, one thread per worker."""
    env = {k: v for k, v in os.environ.items() if k not in _RAY_ENV}
    tmp.mkdir(parents=True, exist_ok=True)
    env.update({"TMPDIR": str(tmp), "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0",
                "FORGECTL_THREADS": os.environ.get("FORGECTL_THREADS", "1")})
    env.update(extra)
    return env


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "forgectl", *map(str, args)]


def _images(folder: Path, n: int, height: int = 64, width: int = 96) -> list[Path]:
    from forgectl.intake import encode_jpeg

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img{i:03d}.jpg"
        path.write_bytes(encode_jpeg(natural_image(height, width, seed=i), 80 + i % 15))
        paths.append(path)
    return paths


def _plan(inputs: Path, out: Path) -> list:
    from forgectl import pipeline

    files, problems = pipeline.collect_inputs([str(inputs)])
    assert not problems
    return pipeline.plan_outputs(files, out)


def _complete(plan: list, method: str) -> list[bool]:
    """For each planned image: are its outputs complete and valid (the --resume check)?"""
    from forgectl import pipeline, registry

    settings = pipeline.run_settings(registry.load(method))
    return [pipeline.completed_record(item, settings) is not None for item in plan]


def _log_paths(path: Path) -> list[str]:
    from forgectl.outputs import read_jsonl

    records, dropped = read_jsonl(path)
    assert dropped == 0
    return [r["input"]["path"] for r in records]


def _session_processes(sid: int, title: str) -> list[int]:
    """Processes of session ``sid`` whose command line starts with ``title``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if os.getsid(int(entry.name)) == sid and cmdline.startswith(title):
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _wait_for(predicate, timeout: float, what: str, poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


def _json(item) -> Path:
    from forgectl.outputs import output_paths

    return output_paths(item.out_stem)["json"]


def _json_files(out: Path) -> int:
    return sum(1 for p in out.glob("*.json"))


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory) -> Iterator[tuple[str, dict[str, str], int]]:
    """An existing 2-CPU cluster (``ray start --head``) on this machine: its address, the
    environment that reaches it (its token) and its session (where its workers run)."""
    ray_bin = Path(sys.executable).with_name("ray")
    if importlib.util.find_spec("ray") is None or not ray_bin.exists():
        pytest.skip("ray is not installed")
    tmp = tmp_path_factory.mktemp("ray-head")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp / "tmp", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    # Ray's socket paths must stay short: its folder goes directly under /tmp.
    ray_tmp = Path("/tmp") / f"fr-{secrets.token_hex(4)}"
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         f"--temp-dir={ray_tmp}", "--include-dashboard=false", "--disable-usage-stats"],
        env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        def listening() -> bool:
            assert head.poll() is None, "ray start --head exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                return False

        _wait_for(listening, 120, "the Ray head", poll=0.2)
        yield f"127.0.0.1:{port}", env, head.pid
    finally:
        # Every process of the head's session (its own process group, and the workers,
        # which Ray puts in groups of their own): nothing else on the machine.
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(30)
        for _ in range(50):
            left = _session_processes(head.pid, "")
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for _ in range(40):  # a process on its way out may still write there
            shutil.rmtree(ray_tmp, ignore_errors=True)
            if not ray_tmp.exists():
                break
            time.sleep(0.25)


# --------------------------------------------------------------------------- no Ray needed


def test_help_and_a_local_run_never_import_ray(tmp_path):
    img = _images(tmp_path / "in", 1)[0]
    code = (
        "import sys\n"
        "from tests.helpers import invoke\n"
        "assert invoke(['--help']).exit_code == 0\n"
        "assert invoke(['localize', '--help']).exit_code == 0\n"
        f"r = invoke(['localize', {str(img)!r}, '-m', 'ela', '--out', {str(tmp_path / 'o')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('ray' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=_env(tmp_path / "tmp"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_engine_options_are_usage_errors_without_ray_engine(cli, tmp_path, monkeypatch):
    img = _images(tmp_path / "in", 1)[0]
    out = tmp_path / "o"
    r = cli(["localize", img, "--out", out, "--address", "127.0.0.1:6379"])
    assert r.exit_code == 2 and "--address needs --engine ray" in r.stderr
    r = cli(["localize", img, "--out", out, "-j", "2", "--no-isolate"])
    assert r.exit_code == 2 and "drop --no-isolate" in r.stderr
    r = cli(["localize", img, "--out", out, "--engine", "spark"])
    assert r.exit_code == 2 and "--engine must be one of local, ray" in r.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    r = cli(["localize", img, "--out", out, "--engine", "ray"])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == ("forgectl: error: --engine ray needs Ray: pip install "
                                "'forgectl[ray]'")
    assert not out.exists()


@needs_ray
def test_resume_with_nothing_left_starts_no_ray(cli, tmp_path):
    """A batch finished by the local engine, resumed with --engine ray: all kept, no Ray."""
    _images(tmp_path / "in", 3)
    out = tmp_path / "out"
    assert cli(["localize", tmp_path / "in", "-m", "ela", "--out", out]).exit_code == 0
    log = (out / "results.jsonl").read_bytes()
    imported = "ray" in sys.modules
    r = cli(["localize", tmp_path / "in", "-m", "ela", "--out", out, "--engine", "ray",
             "--resume"])
    assert r.exit_code == 0, r.output
    assert "3 image(s) analysed with ela (3 finished earlier, kept), 0 failed" in r.stderr
    assert (out / "results.jsonl").read_bytes() == log
    assert imported or "ray" not in sys.modules


def test_a_worker_says_what_stops_it_before_any_image(tmp_path, monkeypatch):
    """The actor's checks, run in this process (no Ray): it sees --out (the driver's marker),
    the first input, and runs the driver's forgectl version; an error of the whole batch (a
    full disk) goes back to the driver as such."""
    from forgectl import __version__, registry
    from forgectl.engine_ray import ForgectlWorker, WorkerSettings

    monkeypatch.chdir(tmp_path)
    img = _images(tmp_path / "in", 1)[0]
    marker = Path("out") / ".forgectl-ray-test"
    marker.parent.mkdir()
    token = f"{__version__}:abc"
    marker.write_text(token)
    worker = ForgectlWorker(registry.load("ela"), WorkerSettings(
        max_pixels=None, isolate=False, timeout=0, max_memory_mb=None, cwd=str(tmp_path)))
    assert worker.ready(str(marker), token, "in/img000.jpg")["problem"] == ""
    assert worker.ready(str(marker), f"{__version__}:other", None)["problem"].startswith(
        "does not see the output folder out")
    assert worker.ready(str(marker), "0.0.1:abc", None)["problem"] == (
        f"runs forgectl {__version__}, the driver 0.0.1")
    assert worker.ready(str(marker), token, "in/missing.jpg")["problem"].startswith(
        "does not see the input in/missing.jpg")
    kind, record = worker.run(str(img), "out/img000")
    assert kind == "record" and record["complete"] is True
    from forgectl import pipeline
    from forgectl.errors import OutputError

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OutputError("cannot write out: No space left on device")

    monkeypatch.setattr(pipeline, "process_file", full_disk)
    assert worker.run(str(img), "out/img000") == (
        "fatal", ("OutputError", "cannot write out: No space left on device", 74))


# --------------------------------------------------------------------------- with Ray


def _json_without_timings(path: Path) -> str:
    record = json.loads(path.read_text())
    record.pop("timings")
    return json.dumps(record, indent=2)


@needs_ray
@pytest.mark.slow
def test_ray_outputs_are_byte_identical_to_the_local_engine(tmp_path):
    """A local Ray with 2 CPUs started for the run (and stopped: its folder is gone), 60
    images and a corrupt one: the same files, records and results.jsonl as a local run, the
    same choice of ``--outputs``."""
    inputs = tmp_path / "in"
    _images(inputs, 60)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    runs = {}
    ray_tmp = Path(tempfile.mkdtemp(prefix="fr-", dir="/tmp"))  # short: Ray's socket paths
    try:
        for engine, extra in (("local", []), ("ray", ["--engine", "ray", "-j", "2"])):
            cwd = tmp_path / engine
            cwd.mkdir()
            env = _env(ray_tmp if engine == "ray" else tmp_path / "tmp")
            # --outputs travels with each image to the workers (no heatmap either way).
            proc = subprocess.run(_cli("localize", inputs, "-m", "ela", "--out", "out",
                                       "--outputs", "mask,overlay", *extra),
                                  capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
            runs[engine] = proc
            assert proc.returncode == 1, proc.stderr  # the corrupt file fails, batch goes on
            assert "broken.jpg: error:" in proc.stderr
            assert "60 image(s) analysed with ela" in proc.stderr
        assert not list(ray_tmp.iterdir()), "Ray's files were left"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert "on Ray (2 worker(s))" in runs["ray"].stderr
    local, ray_out = tmp_path / "local" / "out", tmp_path / "ray" / "out"
    names = sorted(p.name for p in local.iterdir())
    assert names == sorted(p.name for p in ray_out.iterdir())  # no marker, no .tmp left
    assert len(names) == 60 * 3 + 1 and not any(n.endswith(".heatmap.png") for n in names)
    for name in names:
        if name.endswith(".png"):
            assert (local / name).read_bytes() == (ray_out / name).read_bytes(), name
        elif name.endswith(".json"):
            assert _json_without_timings(local / name) == _json_without_timings(ray_out / name)
    lines = {}
    for engine, out in (("local", local), ("ray", ray_out)):
        lines[engine] = []
        for line in (out / "results.jsonl").read_text().splitlines():
            record = json.loads(line)
            record.pop("timings", None)
            lines[engine].append(json.dumps(record))
    assert len(lines["ray"]) == 61
    assert lines["ray"] == lines["local"]  # same records, same (input) order


@needs_ray
@pytest.mark.slow
def test_a_worker_killed_mid_run_has_its_images_done_elsewhere(tmp_path, ray_head):
    address, env, head_session = ray_head
    inputs, out = tmp_path / "in", tmp_path / "out"
    _images(inputs, 100, 192, 256)
    driver = subprocess.Popen(
        _cli("localize", inputs, "-m", "ghost", "--out", out, "--engine", "ray",
             "--address", address),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _json_files(out) >= 1 or driver.poll() is not None, 120,
                  "the first image")
        assert len(_session_processes(head_session, "ray::ForgectlWorker")) == 2
        # One that is analysing an image (Ray names the process after the running method).
        busy: list[int] = []
        _wait_for(lambda: busy.extend(_session_processes(head_session,
                                                         "ray::ForgectlWorker.run")) or busy,
                  60, "a busy worker")
        assert _json_files(out) < 50, "the run went too fast to kill a worker mid-run"
        os.kill(busy[0], signal.SIGKILL)
        _, stderr = driver.communicate(timeout=600)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, stderr
    assert "100 image(s) analysed with ghost on Ray (2 worker(s), " in stderr
    assert " retried)" in stderr
    plan = _plan(inputs, out)
    assert all(_complete(plan, "ghost"))
    assert _log_paths(out / "results.jsonl") == [str(item.path) for item in plan]
    assert not list(out.glob(".*"))  # no temporary file, no marker


@needs_ray
@pytest.mark.slow
def test_an_interrupted_driver_resumes_with_only_the_missing_images(tmp_path, ray_head):
    address, env, _ = ray_head
    inputs, out = tmp_path / "in", tmp_path / "out"
    _images(inputs, 100, 192, 256)
    args = ("localize", inputs, "-m", "ghost", "--out", out, "--engine", "ray",
            "--address", address)
    driver = subprocess.Popen(_cli(*args), cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _json_files(out) >= 4 or driver.poll() is not None, 120,
                  "the first images")
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, stderr
    assert "interrupted by SIGINT" in stderr
    plan = _plan(inputs, out)
    complete = _complete(plan, "ghost")
    kept = sum(complete)
    assert 4 <= kept < 100
    for item, ok in zip(plan, complete, strict=True):
        if not ok:  # an image dropped mid-way leaves nothing
            assert not list(item.out_stem.parent.glob(item.out_stem.name + ".*"))
    assert not list(out.glob(".*"))
    # Every finished image is in results.jsonl (an interrupted log may be out of order).
    assert sorted(_log_paths(out / "results.jsonl")) == sorted(
        str(item.path) for item, ok in zip(plan, complete, strict=True) if ok)
    before = {_json(item): _json(item).stat()
              for item, ok in zip(plan, complete, strict=True) if ok}

    proc = subprocess.run(_cli(*args, "--resume"), cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"{100 - kept} image(s) analysed" not in proc.stderr  # counts include the kept
    assert "100 image(s) analysed with ghost on Ray" in proc.stderr
    assert f"({kept} finished earlier, kept)" in proc.stderr
    assert all(_complete(plan, "ghost"))
    for path, stat in before.items():  # not analysed again
        now = path.stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    logged = _log_paths(out / "results.jsonl")
    assert sorted(logged) == sorted(str(item.path) for item in plan)  # once each
    kept_paths = [str(item.path) for item, ok in zip(plan, complete, strict=True) if ok]
    assert logged[:kept] == kept_paths  # kept first, then the rest, each in input order
    assert logged[kept:] == [str(item.path) for item, ok in zip(plan, complete, strict=True)
                             if not ok]
