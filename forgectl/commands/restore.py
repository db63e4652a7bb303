"""`forgectl restore`: undo a global brightness / contrast disturbance (ReConWave-Net's module).

Writes ``<stem>.restored.png`` (lossless) and ``<stem>.restore.json`` for each input; the input
files are only read. A batch goes on past bad files, lists every image in ``results.jsonl`` and
exits 1 if any failed. ``--runtime auto`` (default) runs the module's ONNX twins when they are
shipped beside the weights (no torch), else PyTorch.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from forgectl.commands._options import (
    MAX_PIXELS_DEFAULT,
    RESTORE_WEIGHTS_DEFAULT,
    MaxPixelsOpt,
    OutDirOpt,
    RecursiveOpt,
    RuntimeOpt,
)
from forgectl.commands._records import emit_record

EXIT_FAILED = 1
MODES = ("learned", "classical")


def restore(
    paths: Annotated[
        list[str], typer.Argument(metavar="PATH", help="Image files, folders or glob patterns.",
                                  show_default=False)
    ],
    out: OutDirOpt = Path("forgectl-restored"),
    mode: Annotated[
        str,
        typer.Option(
            "--mode", metavar="learned|classical",
            help="learned (classifier + restorer, restores only when it sees a disturbance) or "
            "classical (inverse of a blind global linear fit; changes every image).",
        ),
    ] = "learned",
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights", metavar="FILE",
            help=f"Restoration weights (default: weights/{RESTORE_WEIGHTS_DEFAULT}).",
        ),
    ] = None,
    min_confidence: Annotated[
        float,
        typer.Option(
            "--min-confidence",
            min=0.0,
            max=1.0,
            help="Restore only when the classifier's confidence in a disturbance reaches this.",
        ),
    ] = 0.5,
    runtime: RuntimeOpt = "auto",
    recursive: RecursiveOpt = False,
    json_stdout: Annotated[
        bool, typer.Option("--json", help="Also print one JSON record per image to stdout.")
    ] = False,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
) -> None:
    """Restore brightness/contrast: write <stem>.restored.png and <stem>.restore.json."""
    from forgectl import pipeline
    from forgectl.backends.restorer import Restorer
    from forgectl.errors import ForgectlError, UsageError
    from forgectl.outputs import ResultsLog
    from forgectl.restore import RESTORE_SUFFIXES, write_restoration

    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "classical" and (weights is not None or runtime != "auto"):
        raise UsageError("--weights and --runtime apply to --mode learned only")
    files, problems = pipeline.collect_inputs(paths, recursive=recursive)
    restorer = (Restorer(weights, min_confidence=min_confidence, runtime=runtime)
                if mode == "learned" else None)
    plan = pipeline.plan_outputs(files, out)
    pipeline.check_not_overwriting_inputs(plan, RESTORE_SUFFIXES)
    for problem in problems:
        typer.echo(f"forgectl: {problem}", err=True)

    engine = f"{mode}, {restorer.runtime}" if restorer is not None else mode
    failed, done, restored = len(problems), 0, 0
    batch = len(plan) > 1 or any(Path(p).is_dir() for p in paths)
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        log = stack.enter_context(ResultsLog(out / "results.jsonl")) if batch else None
        for item in plan:
            try:
                record = write_restoration(
                    item.path, out, restorer, out_stem=item.out_stem, max_pixels=max_pixels
                )
                done += 1
                restored += bool(record["restoration"].get("restored"))
            except ForgectlError as exc:
                failed += 1
                record = {"input": {"path": str(item.path)}, "error": str(exc)}
                typer.echo(f"forgectl: {item.path}: error: {exc}", err=True)
            emit_record(record, log, json_stdout)

    typer.echo(
        f"forgectl: {done} image(s) checked ({engine}), {restored} restored, {failed} failed; "
        f"outputs in {out}",
        err=True,
    )
    if failed or not plan:
        raise typer.Exit(EXIT_FAILED)
