"""Library side of `localize`: find inputs, name outputs, analyse one file, build its record,
tell a finished image from an unfinished one (``--resume``), and run images in a worker process
that a timeout, a memory bound or a crash can end without ending the batch.

Kept apart from the command so other front ends (scripts, services) get the same behaviour.

Isolation (:class:`IsolatedRunner`): one persistent worker process holds the method (weights
loaded once) and, per image, decodes, analyses and writes the outputs, then sends the record
back. The parent waits for it, polling the worker's resident memory; on a timeout, the memory
bound, or a crash of native code (libjpeg, OpenCV, a decoder segfault) it kills the worker,
removes that image's partial files, records the error and starts a new worker for the next
image. Workers come from a fork server (a clean interpreter started once per process), never
from a fork of this one (see :func:`_context`).
"""

from __future__ import annotations

import glob
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgectl import __version__, errors
from forgectl.backends.base import Backend, Result, compute_threads
from forgectl.errors import CANNOT_RUN, ForgectlError, InputError, OutputError
from forgectl.intake import (
    FORMAT_HEAD_BYTES,
    IMAGE_EXTENSIONS,
    READABLE_FORMATS,
    ForensicImage,
    detect_format,
    load_image,
)
from forgectl.outputs import (
    IMAGE_OUTPUTS,
    MAP_OUTPUTS,
    OUTPUT_SUFFIXES,
    SCHEMA_VERSION,
    atomic_write,
    discard_outputs,
    output_paths,
    prepare_folder,
    to_json,
    write_result_files,
)
from forgectl.weights import sha256_file

#: Per-image time limit of ``localize`` (seconds; 0 = none).
DEFAULT_TIMEOUT_S = 600.0
#: ``error_kind`` of a failed image's record (docs/OUTPUTS.md).
ERROR_KINDS = ("input", "timeout", "memory", "crash", "internal")
#: Errors that concern the whole batch, not one image: they stop it.
FATAL_ERRORS: tuple[type[ForgectlError], ...] = (OutputError, *CANNOT_RUN)

#: Extensions picked up when a folder is given (explicit files are tried whatever their name).
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One file to analyse, the output stem it maps to (``<out>/<rel>/<stem>``) and the PNGs
    to write there (``localize --outputs``; the JSON always)."""

    path: Path
    out_stem: Path
    kinds: tuple[str, ...] = IMAGE_OUTPUTS


def _is_our_output(name: str) -> bool:
    return any(name.endswith(s) for s in OUTPUT_SUFFIXES if s != ".json")


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    found = []
    for p in folder.glob(pattern):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and not _is_our_output(p.name):
            found.append(p)
    return sorted(found)


#: File extension for an image read from standard input, by the format its bytes name.
_STDIN_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif", "GIF": ".gif",
                     "BMP": ".bmp", "WEBP": ".webp", "AVIF": ".avif", "HEIF": ".heic"}


def save_standard_input(out_dir: Path) -> Path:
    """Read one image from standard input and keep it as ``<out_dir>/stdin.<ext>``, the
    extension from its bytes: the analysed bytes stay beside their outputs, and the record's
    input path and sha256 name a file one can open again.

    Raises:
        InputError: standard input is a terminal, empty, or not an image format forgectl reads
            (nothing is written).
        OutputError: ``out_dir`` cannot be made or written.
    """
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("-: standard input is a terminal; pipe an image into it")
    data = sys.stdin.buffer.read()
    if not data:
        raise InputError("-: standard input is empty")
    fmt = detect_format(data[:FORMAT_HEAD_BYTES])
    if fmt is None:
        raise InputError(f"-: standard input is not a {READABLE_FORMATS} image")
    prepare_folder(out_dir)
    path = Path(out_dir) / f"stdin{_STDIN_EXTENSIONS[fmt]}"
    with atomic_write(path) as fh:
        fh.write(data)
    return path


def read_path_list(source: str) -> list[str]:
    """The paths listed in file ``source`` (``-``: standard input), one per line, or separated
    by NUL bytes when there are any (``find -print0``, safe for names with newlines). Empty
    entries are skipped; names are decoded as the file system does (odd bytes survive)."""
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            data = Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"--files-from {source}: {exc.strerror or exc}") from exc
    if b"\0" in data:
        entries = data.split(b"\0")
    else:
        entries = [line.rstrip(b"\r") for line in data.split(b"\n")]
    return [os.fsdecode(e) for e in entries if e]


def collect_inputs(args: Iterable[str], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated file list.

    Returns:
        ``(files, problems)``: problems are one-line messages for arguments that matched
        nothing (the caller reports them as failures).
    """
    files: list[Path] = []
    problems: list[str] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = _folder_images(p, recursive)
            if not found:
                problems.append(f"{arg}: no image files in folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        elif _GLOB_CHARS & set(arg):
            matched = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            matched = [m for m in matched if m.is_file()]
            if not matched:
                problems.append(f"{arg}: pattern matched no files")
            files.extend(matched)
        else:
            problems.append(f"{arg}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def plan_outputs(files: list[Path], out_dir: Path,
                 kinds: tuple[str, ...] = IMAGE_OUTPUTS) -> list[InputFile]:
    """Map each input to an output stem that mirrors its path below the inputs' common folder
    (``kinds``: the PNGs to write for each, see :class:`InputFile`).

    Files with the same stem in different folders land in different folders; two files with
    the same stem in one folder (``a.jpg``, ``a.png``) keep their extension in the stem.
    """
    if not files:
        return []
    resolved = [f.resolve() for f in files]
    base = Path(os.path.commonpath([r.parent for r in resolved]))
    stems: dict[Path, list[int]] = {}
    rels = []
    for i, r in enumerate(resolved):
        rel = r.parent.relative_to(base) / r.stem
        rels.append(rel)
        stems.setdefault(rel, []).append(i)
    plan = []
    for f, r, rel in zip(files, resolved, rels, strict=True):
        if len(stems[rel]) > 1:
            rel = rel.with_name(f"{r.stem}_{r.suffix.lstrip('.').lower() or 'noext'}")
        plan.append(InputFile(path=f, out_stem=out_dir / rel, kinds=tuple(kinds)))
    return plan


def check_not_overwriting_inputs(
    plan: list[InputFile], suffixes: Iterable[str] = OUTPUT_SUFFIXES
) -> None:
    """Refuse to run when an output path (stem + one of ``suffixes``) would replace an input."""
    inputs = {item.path.resolve() for item in plan}
    for item in plan:
        for suffix in suffixes:
            target = item.out_stem.with_name(item.out_stem.name + suffix).resolve()
            if target in inputs:
                raise InputError(f"output {target} would overwrite an input; choose another --out")


def analyze_file(
    backend: Backend, path: Path, max_pixels: int | None = None
) -> tuple[ForensicImage, Result, dict[str, float]]:
    """Decode ``path`` and run ``backend`` on it; returns the image, result and timings (s)."""
    t0 = time.perf_counter()
    image = load_image(path, max_pixels=max_pixels)
    t1 = time.perf_counter()
    result = backend.localize(image)
    t2 = time.perf_counter()
    return image, result, {"decode_s": round(t1 - t0, 4), "analyze_s": round(t2 - t1, 4)}


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists ...), for comparisons."""
    return json.loads(to_json(obj))


def run_settings(backend: Backend) -> dict[str, Any]:
    """What makes two runs' outputs for one input the same: the record fields ``--resume``
    compares (method, weights digest, runtime, threshold, every option, forgectl version)."""
    spec = backend.spec
    return {
        "forgectl_version": __version__,
        "method": spec.name,
        "weights_sha256": backend.weights_sha256,
        "runtime": backend.runtime_label,
        "threshold": backend.threshold,
        "options": _jsonable(backend.options),
        # The --restore pre-stage (forgectl.restore.RestoringBackend; None when off).
        "restore": _jsonable(getattr(backend, "restore_settings", lambda: None)()),
    }


def record_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The :func:`run_settings` a record was made with."""
    method = record.get("method") or {}
    return {
        "forgectl_version": record.get("forgectl_version"),
        "method": method.get("name"),
        "weights_sha256": method.get("weights_sha256"),
        "runtime": method.get("runtime"),
        "threshold": method.get("threshold"),
        "options": method.get("options"),
        "restore": (record.get("restoration") or {}).get("settings"),
    }


def build_record(
    image: ForensicImage, result: Result, backend: Backend, timings: dict[str, float]
) -> dict[str, Any]:
    """The per-image JSON record (schema ``forgectl.result/1``, documented in docs/OUTPUTS.md).

    :func:`forgectl.outputs.write_result_files` adds ``outputs``, ``output_sha256`` and
    ``complete``.
    """
    spec = backend.spec
    record = {
        "schema": SCHEMA_VERSION,
        "forgectl_version": __version__,
        "input": image.facts(),
        "method": {
            "name": spec.name,
            "kind": spec.kind,
            "weights": backend.weights_id,
            "weights_sha256": backend.weights_sha256,
            # Which engine ran the network: "torch" or "onnx"; None for classical methods.
            "runtime": backend.runtime_label,
            "threshold": backend.threshold,
            "mask_rule": "method" if spec.decides_mask else "heatmap >= threshold",
            "options": _jsonable(backend.options),
        },
        "applicable": result.applicable,
        "note": result.note,
        "score": round(result.score, 6),
        "tampered_fraction": round(result.tampered_fraction, 6),
        "facts": result.facts,
        "timings": timings,
    }
    # The --restore pre-stage's decision for this image (docs/RESTORE.md); absent when off.
    stage = getattr(backend, "restore_stage_record", None)
    if stage is not None:
        record["restoration"] = {**stage, "settings": backend.restore_settings()}
    return record


def error_record(path: Path, message: str, method: str, kind: str = "input") -> dict[str, Any]:
    """The record of a failed input (no per-image files): ``error`` and ``error_kind``."""
    return {
        "schema": SCHEMA_VERSION,
        "forgectl_version": __version__,
        "input": {"path": str(path)},
        "method": {"name": method},
        "error": message,
        "error_kind": kind,
    }


def batch_record(record: dict[str, Any], item: InputFile) -> dict[str, Any]:
    """The results.jsonl line of an image: its JSON record, plus the JSON's own path."""
    if "error" in record:
        return record
    out = dict(record)
    out["outputs"] = {**record.get("outputs", {}), "json": str(output_paths(item.out_stem)["json"])}
    return out


def completed_record(item: InputFile, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The record of an earlier run's outputs for ``item`` if they are complete and valid for
    ``settings`` (:func:`run_settings`), else None.

    Valid means: the JSON parses, says ``"complete": true``, was made with the same settings,
    for an input with the same sha256 as the file now, wrote the PNGs ``item.kinds`` asks for
    (the maps of :data:`MAP_OUTPUTS` only where the method makes them) and no other, and every
    one of them exists with the sha256 the JSON recorded.
    """
    paths = output_paths(item.out_stem)
    try:
        record = json.loads(paths["json"].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("complete") is not True:
        return None
    if record.get("schema") != SCHEMA_VERSION or record_settings(record) != settings:
        return None
    digests = record.get("output_sha256")
    required = set(item.kinds) - set(MAP_OUTPUTS)
    if (not isinstance(digests, dict) or not required <= set(digests)
            or not set(digests) <= set(item.kinds)):
        return None
    try:
        if (record.get("input") or {}).get("sha256") != sha256_file(item.path):
            return None
        for kind, digest in digests.items():
            if sha256_file(paths[kind]) != digest:
                return None
    except OSError:
        return None
    return record


def process_file(backend: Backend, item: InputFile, max_pixels: int | None = None) -> dict:
    """Analyse one input and write its files; returns its record, or an error record when the
    input fails (then none of its files is left).

    Raises:
        OutputError, WeightsError, UsageError: problems of the whole batch, not of this input.
    """
    name = backend.spec.name
    try:
        image, result, timings = analyze_file(backend, item.path, max_pixels)
        record = build_record(image, result, backend, timings)
        return write_result_files(item.out_stem, image.rgb, result.heatmap, result.mask, record,
                                  result.maps, threads=compute_threads(), kinds=item.kinds)
    except FATAL_ERRORS:
        raise
    except ForgectlError as exc:
        record = error_record(item.path, str(exc), name)
    except MemoryError:
        record = error_record(item.path, "out of memory while analysing this image", name,
                              "memory")
    except Exception as exc:  # a method failing on one input must not end the batch
        if os.environ.get("FORGECTL_DEBUG", "") not in ("", "0"):
            raise
        record = error_record(
            item.path, f"internal error in {name}: {type(exc).__name__}: {errors.describe(exc)} "
            "(a bug: please report it; FORGECTL_DEBUG=1 shows a traceback)", name, "internal")
    discard_outputs(item.out_stem)
    return record


# --------------------------------------------------------------------------- runners


class StopBatch(Exception):
    """The batch was asked to stop (a signal) while an image ran; the image was dropped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class InProcessRunner:
    """Runs each image in this process (``--no-isolate``): no timeout, no memory bound, and a
    crash in native code ends the batch. A stop request takes effect between images."""

    isolated = False

    def __init__(self, backend: Backend, max_pixels: int | None = None) -> None:
        self.backend = backend
        self.max_pixels = max_pixels
        self.stop_signal: int | None = None

    def start(self) -> None:
        return None

    def run(self, item: InputFile) -> dict[str, Any]:
        if self.stop_signal is not None:
            raise StopBatch(self.stop_signal)
        return process_file(self.backend, item, self.max_pixels)

    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum

    def close(self) -> None:
        return None

    def __enter__(self) -> InProcessRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def total_memory_mb() -> int | None:
    """Physical memory in MB (Linux and most Unixes), or None when unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (AttributeError, ValueError, OSError):
        return None


def default_max_memory_mb() -> int:
    """Three quarters of physical memory (0 = no bound when it is unknown)."""
    total = total_memory_mb()
    return total * 3 // 4 if total else 0


def _rss_mb(pid: int) -> float | None:
    """Resident memory of process ``pid`` in MB (Linux ``/proc``), or None."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _context() -> Any:
    """The multiprocessing context for workers: a fork server (a clean interpreter, started
    once per process, that forks each worker), else spawn. Never a fork of this process: it
    may hold other threads' locks (OpenCV's and BLAS's pools, torch's OpenMP) in any state,
    and a child that needs one waits for ever."""
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["forgectl.pipeline"])
        return ctx
    return mp.get_context("spawn")


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent (the fork server, which exits
    with the main process, even on SIGKILL) dies, so no orphan goes on writing outputs that a
    resumed run is also writing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_main(conn: Any, backend: Backend, max_pixels: int | None,
                 environ: dict[str, str]) -> None:
    """Worker loop: receive an input, send back its record (or a batch-fatal error)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what a Ctrl-C does
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    # A fork server's children inherit the environment it started with: use the caller's
    # (FORGECTL_THREADS, FORGECTL_WEIGHTS_DIR, FORGECTL_DEBUG ...).
    if environ != dict(os.environ):
        os.environ.clear()
        os.environ.update(environ)
    try:
        import cv2

        cv2.setNumThreads(compute_threads())
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        item = InputFile(path=Path(job[0]), out_stem=Path(job[1]), kinds=tuple(job[2]))
        try:
            reply: tuple[str, Any] = ("record", process_file(backend, item, max_pixels))
        except ForgectlError as exc:
            reply = ("fatal", (type(exc).__name__, str(exc), exc.exit_code))
        except Exception as exc:  # only with FORGECTL_DEBUG: hand the bug to the parent
            reply = ("fatal", ("ForgectlError", f"internal error: {type(exc).__name__}: "
                               f"{errors.describe(exc)}", 70))
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


def _fatal(name: str, message: str, code: int) -> ForgectlError:
    return errors.rebuild(name, message, code)


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if -exitcode == getattr(signal, "SIGKILL", 9):  # Windows has no SIGKILL
            return f"was killed ({name}; out of memory?)"
        return f"crashed ({name})"
    return f"exited unexpectedly (code {exitcode})"


class IsolatedRunner:
    """Runs each image in a persistent worker process; see the module docstring.

    As with :mod:`multiprocessing`, a script that uses it must guard its entry point
    (``if __name__ == "__main__":``): workers import the main module. The backend is pickled
    to the worker, so its class must be importable.

    Args:
        backend: the method (sent to the worker once; weights load there, lazily).
        max_pixels: the decode limit.
        timeout: seconds an image may take (decode, analysis, writing; for the first image
            of a worker also its start and the weights load); 0 = no limit.
        max_memory_mb: resident memory the worker may reach (it holds the method too);
            0 = no bound. Checked every ``poll`` seconds (Linux ``/proc``).
    """

    isolated = True

    def __init__(self, backend: Backend, max_pixels: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, max_memory_mb: float = 0,
                 poll: float = 0.05, environ: dict[str, str] | None = None) -> None:
        self.backend = backend
        #: Variables set in the worker on top of this process's (its thread budget).
        self.environ = dict(environ or {})
        self.max_pixels = max_pixels
        self.timeout = float(timeout or 0)
        self.max_memory_mb = float(max_memory_mb or 0)
        self.poll = poll
        self.stop_signal: int | None = None
        self.restarts = 0
        self.peak_rss_mb = 0.0
        self._proc: Any = None
        self._conn: Any = None
        self._current: InputFile | None = None

    def request_stop(self, signum: int) -> None:
        """Called from a signal handler: drop the current image and stop."""
        self.stop_signal = signum

    def _start(self) -> None:
        ctx = _context()
        parent_conn, child_conn = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, name="forgectl-worker", daemon=True,
                           args=(child_conn, self.backend, self.max_pixels,
                                 {**os.environ, **self.environ}))
        proc.start()
        child_conn.close()
        self._proc, self._conn = proc, parent_conn

    def start(self) -> None:
        """Start the worker now (before other threads exist, e.g. a progress bar's) or replace
        a dead one, or one holding over 3/4 of the memory bound (freed memory the allocator
        kept from an earlier image)."""
        if self._proc is not None and self._proc.is_alive():
            rss = self._measure()
            if not (self.max_memory_mb and rss is not None and rss > 0.75 * self.max_memory_mb):
                return
        if self._proc is not None:
            self._kill()
        self._start()

    def _kill(self) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        if proc.is_alive():
            proc.kill()
        proc.join(5)
        conn.close()
        self.restarts += 1

    def run(self, item: InputFile) -> dict[str, Any]:
        """The record of ``item`` (an error record for a timeout, memory or crash).

        Raises:
            StopBatch: a stop was requested; the image was dropped (its files removed).
            OutputError, WeightsError, UsageError: a batch-fatal error in the worker.
        """
        if self.stop_signal is not None:
            raise StopBatch(self.stop_signal)
        self.start()
        self._current = item  # kept if _wait raises, for __exit__
        record = self._wait(item)
        self._current = None
        return record

    def _wait(self, item: InputFile) -> dict[str, Any]:
        name = self.backend.spec.name
        started = time.monotonic()
        try:
            self._conn.send((str(item.path), str(item.out_stem), item.kinds))
        except (OSError, ValueError):
            pass  # the worker died already: found below
        while True:
            try:
                ready = self._conn.poll(self.poll)
            except (OSError, EOFError):
                ready = False
            if ready:
                try:
                    kind, payload = self._conn.recv()
                except (EOFError, OSError):  # the worker is gone: let it be reaped
                    ready = False
                    self._proc.join(2)
                else:
                    self._measure()
                    if kind == "fatal":
                        self._kill()
                        raise _fatal(*payload)
                    return payload
            if not ready and not self._proc.is_alive():
                reason = _exit_reason(self._proc.exitcode)
                self._kill()
                discard_outputs(item.out_stem)
                return error_record(item.path, f"the analysis process {reason} on this file",
                                    name, "crash")
            if self.stop_signal is not None:
                self._kill()
                discard_outputs(item.out_stem)
                raise StopBatch(self.stop_signal)
            if self.timeout and time.monotonic() - started > self.timeout:
                self._kill()
                discard_outputs(item.out_stem)
                return error_record(item.path, f"timed out after {self.timeout:g} s "
                                    "(--timeout)", name, "timeout")
            rss = self._measure()
            if self.max_memory_mb and rss is not None and rss > self.max_memory_mb:
                self._kill()
                discard_outputs(item.out_stem)
                return error_record(item.path, f"needed more than {self.max_memory_mb:g} MB "
                                    "of memory (--max-memory)", name, "memory")

    def _measure(self) -> float | None:
        rss = _rss_mb(self._proc.pid) if self._proc is not None else None
        if rss is not None:
            self.peak_rss_mb = max(self.peak_rss_mb, rss)
        return rss

    def close(self) -> None:
        """Let the worker exit (or kill it after a few seconds)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is None:
            return
        try:
            conn.send(None)
        except (OSError, ValueError):
            pass
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        conn.close()

    def __enter__(self) -> IsolatedRunner:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Leaving on an exception (a second Ctrl-C, a fatal error): no waiting for the worker,
        # and the image it was on leaves no files.
        current = self._current
        self._kill()
        if current is not None:
            discard_outputs(current.out_stem)


def local_workers(requested: int | None, images: int) -> int:
    """How many worker processes ``localize -j`` runs: ``requested``, else one per CPU; never
    more than there are images."""
    wanted = requested if requested is not None else (os.cpu_count() or 1)
    return max(1, min(wanted, images))


class ParallelRunner:
    """Images in ``workers`` isolated worker processes at once (``localize -j N``), each an
    :class:`IsolatedRunner` (same timeout, memory bound and crash handling per image) with
    ``threads`` compute threads. :meth:`records` yields in input order, so results.jsonl,
    stdout and the outputs are those of one worker, only sooner.

    Args:
        backend, max_pixels, timeout: as for :class:`IsolatedRunner`.
        workers: processes (>= 1).
        max_memory_mb: the bound of each worker (0 = none).
        threads: ``FORGECTL_THREADS`` of each worker.
    """

    isolated = True

    def __init__(self, backend: Backend, max_pixels: int | None, workers: int,
                 timeout: float = DEFAULT_TIMEOUT_S, max_memory_mb: float = 0,
                 threads: int = 1) -> None:
        env = {"FORGECTL_THREADS": str(max(1, threads))}
        self.runners = [IsolatedRunner(backend, max_pixels, timeout, max_memory_mb,
                                       environ=env) for _ in range(max(1, workers))]
        self.stop_signal: int | None = None

    @property
    def pool_size(self) -> int:
        return len(self.runners)

    def start(self) -> None:
        for runner in self.runners:
            runner.start()

    def request_stop(self, signum: int) -> None:
        self.stop_signal = signum
        for runner in self.runners:
            runner.request_stop(signum)

    def records(self, todo: list[InputFile]) -> Iterable[tuple[InputFile, dict[str, Any]]]:
        """``(item, record)`` per image in ``todo``'s order, analysed ``len(runners)`` at a
        time (one thread per worker waits for it).

        Raises:
            StopBatch: a stop was requested; images in progress were dropped.
            OutputError, WeightsError, UsageError: a batch-fatal error in a worker.
        """
        import queue
        from concurrent.futures import ThreadPoolExecutor

        idle: queue.SimpleQueue[IsolatedRunner] = queue.SimpleQueue()
        for runner in self.runners:
            idle.put(runner)

        def analyse(item: InputFile) -> dict[str, Any]:
            runner = idle.get()
            try:
                return runner.run(item)
            finally:
                idle.put(runner)

        pool = ThreadPoolExecutor(len(self.runners), thread_name_prefix="forgectl-wait")
        futures: list[Any] = []
        yielded = 0
        try:
            futures = [pool.submit(analyse, item) for item in todo]
            for item, future in zip(todo, futures, strict=True):
                record = future.result()
                yielded += 1
                yield item, record
        except BaseException:
            # Stop the others at once (their images are dropped, as for a signal) instead of
            # letting every queued image run before the error surfaces.
            for runner in self.runners:
                runner.request_stop(self.stop_signal or signal.SIGTERM)
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            # Images finished out of order whose records were never handed out: no files
            # without a results.jsonl line.
            for item, future in zip(todo[yielded:], futures[yielded:], strict=False):
                if future.done() and not future.cancelled() and future.exception() is None:
                    discard_outputs(item.out_stem)

    def close(self) -> None:
        for runner in self.runners:
            runner.close()

    def __enter__(self) -> ParallelRunner:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for runner in self.runners:
            runner.__exit__(exc_type, *exc)
