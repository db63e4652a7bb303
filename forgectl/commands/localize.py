"""`forgectl localize`: mask, heatmap, overlay and JSON for each input image."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from forgectl.commands._options import (
    MaxPixelsOpt,
    MethodOpt,
    OutDirOpt,
    RecursiveOpt,
    RuntimeOpt,
    ThresholdOpt,
    WeightsOpt,
)
from forgectl.commands._records import emit_record
from forgectl.intake import DEFAULT_MAX_PIXELS

EXIT_FAILED = 1
EXIT_GATE = 3
#: Backend constructor arguments that have their own command-line options.
RESERVED_PARAMS = ("weights", "threshold", "runtime")


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
        list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)
    ],
    method: MethodOpt = "ela",
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
        typer.Option("--param", "-p", help="Method option KEY=VALUE (repeatable)."),
    ] = None,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
    runtime: RuntimeOpt = "torch",
) -> None:
    """Localize manipulations: write <stem>.mask.png, .heatmap.png, .overlay.png and .json.

    A batch goes on past bad files, reports each on stderr, lists every image in
    results.jsonl, and exits 1 if any failed (3 if --fail-on was hit).
    """
    from forgectl import pipeline, registry
    from forgectl.errors import ForgectlError
    from forgectl.outputs import atomic_write, write_result_files

    files, problems = pipeline.collect_inputs(paths, recursive=recursive)
    options = parse_params(param or [])
    backend = registry.load(method, weights=weights, threshold=threshold, runtime=runtime,
                            **options)
    plan = pipeline.plan_outputs(files, out)
    pipeline.check_not_overwriting_inputs(plan)
    for problem in problems:
        typer.echo(f"forgectl: {problem}", err=True)

    failed = len(problems)
    flagged = done = 0
    batch = len(plan) > 1 or any(Path(p).is_dir() for p in paths)
    out.mkdir(parents=True, exist_ok=True)

    progress = None
    if sys.stderr.isatty() and len(plan) > 1:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task(f"{method}", total=len(plan))

    with atomic_write(out / "results.jsonl", "w") if batch else _nowhere() as log:
        try:
            for item in plan:
                try:
                    image, result, timings = pipeline.analyze_file(backend, item.path, max_pixels)
                    record = pipeline.build_record(image, result, backend, timings)
                    record["outputs"] = write_result_files(
                        item.out_stem, image.rgb, result.heatmap, result.mask, record
                    )
                    done += 1
                    if result.applicable and fail_on is not None and result.score >= fail_on:
                        flagged += 1
                    if not result.applicable:
                        note = f"forgectl: {item.path}: not applicable: {result.note}"
                        typer.echo(note, err=True)
                except ForgectlError as exc:
                    failed += 1
                    record = pipeline.error_record(item.path, str(exc), method)
                    typer.echo(f"forgectl: {item.path}: error: {exc}", err=True)
                emit_record(record, log, json_stdout)
                if progress is not None:
                    progress.advance(task)
        finally:
            if progress is not None:
                progress.stop()

    engine = "" if runtime == "torch" else f" ({runtime})"
    summary = f"forgectl: {done} image(s) analysed with {method}{engine}, {failed} failed"
    if fail_on is not None:
        summary += f", {flagged} at or above --fail-on {fail_on}"
    typer.echo(f"{summary}; outputs in {out}", err=True)
    if flagged:
        raise typer.Exit(EXIT_GATE)
    if failed or not plan:
        raise typer.Exit(EXIT_FAILED)


class _nowhere:
    """A context manager yielding None: no results.jsonl for a single image."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
