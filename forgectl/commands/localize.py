"""`forgectl localize`: mask, heatmap, overlay and JSON for each input image."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from forgectl.commands._options import (
    MAX_PIXELS_DEFAULT,
    RESTORE_DEFAULT,
    MaxPixelsOpt,
    MethodOpt,
    OutDirOpt,
    RecursiveOpt,
    RestoreOpt,
    RuntimeOpt,
    ThresholdOpt,
    WeightsOpt,
)
from forgectl.commands._records import emit_record

EXIT_FAILED = 1
EXIT_GATE = 3
#: An image hit a bug in a method (the batch went on; sysexits EX_SOFTWARE).
EXIT_INTERNAL = 70
#: Backend constructor arguments that have their own command-line options.
RESERVED_PARAMS = ("weights", "threshold", "runtime")
#: Where the images run: this machine (one worker process) or a Ray cluster (docs/SCALE.md).
ENGINES = ("local", "ray")


def parse_params(items: list[str]) -> dict[str, object]:
    """``["quality=95", "mode=fast"]`` -> ``{"quality": 95, "mode": "fast"}`` (JSON scalars)."""
    from forgectl.errors import UsageError

    params: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE, got {item!r}")
        if key in RESERVED_PARAMS:
            raise UsageError(f"--param {key}=... is not a method option: use --{key}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def localize(
    paths: Annotated[
        list[str] | None,
        typer.Argument(metavar="PATH", help="Image files, folders or glob patterns; - reads one "
                       "image from standard input (kept as --out/stdin.<ext>).",
                       show_default=False),
    ] = None,
    method: MethodOpt = "auto",
    out: OutDirOpt = Path("forgectl-out"),
    weights: WeightsOpt = None,
    threshold: ThresholdOpt = None,
    recursive: RecursiveOpt = False,
    json_stdout: Annotated[
        bool, typer.Option("--json", help="Also print one JSON record per image to stdout.")
    ] = False,
    fail_on: Annotated[
        float | None,
        typer.Option(
            "--fail-on",
            min=0.0,
            max=1.0,
            help="CI gate: exit 3 when any image scores at or above this.",
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE",
                     help="Method option KEY=VALUE (repeatable)."),
    ] = None,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    runtime: RuntimeOpt = "auto",
    restore: RestoreOpt = RESTORE_DEFAULT,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Skip images whose outputs in --out are complete and were "
                     "made with the same method, weights, threshold and options (a batch that "
                     "was killed or interrupted goes on where it stopped)."),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0.0, show_default=False,
                     help="Seconds one image may take (decode, analysis, outputs); it then "
                     "fails and the batch goes on. 0 = no limit. Default 600."),
    ] = None,
    max_memory: Annotated[
        int | None,
        typer.Option("--max-memory", min=0, metavar="MB", show_default=False,
                     help="Memory (resident MB, the loaded method included) the analysis may "
                     "use; an image needing more fails and the batch goes on. 0 = no bound. "
                     "Default: 3/4 of physical memory."),
    ] = None,
    isolate: Annotated[
        bool,
        typer.Option("--isolate/--no-isolate",
                     help="Analyse images in a worker process, so a timeout, the memory bound "
                     "or a crashing decoder fails one image, not the batch. --no-isolate runs "
                     "in this process (no --timeout, no --max-memory)."),
    ] = True,
    engine: Annotated[
        str,
        typer.Option("--engine", metavar="local|ray",
                     help="local: images one after another in one worker process "
                     "on this machine; ray: a pool of workers, one per CPU of a Ray cluster "
                     "(needs the ray extra; docs/SCALE.md). Same outputs."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", metavar="HOST:PORT", show_default=False,
                     help="--engine ray: the cluster to use (host:port that `ray start --head` "
                     "printed); default: a local Ray started for this run."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-j", min=1, show_default=False,
                     help="Images analysed at once, each in its own worker process sharing "
                     "the CPUs (default: one per CPU; same outputs as -j 1). --engine ray: "
                     "its number of workers (default: one per CPU of the cluster)."),
    ] = None,
    outputs: Annotated[
        str,
        typer.Option("--outputs", metavar="LIST",
                     help="The per-image PNGs to write, comma-separated, from mask, heatmap, "
                     "overlay, reliability (auto's), or all; the JSON record is always written. "
                     "E.g. --outputs mask for large batches: the overlay is most of the time "
                     "and disk of writing (15 MB for a 12 MP photo)."),
    ] = "all",
    files_from: Annotated[
        str | None,
        typer.Option("--files-from", metavar="FILE", show_default=False,
                     help="Also analyse the paths listed in FILE, one per line or "
                     "NUL-separated (`find -print0`); - reads them from standard input. "
                     "Always a batch: results.jsonl is written."),
    ] = None,
) -> None:
    """Localize manipulations: write <stem>.mask.png, .heatmap.png, .overlay.png and .json.

    A batch goes on past bad files, reports each on stderr, lists every image in
    results.jsonl (written record by record), and exits 1 if any failed (3 if --fail-on was
    hit, 70 on an internal error, 74 if outputs cannot be written). Ctrl-C or SIGTERM drops the
    image in progress, keeps every finished one and exits 130 or 143: rerun with --resume.
    """
    from forgectl import pipeline, registry
    from forgectl.errors import OutputError, UsageError
    from forgectl.outputs import (
        ResultsLog,
        discard_outputs,
        prepare_folder,
        remove_stale_temporaries,
        remove_unused_folder,
    )
    from forgectl.restore import RestoreStage, check_restore_mode

    check_restore_mode(restore)
    kinds = parse_outputs(outputs)
    if not isolate and (timeout is not None or max_memory is not None):
        raise UsageError("--timeout and --max-memory need the worker process: drop --no-isolate")
    if not isolate and engine == "local" and (workers or 1) > 1:
        raise UsageError("-j N runs worker processes: drop --no-isolate")
    _check_engine(engine, address, workers)
    paths = list(paths or [])
    if not paths and files_from is None:
        raise UsageError("give image files, folders or patterns, or --files-from FILE")
    if "-" in paths and (paths.count("-") > 1 or files_from == "-"):
        raise UsageError("standard input holds one thing: one image (-) or the list "
                         "(--files-from -)")
    options = parse_params(param or [])
    backend = registry.load(method, weights=weights, threshold=threshold, runtime=runtime,
                            **options)
    backend = RestoreStage(restore, runtime=runtime).wrap(backend)
    listed = pipeline.read_path_list(files_from) if files_from is not None else []
    if "-" in paths:  # after every check that could refuse the run: nothing is kept for nothing
        paths[paths.index("-")] = str(pipeline.save_standard_input(out))
    paths += listed
    files, problems = pipeline.collect_inputs(paths, recursive=recursive)
    plan = pipeline.plan_outputs(files, out, kinds)
    pipeline.check_not_overwriting_inputs(plan)
    for problem in problems:
        typer.echo(f"forgectl: {problem}", err=True)
    made = prepare_folder(out)

    batch = len(plan) > 1 or files_from is not None or any(Path(p).is_dir() for p in paths)
    log_path = out / "results.jsonl"
    remove_stale_temporaries(
        [o for item in plan for o in pipeline.output_paths(item.out_stem).values()]
        + ([log_path] if batch else []))
    finished: dict[int, dict] = {}
    if resume:
        settings = pipeline.run_settings(backend)
        for i, item in enumerate(plan):
            record = pipeline.completed_record(item, settings)
            if record is not None:
                finished[i] = pipeline.batch_record(record, item)

    counts = _Counts(failed=len(problems))
    for record in finished.values():
        counts.add(record, fail_on)
        if json_stdout:
            typer.echo(_line(record))
    todo = [item for i, item in enumerate(plan) if i not in finished]

    runner: Any
    if engine == "ray":
        from forgectl.engine_ray import RayRunner

        runner = RayRunner(backend, out, max_pixels, address=address, workers=workers,
                           isolate=isolate,
                           timeout=pipeline.DEFAULT_TIMEOUT_S if timeout is None else timeout,
                           max_memory_mb=max_memory)
    elif isolate:
        n = pipeline.local_workers(workers, len(todo))
        memory = pipeline.default_max_memory_mb() // n if max_memory is None else max_memory
        seconds = pipeline.DEFAULT_TIMEOUT_S if timeout is None else timeout
        if n > 1:
            runner = pipeline.ParallelRunner(backend, max_pixels, n, timeout=seconds,
                                             max_memory_mb=memory,
                                             threads=max(1, _thread_budget() // n))
        else:
            runner = pipeline.IsolatedRunner(backend, max_pixels, timeout=seconds,
                                             max_memory_mb=memory)
    else:
        runner = pipeline.InProcessRunner(backend, max_pixels)

    stopped: int | None = None
    refused = False
    progress = None
    log = ResultsLog(log_path, finished.values()) if batch else None
    try:
        with runner, _stop_on_signals(runner):
            if todo:
                runner.start()  # before the progress bar's thread exists
            if sys.stderr.isatty() and len(todo) > 1:
                from rich.progress import Progress

                progress = Progress(transient=True)
                progress.start()
                task = progress.add_task(f"{method}", total=len(todo))
            # An image whose files are written but whose record is not logged yet: a second
            # signal landing then must not leave files that results.jsonl does not list.
            # The signal can also land after the record's line was written but before this
            # loop knows it: the log's size says whether it landed (then the files stay).
            unlogged, log_size = None, 0
            try:
                for item, record in _records(runner, todo):
                    unlogged, log_size = item, (log.size() if log is not None else 0)
                    _report(pipeline.batch_record(record, item), item, counts, fail_on, log,
                            json_stdout)
                    unlogged = None
                    if progress is not None:
                        progress.advance(task)
            except pipeline.StopBatch as stop:
                stopped = stop.signum
            except BaseException:
                landed = log is not None and log.size() > log_size
                if unlogged is not None and not landed:
                    discard_outputs(unlogged.out_stem)
                raise
    except OutputError as exc:
        raise OutputError(f"{exc} ({counts.done} of {len(plan)} image(s) done; make room or "
                          "fix the folder, then rerun with --resume)") from exc
    except pipeline.FATAL_ERRORS:
        refused = not finished and counts.done == 0 and counts.failed == len(problems)
        raise
    finally:
        if progress is not None:
            progress.stop()
        if log is not None:
            log.close()
        if refused:  # the method could not run at all: nothing is left for nothing
            remove_unused_folder(out, made, log_path)

    where = f" ({backend.runtime_label})" if backend.runtime_label else ""
    if engine == "ray" and getattr(runner, "pool_size", 0):
        where += f" on Ray ({runner.pool_size} worker(s)"
        where += f", {runner.retried} image(s) retried)" if runner.retried else ")"
    elif getattr(runner, "pool_size", 1) > 1:
        where += f" in {runner.pool_size} worker processes"
    summary = f"forgectl: {counts.done} image(s) analysed with {method}{where}"
    if finished:
        summary += f" ({len(finished)} finished earlier, kept)"
    summary += f", {counts.failed} failed"
    summary += _verdicts(counts, len(plan))
    if restore != "off":
        summary += f", {counts.restored} run on restored pixels (--restore {restore})"
    if fail_on is not None:
        summary += f", {counts.flagged} at or above --fail-on {fail_on}"
    typer.echo(f"{summary}; outputs in {out}", err=True)
    if stopped is not None:
        import signal

        left = len(plan) - counts.done - counts.failed + len(problems)
        dropped = ("the images in progress were dropped" if engine == "ray"
                   else "the image in progress was dropped")
        typer.echo(f"forgectl: interrupted by {signal.Signals(stopped).name}: {dropped}, "
                   f"{left} not analysed; rerun with --resume to finish", err=True)
        raise typer.Exit(128 + stopped)
    if counts.internal:
        raise typer.Exit(EXIT_INTERNAL)
    if counts.flagged:
        raise typer.Exit(EXIT_GATE)
    if counts.failed or not plan:
        raise typer.Exit(EXIT_FAILED)


def parse_outputs(text: str) -> tuple[str, ...]:
    """``--outputs``: ``"mask, overlay"`` -> ``("mask", "overlay")`` in the canonical order;
    ``all`` -> every PNG; ``json`` alone -> none (the JSON is always written).

    Raises:
        UsageError: a name that is not an output.
    """
    from forgectl.errors import UsageError
    from forgectl.outputs import IMAGE_OUTPUTS

    names = {n.strip() for n in text.split(",") if n.strip()}
    if "all" in names:
        names = (names - {"all"}) | set(IMAGE_OUTPUTS)
    unknown = sorted(names - set(IMAGE_OUTPUTS) - {"json"})
    if unknown or not names:
        raise UsageError(f"--outputs: {', '.join(unknown) or 'nothing'} is not an output "
                         f"(choose from {', '.join(IMAGE_OUTPUTS)}, json, all)")
    return tuple(k for k in IMAGE_OUTPUTS if k in names)


def _verdicts(counts: _Counts, planned: int) -> str:
    """What the summary line says of the scores: a single image's score and flagged share (the
    answer to "is my photo edited?" without opening its JSON), else how many scored 0.5 or
    more (``auto``'s decision threshold, and ``--fail-on``'s usual value)."""
    if planned == 1 and counts.done == 1 and counts.last is not None:
        record = counts.last
        if not record.get("applicable", True):
            return ", not applicable to this image"
        return (f", score {record.get('score', 0.0):.2f}, "
                f"{100 * record.get('tampered_fraction', 0.0):.1f}% of pixels flagged")
    return f", {counts.high} scored 0.5 or more" if counts.done else ""


def _check_engine(engine: str, address: str | None, workers: int | None) -> None:
    """Usage errors of --engine, --address and --workers (before any work)."""
    from forgectl.errors import UsageError

    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "ray":
        if address is not None:
            raise UsageError("--address needs --engine ray")
        return
    from forgectl.engine_ray import ray_available

    if not ray_available():
        raise UsageError("--engine ray needs Ray: pip install 'forgectl[ray]'")


def _thread_budget() -> int:
    """Compute threads all local workers share: ``FORGECTL_THREADS`` when set, else the
    CPUs."""
    import os

    from forgectl.backends.base import compute_threads

    return compute_threads() if os.environ.get("FORGECTL_THREADS") else (os.cpu_count() or 1)


def _records(runner: Any, todo: list) -> Iterator[tuple[Any, dict]]:
    """``(item, record)`` for each image to analyse, in input order (the Ray engine runs them
    in parallel and buffers early ones; the local runners one after another)."""
    if hasattr(runner, "records"):
        yield from runner.records(todo)
        return
    for item in todo:
        yield item, runner.run(item)


def _report(record: dict, item: Any, counts: _Counts, fail_on: float | None, log: Any,
            json_stdout: bool) -> None:
    """Count an image's record, say on stderr what went wrong with it, log and print it."""
    counts.add(record, fail_on)
    if "error" in record:
        typer.echo(f"forgectl: {item.path}: error: {record['error']}", err=True)
    elif not record.get("applicable", True):
        typer.echo(f"forgectl: {item.path}: not applicable: {record['note']}", err=True)
    emit_record(record, log, json_stdout)


def _line(record: dict) -> str:
    from forgectl.outputs import to_json

    return to_json(record)


class _Counts:
    """Tally of a batch: analysed, failed, internal errors, at or above ``--fail-on``."""

    def __init__(self, failed: int = 0) -> None:
        self.done = self.flagged = self.internal = self.restored = self.high = 0
        self.failed = failed
        self.last: dict | None = None

    def add(self, record: dict, fail_on: float | None) -> None:
        if "error" in record:
            self.failed += 1
            self.internal += record.get("error_kind") == "internal"
            return
        self.done += 1
        self.last = record
        self.restored += bool((record.get("restoration") or {}).get("method_saw_restored"))
        self.high += bool(record.get("applicable") and record.get("score", 0.0) >= 0.5)
        if (record.get("applicable") and fail_on is not None
                and record.get("score", 0.0) >= fail_on):
            self.flagged += 1


@contextmanager
def _stop_on_signals(runner: Any) -> Iterator[None]:
    """SIGINT / SIGTERM ask ``runner`` to stop (the image in progress is dropped by a worker,
    finished in process); a second one interrupts at once (KeyboardInterrupt / Terminated)."""
    import signal

    from forgectl.errors import Terminated

    def handle(signum: int, frame: Any) -> None:
        if runner.stop_signal is not None:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        runner.request_stop(signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handle)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
