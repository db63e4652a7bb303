"""`forgectl train`: train a learned method on synthetic forgeries made from a photo corpus.

Only methods whose backend module exposes ``training_recipe()`` can be trained; any other name
gets a one-line error listing the trainable ones. How it works, files and model card fields:
``docs/TRAINING.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from forgectl.commands._options import MethodOpt


def train(
    method: MethodOpt,
    images: Annotated[
        list[Path],
        typer.Option(
            "--images",
            "-i",
            help="Folder of pristine photos (repeatable), e.g. ../shared/corpus.",
            show_default=False,
        ),
    ],
    config: Annotated[
        str, typer.Option("--config", "-c", help="Named config of the method: tiny or paper.")
    ] = "tiny",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Folder of the final weights and model card "
            "(default: the shipped weights folder).",
            show_default=False,
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Override the config's step count.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Override the config's batch size.")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", min=0.0, help="Override the peak learning rate.")
    ] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Torch compute threads.")] = 2,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            help="Data worker processes that "
            "prefetch samples (0 = make them in this process;"
            " 1 hides data time on 2 cores, docs/TRAINING.md).",
        ),
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seeds model init and samples.")] = 0,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --run-dir from its last checkpoint."),
    ] = False,
    dev: Annotated[
        Path | None,
        typer.Option(
            "--dev",
            help="Real dev dataset evaluated at each validation (reported "
            "only, never used to pick weights).",
            show_default=False,
        ),
    ] = None,
    dev_limit: Annotated[
        int | None,
        typer.Option("--dev-limit", min=1, help="Dev items per evaluation (stratified sample)."),
    ] = None,
    val_every: Annotated[
        int,
        typer.Option("--val-every", min=0, help="Validate every N steps (0 = at the end only)."),
    ] = 200,
    val_samples: Annotated[
        int,
        typer.Option("--val-samples", min=0, help="Size of the fixed synthetic validation set."),
    ] = 48,
    ckpt_every: Annotated[
        int,
        typer.Option("--ckpt-every", min=0, help="Checkpoint every N steps (0 = at the end only)."),
    ] = 100,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Checkpoints and log (default: runs/METHOD-CONFIG).",
            show_default=False,
        ),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option(
            "--kinds",
            help="Comma-separated sample kinds (splice, copymove, removal, "
            "authentic) (default: the config's mix).",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", help="Shipped weights: float32 or float16.")
    ] = "float32",
    best_metric: Annotated[
        str,
        typer.Option(
            "--best-metric",
            help="Synthetic validation metric "
            "that picks the shipped weights: val_f1, val_iou, "
            "val_pixel_auc or val_loss.",
        ),
    ] = "val_f1",
    ship: Annotated[
        str, typer.Option("--ship", help="Ship the best or the last weights.")
    ] = "best",
) -> None:
    """Train METHOD on synthetic forgeries; write weights/METHOD-CONFIG.safetensors + card."""
    from forgectl.backends.base import WEIGHTS_DIR
    from forgectl.errors import InputError
    from forgectl.training.trainer import RunOptions, load_recipe
    from forgectl.training.trainer import train as run_training

    load_recipe(method)  # a clear error for untrainable methods before anything else
    for folder in images:
        if not folder.is_dir():
            raise InputError(f"--images: not a folder: {folder}")
    if dev is not None and not dev.exists():
        raise InputError(f"--dev: not found: {dev}")
    options = RunOptions(
        run_dir=run_dir or Path("runs") / f"{method}-{config}",
        out_dir=out or WEIGHTS_DIR,
        seed=seed,
        threads=threads,
        workers=workers,
        resume=resume,
        val_every=val_every,
        ckpt_every=ckpt_every,
        val_samples=val_samples,
        dev=dev,
        dev_limit=dev_limit,
        dtype=dtype,
        best_metric=best_metric,
        ship=ship,
        progress=True,
    )
    overrides = {"steps": steps, "batch_size": batch_size, "lr": lr}
    kind_list = [k for k in kinds.split(",") if k.strip()] if kinds else None
    card = run_training(method, config, images, options, overrides, kind_list)
    best = card["metrics"]["best"]
    final = card["metrics"]["final"] or {}
    parts = [
        f"{card['weights']['file']} ({card['training']['steps']} steps, "
        f"{card['training']['wall_s']:.0f} s)"
    ]
    if final.get("val_f1") is not None:
        parts.append(f"final val F1 {final['val_f1']:.3f}")
    if best:
        parts.append(f"best {best['metric']} {best['value']:.3f} at step {best['step']}")
    if final.get("dev_f1") is not None:
        parts.append(f"dev F1 {final['dev_f1']:.3f}")
    print("; ".join(parts), file=sys.stdout)
