"""The Ray engine of `localize` (``--engine ray``): the local engine's per-image work spread
over the CPUs of a Ray cluster (docs/SCALE.md).

- Workers: a pool of Ray actors, one per CPU of the cluster (or ``--workers``), each holding
  the method once. An actor runs the pipeline's own per-image path: a
  :class:`~forgectl.pipeline.IsolatedRunner` (a worker process with the time limit, the
  memory bound and the crash handling of a local run) or, with ``--no-isolate``,
  :func:`~forgectl.pipeline.process_file` in the actor. Outputs are therefore those of the
  local engine by construction: same files, same records, same error kinds.
- Files: inputs and ``--out`` are on a file system every node sees at the same path (the
  driver's working folder too, when paths are relative: each actor works from it). Each
  worker writes its image's files with the pipeline's atomic writers (temporary name, fsync,
  rename; the JSON last), so a file in ``--out`` is complete or absent whoever wrote it. The
  driver owns ``results.jsonl`` and writes it in input order, buffering completions that
  arrive early (at most ``window`` images ahead of the oldest unfinished one). At start every
  actor proves it sees ``--out`` (a marker file the driver wrote) and the first input, and
  runs the driver's forgectl version; otherwise the run stops before any image.
- Faults: an actor that dies (killed, out of memory, its node lost) has its images handed to
  the other actors (its partial files removed first) and is replaced; an image on which
  :data:`MAX_ATTEMPTS` workers died becomes a ``crash`` record. A bad image never kills an
  actor when isolated: its worker process dies and is replaced inside the actor, as locally.
- Stop (SIGINT/SIGTERM through :meth:`RayRunner.request_stop`): the actors are killed, the
  images in progress dropped (their files removed), every finished one kept and reported.

``ray`` is imported only here, inside functions: ``forgectl --help`` and a local
``localize`` never load it.
"""

from __future__ import annotations

import collections
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgectl import __version__, errors
from forgectl.backends.base import Backend, compute_threads
from forgectl.errors import ForgectlError, UsageError
from forgectl.outputs import IMAGE_OUTPUTS
from forgectl.pipeline import (
    DEFAULT_TIMEOUT_S,
    InProcessRunner,
    InputFile,
    IsolatedRunner,
    StopBatch,
    default_max_memory_mb,
    discard_outputs,
    error_record,
)

#: Workers that may die on one image (each time it goes to another worker) before the image
#: is recorded as a crash.
MAX_ATTEMPTS = 3
#: Images sent ahead to one actor (one running, the next queued there): hides the round trip.
DEPTH = 2
#: How far (in images) dispatch may run ahead of the oldest unfinished image: bounds the
#: records the driver buffers to keep results.jsonl in input order.
WINDOW_PER_WORKER = 64
MIN_WINDOW = 1024
#: Longest temporary folder Ray's files can go under (its socket paths add about 85 bytes).
MAX_TEMP_ROOT = 20
#: Seconds after a stop before the dropped images' files are removed a second time.
DROP_GRACE_S = 1.0
#: Seconds to wait for the first worker of the pool to be ready.
STARTUP_TIMEOUT_S = 600.0
#: Environment passed from the driver to the workers (a remote node has its own).
_PASSED_ENV_PREFIXES = ("FORGECTL_",)
_PASSED_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "HF_HUB_OFFLINE")


def ray_available() -> bool:
    """True when the ``ray`` package is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


_AUTH_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def _import_ray(local: bool) -> Any:
    """``import ray``, set up for this process: no usage statistics sent and, for a local
    cluster, a token of this process's own (in its environment, which the cluster's processes
    inherit) rather than one Ray would write to ``~/.ray/auth_token``. Ray reads these
    settings when it is imported, so they are set before, once per process, and only when the
    user has not chosen how Ray authenticates."""
    if not ray_available():
        raise UsageError("--engine ray needs Ray: pip install 'forgectl[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local and "ray" not in sys.modules and not any(k in os.environ for k in _AUTH_ENV):
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    import ray

    return ray


# --------------------------------------------------------------------------- the worker


@dataclass
class WorkerSettings:
    """What every actor is started with (sent once)."""

    max_pixels: int | None
    isolate: bool
    timeout: float
    #: Resident MB per worker; None = 3/4 of its node's memory shared by the node's CPUs.
    max_memory_mb: float | None
    cwd: str
    environ: dict[str, str] = field(default_factory=dict)


class ForgectlWorker:
    """One Ray actor (``ray.remote`` is applied by the driver, so importing this module needs
    no Ray): holds the method and runs images one after another. Never raises in
    ``__init__``: a problem is reported by :meth:`ready`, so that an actor death always means
    the process died."""

    def __init__(self, backend: Backend, settings: WorkerSettings) -> None:
        self.problem = ""
        self.runner: IsolatedRunner | InProcessRunner | None = None
        try:
            os.environ.update(settings.environ)
            tempfile.tempdir = None  # a TMPDIR from the driver applies (see _start_local)
            if os.path.isdir(settings.cwd):
                os.chdir(settings.cwd)  # relative inputs and --out, as the driver sees them
            try:
                import cv2

                cv2.setNumThreads(compute_threads())
            except ImportError:  # pragma: no cover - cv2 is a dependency
                pass
            if settings.isolate:
                limit = settings.max_memory_mb
                if limit is None:
                    limit = default_max_memory_mb() // max(1, _node_cpus())
                self.runner = IsolatedRunner(backend, settings.max_pixels,
                                             timeout=settings.timeout, max_memory_mb=limit)
                self.runner.start()  # the worker process (the method loads there, once)
            else:
                self.runner = InProcessRunner(backend, settings.max_pixels)
        except Exception as exc:  # reported by ready(): the driver stops the run
            self.problem = f"cannot start: {type(exc).__name__}: {errors.describe(exc)}"

    def ready(self, marker: str, token: str, probe: str | None) -> dict[str, Any]:
        """Who this worker is and what stops it from working (``problem``, empty if none)."""
        problem = self.problem
        if not problem and __version__ != token.partition(":")[0]:
            problem = f"runs forgectl {__version__}, the driver {token.partition(':')[0]}"
        if not problem:
            try:
                seen = Path(marker).read_text(encoding="utf-8")
            except OSError:
                seen = None
            if seen != token:
                problem = (f"does not see the output folder {Path(marker).parent} (working "
                           f"folder {os.getcwd()})")
        if not problem and probe is not None and not os.path.exists(probe):
            problem = f"does not see the input {probe} (working folder {os.getcwd()})"
        return {"pid": os.getpid(), "node": _node_ip(), "problem": problem}

    def run(self, path: str, out_stem: str,
            kinds: tuple[str, ...] = IMAGE_OUTPUTS) -> tuple[str, Any]:
        """``("record", record)``, or ``("fatal", (error class, message, exit code))`` for an
        error of the whole batch (outputs cannot be written, broken weights)."""
        assert self.runner is not None
        try:
            return "record", self.runner.run(InputFile(path=Path(path), out_stem=Path(out_stem),
                                                       kinds=tuple(kinds)))
        except ForgectlError as exc:
            return "fatal", (type(exc).__name__, str(exc), exc.exit_code)
        except Exception as exc:  # only with FORGECTL_DEBUG: the driver reports the bug
            return "fatal", ("ForgectlError", f"internal error: {type(exc).__name__}: "
                             f"{errors.describe(exc)}", 70)

    def shutdown(self) -> None:
        if self.runner is not None:
            self.runner.close()


def _node_ip() -> str:
    try:
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # only for messages
        return "?"


def _node_cpus() -> int:
    """CPUs Ray gives this actor's node (the actors it will hold), else the machine's."""
    try:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        for node in ray.nodes():
            if node.get("NodeID") == node_id:
                return max(1, int(node.get("Resources", {}).get("CPU", 1)))
    except Exception:  # fall back to the machine's count
        pass
    return os.cpu_count() or 1


def _fatal(name: str, message: str, code: int) -> ForgectlError:
    return errors.rebuild(name, message, code)


# --------------------------------------------------------------------------- the driver


@dataclass
class _Slot:
    """One actor of the pool as the driver sees it."""

    handle: Any
    ready_ref: Any
    ready: bool = False
    busy: int = 0
    info: dict[str, Any] = field(default_factory=dict)


class RayRunner:
    """Runs a batch's images on a Ray cluster; yields their records in input order.

    Args:
        backend: the method (sent to each actor once; weights load there).
        out_dir: ``--out`` (the workers must see it; a marker file proves it).
        address: an existing cluster (``ray start --head`` prints it; ``auto`` finds a local
            one), or None to start a local Ray for this run (stopped at the end).
        workers: pool size; default one per CPU of the cluster (never more than images).
        isolate, timeout, max_pixels: as for the local engine.
        max_memory_mb: per worker; None = 3/4 of each node's memory over its CPUs.
    """

    def __init__(self, backend: Backend, out_dir: Path, max_pixels: int | None = None, *,
                 address: str | None = None, workers: int | None = None, isolate: bool = True,
                 timeout: float = DEFAULT_TIMEOUT_S, max_memory_mb: float | None = None) -> None:
        self.backend = backend
        self.out_dir = Path(out_dir)
        self.address = address
        self.workers = workers
        self.isolated = isolate
        self.settings = WorkerSettings(
            max_pixels=max_pixels, isolate=isolate, timeout=float(timeout or 0),
            max_memory_mb=max_memory_mb, cwd=os.getcwd(), environ=_worker_environ())
        self.stop_signal: int | None = None
        self.pool_size = 0
        self.deaths = 0
        self.retried = 0
        self.cluster_cpus = 0
        self._ray: Any = None
        self._temp_dir: str | None = None
        self._marker: Path | None = None
        self._token = ""
        self._slots: list[_Slot] = []
        self._inflight: dict[Any, tuple[_Slot, int]] = {}
        self._items: list[InputFile] = []
        self._dropped: list[InputFile] = []
        self._killed_at = 0.0

    def request_stop(self, signum: int) -> None:
        """Called from a signal handler: drop the images in progress and stop."""
        self.stop_signal = signum

    # ----------------------------------------------------------------- start / close

    def start(self) -> None:
        """Connect to the cluster (or start a local one). Signal handlers are kept: Ray's
        ``init`` installs its own for SIGTERM."""
        if self._ray is not None:
            return
        local = not self.address or self.address == "local"
        ray = _import_ray(local)
        import logging

        saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR,
                                   "include_dashboard": False}
        try:
            if local:
                self._start_local(ray, options)
            else:
                ray.init(address=self.address, **options)
        except Exception as exc:
            try:
                ray.shutdown()  # whatever part of a local Ray did start
            finally:
                self._cleanup_files()
            where = "a local Ray" if local else f"the Ray cluster at {self.address}"
            raise ForgectlError(f"cannot start {where}: {errors.describe(exc)}") from exc
        finally:
            for sig, handler in saved.items():
                try:
                    signal.signal(sig, handler)
                except (ValueError, TypeError):  # not the main thread
                    pass
        self._ray = ray
        self.cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
        if self.cluster_cpus < 1:
            raise ForgectlError("the Ray cluster has no CPUs for workers (start a node with "
                                "`ray start --address ...`)")

    def _start_local(self, ray: Any, options: dict[str, Any]) -> None:
        # Ray's logs, sockets and spilled objects go to a folder of this run, removed at the
        # end. Its socket paths must fit in 107 bytes: under /tmp if $TMPDIR is deep.
        base = tempfile.gettempdir()
        if len(base) > MAX_TEMP_ROOT and os.path.isdir("/tmp"):
            base = "/tmp"
        self._temp_dir = tempfile.mkdtemp(prefix="forgectl-ray-", dir=base)
        # The workers' own temporary files (their fork servers' sockets) go there too, so
        # that none is left even by a worker killed mid-run.
        self.settings.environ["TMPDIR"] = self._temp_dir
        ray.init(address="local", num_cpus=self.workers or os.cpu_count() or 1,
                 _temp_dir=self._temp_dir, **options)

    def _start_pool(self, items: list[InputFile]) -> None:
        ray = self._ray
        # One CPU each: more would wait for a CPU that never frees up.
        size = min(self.workers or self.cluster_cpus, self.cluster_cpus)
        self.pool_size = max(1, min(size, len(items)))
        self._token = f"{__version__}:{secrets.token_hex(8)}"
        for stale in self.out_dir.glob(".forgectl-ray-*"):  # a killed driver's
            stale.unlink(missing_ok=True)
        self._marker = self.out_dir / f".forgectl-ray-{secrets.token_hex(6)}"
        from forgectl.outputs import write_bytes

        write_bytes(self._marker, self._token.encode("utf-8"))
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(
            ForgectlWorker)
        self._backend_ref = ray.put(self.backend)
        self._probe = str(items[0].path) if items else None
        for _ in range(self.pool_size):
            self._slots.append(self._new_slot())

    def _new_slot(self) -> _Slot:
        handle = self._actor_class.remote(self._backend_ref, self.settings)
        return _Slot(handle=handle,
                     ready_ref=handle.ready.remote(str(self._marker), self._token, self._probe))

    def close(self) -> None:
        """Kill the pool (the images in progress leave no files), disconnect, and stop the
        local Ray this run started (its temporary folder removed)."""
        ray = self._ray
        if ray is None:
            self._cleanup_files()
            return
        try:
            if self._slots:  # all images done: let the workers exit cleanly
                self._retire_pool()
            self._kill_pool()
        finally:
            self._ray = None
            try:
                ray.shutdown()
            finally:
                self._discard_dropped()
                self._cleanup_files()

    def _discard_dropped(self) -> None:
        """Remove the files of the images dropped by a stop once more, a moment after their
        actors died: an actor's worker process dies a few milliseconds after the actor (its
        fork server sees the actor gone, then the kernel kills the worker), and may finish
        writing an image in between."""
        if not self._dropped:
            return
        time.sleep(max(0.0, self._killed_at + DROP_GRACE_S - time.monotonic()))
        for item in self._dropped:
            discard_outputs(item.out_stem)
        self._dropped = []

    def _cleanup_files(self) -> None:
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
            self._marker = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def _retire_pool(self, timeout: float = 10.0) -> None:
        """Ask every actor to close its worker process and exit (running its clean-up)."""
        ray = self._ray
        try:
            ready = [slot for slot in self._slots if slot.ready]
            for slot in ready:
                slot.handle.shutdown.remote()
            refs = [slot.handle.__ray_terminate__.remote() for slot in ready]
            ray.wait(refs, num_returns=len(refs), timeout=timeout)
        except Exception:  # what is left is killed
            pass

    def _kill_pool(self) -> dict[int, dict[str, Any]]:
        """Kill every actor and settle its images in progress: those that had finished are
        returned (their files are complete), the others leave no files."""
        ray = self._ray
        for slot in self._slots:
            try:
                ray.kill(slot.handle, no_restart=True)
            except Exception:  # already gone
                pass
        self._slots = []
        finished: dict[int, dict[str, Any]] = {}
        refs = list(self._inflight)
        if refs:
            try:
                ray.wait(refs, num_returns=len(refs), timeout=10)
            except Exception:  # the cluster is going away: nothing more to learn
                pass
        for ref, (_, index) in self._inflight.items():
            try:
                kind, payload = ray.get(ref, timeout=0)
            except Exception:  # died with its actor (or still unknown): drop it
                kind, payload = "dropped", None
            if kind == "record":
                finished[index] = payload
            else:
                discard_outputs(self._items[index].out_stem)
                self._dropped.append(self._items[index])
        self._killed_at = time.monotonic()
        self._inflight.clear()
        return finished

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- the batch

    def records(self, items: list[InputFile]) -> Iterator[tuple[InputFile, dict[str, Any]]]:
        """``(item, record)`` for each of ``items`` in their order.

        Raises:
            StopBatch: a stop was requested: the images in progress were dropped; the records
                finished until then were yielded first (those beyond a gap out of order).
            OutputError, WeightsError, UsageError, ForgectlError: a batch-fatal error in a
                worker, or a worker that cannot work (does not see the files, another
                forgectl version) or a pool that keeps dying.
        """
        if not items:
            return
        self.start()
        self._items = items
        self._start_pool(items)
        window = max(MIN_WINDOW, WINDOW_PER_WORKER * self.pool_size)
        todo: collections.deque[int] = collections.deque(range(len(items)))
        attempts: collections.Counter[int] = collections.Counter()
        done: dict[int, dict[str, Any]] = {}
        next_out = 0
        name = self.backend.spec.name
        alive = time.monotonic()
        try:
            while next_out < len(items):
                if self.stop_signal is not None:
                    done.update(self._kill_pool())
                    yield from ((items[i], done.pop(i)) for i in sorted(done))
                    raise StopBatch(self.stop_signal)
                self._dispatch(todo, next_out + window)
                for kind, ref in self._wait():
                    if kind == "task":
                        slot, index = self._inflight.pop(ref)
                        slot.busy -= 1
                        record = self._collect(ref, slot, index, attempts, todo, name)
                        if record is not None:
                            done[index] = record
                    else:
                        self._on_ready(ref)
                if any(s.ready for s in self._slots):
                    alive = time.monotonic()
                elif time.monotonic() - alive > STARTUP_TIMEOUT_S:
                    raise ForgectlError(f"no Ray worker became ready in {STARTUP_TIMEOUT_S:g} s "
                                        "(does the cluster have free CPUs?)")
                while next_out in done:
                    yield items[next_out], done.pop(next_out)
                    next_out += 1
        except BaseException:
            # A fatal error, a second Ctrl-C, the consumer gone: the finished records that
            # wait for an earlier image are lost from results.jsonl, not their files
            # (--resume keeps them); the images in progress leave nothing.
            self._kill_pool()
            raise

    def _wait(self, timeout: float = 0.1) -> list[tuple[str, Any]]:
        """What finished: ``("task", ref)`` for images, ``("ready", ref)`` for new actors;
        waits up to ``timeout`` for the first."""
        ray = self._ray
        waiting = list(self._inflight) + [s.ready_ref for s in self._slots if not s.ready]
        if not waiting:
            time.sleep(timeout)
            return []
        first, rest = ray.wait(waiting, num_returns=1, timeout=timeout)
        if first and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            first = first + more
        return [("task" if ref in self._inflight else "ready", ref) for ref in first]

    def _dispatch(self, todo: collections.deque[int], limit: int) -> None:
        for slot in self._slots:
            while slot.ready and slot.busy < DEPTH and todo and todo[0] < limit:
                index = todo.popleft()
                item = self._items[index]
                ref = slot.handle.run.remote(str(item.path), str(item.out_stem), item.kinds)
                self._inflight[ref] = (slot, index)
                slot.busy += 1

    def _on_ready(self, ref: Any) -> None:
        ray = self._ray
        slot = next((s for s in self._slots if s.ready_ref == ref), None)
        if slot is None:  # replaced meanwhile
            return
        try:
            info = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise ForgectlError(f"a Ray worker failed to start: {errors.describe(exc)}") from exc
        except ray.exceptions.RayError:
            self._replace(slot)  # killed while starting
            return
        if info.get("problem"):
            raise ForgectlError(
                f"the Ray worker on {info.get('node')} {info['problem']}: every node needs the "
                "inputs and --out at the same paths (a shared file system) and the same "
                "forgectl install (docs/SCALE.md)")
        slot.ready, slot.info = True, info

    def _collect(self, ref: Any, slot: _Slot, index: int, attempts: collections.Counter[int],
                 todo: collections.deque[int], name: str) -> dict[str, Any] | None:
        """The record of a finished task, or None when its worker died (the image is queued
        again, first in line, unless it has had MAX_ATTEMPTS workers die on it)."""
        ray = self._ray
        item = self._items[index]
        try:
            kind, payload = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # a bug in the actor's own code
            raise ForgectlError(f"internal error in a Ray worker: {errors.describe(exc)}") \
                from exc
        except ray.exceptions.RayError:
            # The actor died (killed, out of memory, node lost): whatever it wrote for this
            # image goes; the image goes to another worker.
            discard_outputs(item.out_stem)
            if slot in self._slots:
                self._replace(slot)
            attempts[index] += 1
            if attempts[index] >= MAX_ATTEMPTS:
                return error_record(item.path, f"the Ray worker died {attempts[index]} times "
                                    "while analysing this file", name, "crash")
            self.retried += 1
            todo.appendleft(index)
            return None
        if kind == "fatal":
            raise _fatal(*payload)
        return payload

    def _replace(self, slot: _Slot) -> None:
        """Drop a dead actor and start another (Ray places it on a node with a free CPU)."""
        self.deaths += 1
        try:
            self._ray.kill(slot.handle, no_restart=True)
        except Exception:  # already gone
            pass
        self._slots.remove(slot)
        if self.deaths > 3 * self.pool_size + MAX_ATTEMPTS:
            raise ForgectlError(f"Ray workers keep dying ({self.deaths} so far); see Ray's "
                                "logs (docs/SCALE.md)")
        self._slots.append(self._new_slot())


def _worker_environ() -> dict[str, str]:
    """The driver's forgectl settings for the workers; one thread per worker unless
    FORGECTL_THREADS says otherwise (the pool has one worker per CPU)."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith(_PASSED_ENV_PREFIXES) or k in _PASSED_ENV}
    env.setdefault("FORGECTL_THREADS", "1")
    return env
