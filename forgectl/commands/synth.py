"""`forgectl synth`: write a synthetic forgery dataset that `forgectl benchmark` reads."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from forgectl.commands._options import OutDirOpt


def _parse_size(text: str) -> tuple[int, int]:
    from forgectl.errors import UsageError

    parts = [p.strip() for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"--size expects MIN,MAX in pixels, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not 32 <= values[0] <= values[1] <= 8192:
        raise UsageError(f"--size expects MIN,MAX with 32 <= MIN <= MAX <= 8192, got {text!r}")
    return values[0], values[1]


def synth(
    images: Annotated[
        Path,
        typer.Option("--images", "-i", help="Folder of pristine source photos (recursive)."),
    ],
    out: OutDirOpt,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of samples to write.")] = 200,
    kinds: Annotated[
        str,
        typer.Option(
            "--kinds", metavar="KINDS",
            help="Comma-separated kinds: splice, copymove, removal, authentic.",
        ),
    ] = "splice,copymove,removal,authentic",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Dataset seed.")] = 0,
    split: Annotated[
        str,
        typer.Option(
            "--split", metavar="train|val|test|all",
            help="Source photos to use, split by file-name hash: train, val, test or all.",
        ),
    ] = "all",
    size: Annotated[
        str | None,
        typer.Option("--size", metavar="MIN,MAX",
                     help="Working long side MIN,MAX in pixels (default 256,512)."),
    ] = None,
    start: Annotated[int, typer.Option("--start", min=0, help="Index of the first sample.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty output folder.")
    ] = False,
) -> None:
    """Make synthetic splices, copy-moves, removals and authentic images with real histories.

    Writes images/, masks/, authentic/, labels.jsonl, synth.json and MANIFEST.tsv under --out.
    The same seed and sources give byte-identical files.
    """
    from forgectl.errors import UsageError
    from forgectl.synth.engine import (
        SynthConfig,
        SynthesisEngine,
        list_images,
        split_sources,
        write_dataset,
    )

    if not images.exists():
        raise UsageError(f"--images: no such folder: {images}")
    config = SynthConfig().with_kinds([k for k in kinds.split(",") if k.strip()])
    if size is not None:
        config = SynthConfig.from_dict({**config.to_dict(), "size_range": _parse_size(size)})
    sources = split_sources(list_images(images), split)
    if not sources:
        raise UsageError(f"--images: no image files for split {split!r} under {images}")
    engine = SynthesisEngine(sources, seed=seed, config=config, root=images)

    counts: dict[str, int] = {}
    progress = task = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("synth", total=n)

    def tick(index: int, sample: object) -> None:
        kind = getattr(sample, "kind", "?")
        counts[kind] = counts.get(kind, 0) + 1
        if progress is not None:
            progress.advance(task)

    began = time.perf_counter()
    try:
        manifest = write_dataset(engine, out, n, start=start, progress=tick, overwrite=force)
    finally:
        if progress is not None:
            progress.stop()
    seconds = time.perf_counter() - began
    made = ", ".join(f"{counts[k]} {k}" for k in sorted(counts))
    typer.echo(
        f"forgectl: wrote {n} samples ({made}) from {len(sources)} sources to {manifest.parent} "
        f"in {seconds:.1f} s ({n / max(seconds, 1e-9):.2f} samples/s)",
        err=True,
    )
    if engine.bad_sources:
        typer.echo(f"forgectl: skipped {len(engine.bad_sources)} unreadable source(s)", err=True)
