"""`forgectl train`: train a learned method on synthetic forgeries made from a photo corpus.

Registry entries with a recipe can be trained (also ``untrained`` ones and components); any
other name gets a one-line error listing the trainable ones. Everything goes into a run folder
(``runs/<method>-<config>-<time>/`` or ``--out``): checkpoints, log, and the final weights +
model card. Only ``--ship`` copies them into the shipped weights folder, and never over an
existing file unless ``--force``. How it works, files and card fields: ``docs/TRAINING.md``.
"""

from __future__ import annotations

import sys
import time
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
            metavar="DIR",
            help="Folder of pristine photos (repeatable), e.g. ../shared/corpus.",
            show_default=False,
        ),
    ],
    config: Annotated[
        str, typer.Option("--config", "-c", metavar="tiny|paper",
                          help="Named config of the method: tiny or paper.")
    ] = "tiny",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Run folder: checkpoints, log, final weights + card "
            "(default: runs/METHOD-CONFIG-TIME; with --resume: the newest such folder).",
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
        typer.Option("--resume", help="Continue the run in --out from its last checkpoint."),
    ] = False,
    dev: Annotated[
        Path | None,
        typer.Option(
            "--dev",
            help="Real dev dataset evaluated at each validation (reported "
            "only, never used to pick weights). For auto: never fitted on; its half A "
            "chooses the two thresholds, half B is reported.",
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
    kinds: Annotated[
        str | None,
        typer.Option(
            "--kinds",
            metavar="KINDS",
            help="Comma-separated sample kinds (splice, copymove, removal, "
            "authentic) (default: the config's mix).",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", metavar="float32|float16",
                          help="Shipped weights: float32 or float16.")
    ] = "float32",
    best_metric: Annotated[
        str,
        typer.Option(
            "--best-metric", metavar="METRIC",
            help="Synthetic validation metric "
            "that picks the shipped weights: val_f1, val_iou, "
            "val_pixel_auc or val_loss.",
        ),
    ] = "val_f1",
    pick: Annotated[
        str, typer.Option("--pick", metavar="best|last",
                          help="Final weights: the best (by --best-metric) or the last.")
    ] = "best",
    ship: Annotated[
        bool,
        typer.Option("--ship", help="Copy the final weights + card into the shipped weights "
                     "folder (FORGECTL_WEIGHTS_DIR or weights/)."),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Let --ship replace an existing shipped file.")
    ] = False,
    init: Annotated[
        str | None,
        typer.Option(
            "--init", metavar="FILE|shipped",
            help="Warm start: a weights file (with its card) of the same method and network, "
            "or 'shipped' for the shipped one. With --resume: only when the run folder holds "
            "no checkpoint yet.",
            show_default=False,
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=JSON",
            help="Config value KEY=JSON (repeatable; dotted keys reach into the synthetic "
            "data, e.g. synth.kinds='{\"splice\": 1}' or synth.history.final_jpeg_prob=0.5).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train METHOD on synthetic forgeries into a run folder; --ship to weights/."""
    from forgectl import registry
    from forgectl.errors import InputError
    from forgectl.training.trainer import RunOptions
    from forgectl.training.trainer import train as run_training

    recipe = registry.load_recipe(method)  # a clear error for untrainable methods first
    for folder in images:
        if not folder.is_dir():
            raise InputError(f"--images: not a folder: {folder}")
    from forgectl.fusion.recipe import FusionRecipe

    if isinstance(recipe, FusionRecipe):
        # The fusion takes no gradient steps: an option that only a network trainer reads
        # would be ignored silently, so it is refused (its own settings go through --set).
        given = {"--steps": steps, "--batch-size": batch_size, "--lr": lr, "--init": init,
                 "--kinds": kinds, "--dev-limit": dev_limit, "--resume": resume or None,
                 "--dtype": None if dtype == "float32" else dtype,
                 "--best-metric": None if best_metric == "val_f1" else best_metric,
                 "--pick": None if pick == "best" else pick}
        stray = [name for name, value in given.items() if value is not None]
        if stray:
            from forgectl.errors import UsageError

            raise UsageError(f"train --method {method}: fits a fusion, no gradient steps; "
                             f"{', '.join(stray)} do not apply (its settings: --set KEY=JSON, "
                             "docs/methods/auto.md)")
        _fit_fusion(recipe, config, images, dev, out, ship, force,
                    _parse_settings(settings or []))
        return
    evaluator = None
    if dev is not None:
        if not dev.exists():
            raise InputError(f"--dev: not found: {dev}")
        from forgectl.evaluation.runner import dev_evaluator

        evaluator = dev_evaluator(method, dev, dev_limit,
                                  recipe.dev_backend_options(recipe.configs.get(config, {})))
    run_dir = _run_dir(method, config, out, resume)
    if ship:
        _check_ship_target(method, config, force)
    options = RunOptions(
        run_dir=run_dir,
        out_dir=run_dir,
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
        ship=pick,
        progress=True,
        init=_init_path(method, config, init),
    )
    overrides = {**_parse_settings(settings or []),
                 "steps": steps, "batch_size": batch_size, "lr": lr}
    kind_list = [k for k in kinds.split(",") if k.strip()] if kinds else None
    card = run_training(recipe, config, images, options, overrides, kind_list, evaluator)
    best = card["metrics"]["best"]
    final = card["metrics"]["final"] or {}
    parts = [
        f"{run_dir / card['weights']['file']} ({card['training']['steps']} steps, "
        f"{card['training']['wall_s']:.0f} s)"
    ]
    if final.get("val_f1") is not None:
        parts.append(f"final val F1 {final['val_f1']:.3f}")
    if best:
        parts.append(f"best {best['metric']} {best['value']:.3f} at step {best['step']}")
    if final.get("dev_f1") is not None:
        parts.append(f"dev F1 {final['dev_f1']:.3f}")
    if ship:
        parts.append(f"shipped to {_ship(run_dir / card['weights']['file'], force)}")
    print("; ".join(parts), file=sys.stdout)


def _fit_fusion(recipe: object, config: str, images: list[Path], dev: Path | None,
                out: Path | None, ship: bool, force: bool,
                overrides: dict[str, object]) -> None:
    """``train --method auto``: fit the fusion (no gradient steps; docs/methods/auto.md)."""
    from forgectl.errors import InputError

    recipe.config_for(config, overrides)  # type: ignore[attr-defined]  # bad --set: exit 2 now
    if dev is not None and not dev.exists():
        raise InputError(f"--dev: not found: {dev}")
    if ship:
        _check_ship_target("auto", config, force)
    run_dir = _run_dir("auto", config, out, False)
    card = recipe.fit(config, images, dev, run_dir,  # type: ignore[attr-defined]
                      overrides=overrides)
    weights = run_dir / card["weights"]["file"]
    half_b = card["metrics"].get("dev_half_b") or {}
    parts = [f"{weights} ({card['weights']['parameters']} numbers, "
             f"{card['training']['wall_s']:.0f} s)"]
    if half_b:
        parts.append(f"dev half B (not used to choose): F1 {half_b['f1']}, image AUC "
                     f"{half_b['image_auc']}, authentic FPR {half_b['authentic_fpr']}, "
                     f"ECE {half_b['ece']}")
    if ship:
        parts.append(f"shipped to {_ship(weights, force)}")
    print("; ".join(parts), file=sys.stdout)


def _init_path(method: str, config: str, init: str | None) -> Path | None:
    """``--init``: a path, or ``shipped`` for ``weights/<method>-<config>.safetensors``."""
    from forgectl.errors import InputError
    from forgectl.weights import weights_dir

    if init is None:
        return None
    path = weights_dir() / f"{method}-{config}.safetensors" if init == "shipped" else Path(init)
    if not path.is_file():
        raise InputError(f"--init: not a file: {path}")
    return path


def _parse_settings(settings: list[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` pairs; VALUE is JSON, or a plain string when it does not parse."""
    import json

    from forgectl.errors import UsageError

    out: dict[str, object] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE, not {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


def _run_dir(method: str, config: str, out: Path | None, resume: bool) -> Path:
    """``--out``, or a new ``runs/METHOD-CONFIG-TIME``; with ``--resume`` and no ``--out``, the
    newest ``runs/METHOD-CONFIG-*`` that holds a checkpoint."""
    from forgectl.errors import UsageError

    if out is not None:
        return out
    runs = Path("runs")
    if resume:
        found = sorted(p for p in runs.glob(f"{method}-{config}-*")
                       if (p / "checkpoint.json").is_file())
        if not found:
            raise UsageError(f"--resume: no run of {method} {config} in {runs}/ (give --out)")
        return found[-1]
    return runs / f"{method}-{config}-{time.strftime('%Y%m%d-%H%M%S')}"


def _check_ship_target(method: str, config: str, force: bool) -> None:
    """Refuse before training, not after it, when --ship would replace a shipped file."""
    from forgectl.errors import UsageError
    from forgectl.weights import weights_dir

    target = weights_dir() / f"{method}-{config}.safetensors"
    if target.exists() and not force:
        raise UsageError(f"--ship would replace {target}: add --force to replace it")


def _ship(weights: Path, force: bool) -> Path:
    """Copy weights + card into the shipped folder (atomic writes; the card last)."""
    from forgectl.errors import UsageError
    from forgectl.outputs import write_bytes
    from forgectl.weights import card_path, weights_dir

    folder = weights_dir()
    target = folder / weights.name
    if target.exists() and not force:
        raise UsageError(f"--ship would replace {target}: add --force to replace it")
    write_bytes(target, weights.read_bytes())
    write_bytes(card_path(target), card_path(weights).read_bytes())
    return target
