"""`forgectl benchmark`: several methods on a dataset, clean and perturbed; tables, JSON, CSV,
plots and a run manifest. Metric definitions: docs/METRICS.md."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from forgectl.commands._options import (
    RESTORE_DEFAULT,
    OutDirOpt,
    RestoreOpt,
    RuntimeOpt,
    ThresholdOpt,
)


def _split_methods(text: str, ready: list[str], known: list[str]) -> list[str]:
    """Method names from ``--methods``: ``all`` is every ready method; a name may also be an
    untrained one (its weights then come from ``--weights``)."""
    from forgectl.errors import UsageError

    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(ready)
    if not names:
        raise UsageError("--methods: give at least one method name")
    for n in names:
        if n not in known:
            raise UsageError(f"unknown method {n!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(names))


def _per_method(items: list[str], methods: list[str], option: str) -> dict[str, list[str]]:
    """``["ela.quality=95"]`` -> ``{"ela": ["quality=95"]}``; no prefix is allowed with one
    method only."""
    from forgectl.errors import UsageError

    out: dict[str, list[str]] = {m: [] for m in methods}
    for item in items:
        key, sep, _ = item.partition("=")
        name, dot, rest = key.partition(".")
        if dot and name in out:
            out[name].append(item[len(name) + 1 :])
        elif len(methods) == 1 and sep:
            out[methods[0]].append(item)
        else:
            raise UsageError(
                f"{option} {item!r}: write METHOD.KEY=VALUE (methods: {', '.join(methods)})"
            )
    return out


def _weights_by_method(items: list[str], methods: list[str]) -> dict[str, Path]:
    from forgectl.errors import UsageError

    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep and len(methods) == 1:
            name, path = methods[0], item
        if name not in methods or not path:
            raise UsageError(f"--weights {item!r}: write METHOD=PATH for one of the methods run")
        out[name] = Path(path)
    return out


def _runtime(method: str, runtime: str) -> str:
    """``--runtime`` applies to learned methods and to fusion's members; others run auto."""
    from forgectl import registry

    return runtime if registry.get_spec(method).kind in ("learned", "fusion") else "auto"


def benchmark(
    dataset: Annotated[
        Path,
        typer.Argument(
            metavar="DATASET",
            help="Dataset folder (MANIFEST.tsv, or images/ + masks/ [+ authentic/]) or a "
            "MANIFEST.tsv file.",
            show_default=False,
        ),
    ],
    methods: Annotated[
        str,
        typer.Option("--methods", "-m", metavar="NAMES",
                     help="Comma-separated method names, or 'all'."),
    ] = "ela",
    out: OutDirOpt = Path("forgectl-bench"),
    threshold: ThresholdOpt = None,
    perturb: Annotated[
        list[str] | None,
        typer.Option(
            "--perturb", metavar="KIND:PARAM=V1,V2",
            help="Robustness sweep KIND:PARAM=V1,V2 (repeatable): jpeg:q=, resize:scale=, "
            "blur:k=, noise:sigma=, brightness:alpha=, contrast:beta=.",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Evaluate a deterministic stratified sample."),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the --limit sample and the bootstrap.")
    ] = 0,
    workers: Annotated[
        int, typer.Option("--workers", "-j", min=1, help="Parallel processes per method.")
    ] = 1,
    score_threshold: Annotated[
        float,
        typer.Option(
            "--score-threshold",
            min=0.0,
            max=1.0,
            help="Image score counted as 'tampered' for balanced accuracy.",
        ),
    ] = 0.5,
    bootstrap: Annotated[
        int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples (0 = no CIs).")
    ] = 1000,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="METHOD.KEY=VALUE",
                     help="Method option METHOD.KEY=VALUE (repeatable)."),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option("--weights", metavar="METHOD=PATH",
                     help="Weights file METHOD=PATH (repeatable)."),
    ] = None,
    no_clean: Annotated[
        bool, typer.Option("--no-clean", help="With --perturb, skip the unperturbed run.")
    ] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")] = True,
    restore: RestoreOpt = RESTORE_DEFAULT,
    runtime: RuntimeOpt = "auto",
) -> None:
    """Benchmark methods on a dataset: localization, detection, authentic false positives,
    speed; optional robustness sweeps. Writes report.json, report.csv, items.csv, plots/."""
    from rich.console import Console

    from forgectl import registry
    from forgectl.commands.localize import parse_params
    from forgectl.errors import UsageError
    from forgectl.evaluation import report as rep
    from forgectl.evaluation import runner
    from forgectl.evaluation.datasets import load_dataset
    from forgectl.evaluation.perturb import Perturbation, parse_spec
    from forgectl.restore import RestoreStage, check_restore_mode

    check_restore_mode(restore)
    names = _split_methods(methods, registry.available(), registry.methods())
    settings: list[Perturbation | None] = [] if (no_clean and perturb) else [None]
    for spec in perturb or []:
        settings.extend(s for s in parse_spec(spec) if s not in settings)

    data = load_dataset(dataset)
    root = data.root.resolve()
    out_res = out.resolve()
    if out_res == root or root in out_res.parents:
        raise UsageError(f"--out {out} is inside the dataset; choose a folder outside it")
    evaluated = data.sample(limit, seed)

    options = _per_method(param or [], names, "--param")
    weight_files = _weights_by_method(weights or [], names)
    stage = RestoreStage(restore, runtime=runtime)
    loaded = {
        n: stage.wrap(registry.load(
            n, weights=weight_files.get(n), threshold=threshold, runtime=_runtime(n, runtime),
            **parse_params(options[n])
        ))
        for n in names
    }

    err = Console(stderr=True)
    for w in data.warnings:
        typer.echo(f"forgectl: warning: {w}", err=True)
    total = len(names) * len(settings) * len(evaluated)
    progress_bar = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        progress_bar = Progress(console=err, transient=True)
        task = progress_bar.add_task("benchmark", total=total)
        progress_bar.start()

    def on_start(method: str, setting: str, n: int) -> None:
        if progress_bar is not None:
            progress_bar.update(task, description=f"{method} {setting}")
        else:
            typer.echo(f"forgectl: {method} {setting}: {n} item(s)", err=True)

    def advance(k: int) -> None:
        if progress_bar is not None:
            progress_bar.advance(task, k)

    try:
        rows = runner.run_benchmark(
            evaluated,
            loaded,
            settings,
            workers=workers,
            seed=seed,
            score_threshold=score_threshold,
            n_boot=bootstrap,
            on_start=on_start,
            progress=advance,
        )
    finally:
        if progress_bar is not None:
            progress_bar.stop()

    run_options: dict[str, Any] = {
        "threshold": {n: b.threshold for n, b in loaded.items()},
        "score_threshold": score_threshold,
        "limit": limit,
        "seed": seed,
        "workers": workers,
        "bootstrap_resamples": bootstrap,
        "settings": [s.label if s else "clean" for s in settings],
        "perturb": list(perturb or []),
        "restore": {"mode": restore, **(stage.settings() or {})},
    }
    manifest = runner.run_manifest(data, evaluated, loaded, run_options)
    items = {(r["method"], r["setting"]): r.pop("items") for r in rows}
    report = {"manifest": manifest, "rows": rows}
    written = rep.write_reports(report, items, out, plots=plots)

    # Piped output (files, CI logs) is not limited to 80 columns: keep each row on one line.
    console = Console() if sys.stdout.isatty() else Console(width=200)
    for table in rep.render_tables(report):
        console.print(table)
    n_err = max((r["counts"]["errors"] for r in rows), default=0)
    if n_err:
        first = next(r for r in rows if r["counts"]["errors"] == n_err)
        typer.echo(
            f"forgectl: {n_err} item(s) could not be evaluated (all listed in report.json "
            "and items.csv), e.g.:",
            err=True,
        )
        for e in first["errors"][:5]:
            typer.echo(f"  {e['key']}: {e['error']}", err=True)
    typer.echo(
        f"forgectl: {len(evaluated)} item(s) x {len(names)} method(s) x {len(settings)} "
        f"setting(s); report in {out} ({len(written)} files)",
        err=True,
    )
    if all(r["counts"]["evaluated"] == 0 for r in rows):
        raise typer.Exit(1)
