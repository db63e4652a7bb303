"""`forgectl methods [NAME]`: what can run, what it needs, its weights and its options."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import Annotated, Any

import typer


def _row(name: str) -> dict[str, Any]:
    from forgectl import registry
    from forgectl.weights import weights_dir

    entry = registry.entry(name)
    cls = registry.get_class(name)
    spec = cls.spec
    weights = spec.weights or "-"
    if spec.weights and not (weights_dir() / spec.weights).is_file():
        weights += " (missing)"
    return {
        "name": name,
        "status": entry.status,
        "kind": spec.kind,
        "needs": "JPEG data (a JPEG, or pixels that were one)" if spec.needs_jpeg else "any image",
        "weights": weights,
        "trainable": entry.recipe is not None,
        "summary": spec.summary,
        "paper": spec.paper,
        "options": [opt.to_dict() for opt in cls.OPTIONS],
    }


def methods(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="One method: its options and details.",
                                   show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the methods `localize` can run (and untrained ones), or one method's options."""
    from forgectl import registry

    if name is not None:
        _one(_row(name), as_json)
        return
    names = registry.methods()
    rows = [_row(n) for n in names]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo("\n".join(_listing(rows, _width())))


def _width() -> int:
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 160))


def _wrapped(text: str, indent: int, width: int) -> list[str]:
    return textwrap.wrap(text, width=width, initial_indent=" " * indent,
                         subsequent_indent=" " * indent) or [""]


def _listing(rows: list[dict[str, Any]], width: int) -> list[str]:
    """Plain text, one block per method: a line of facts (grep-able: the name starts it), then
    the summary wrapped to the terminal (a boxed table split file names mid-word at 80 columns
    and drew boxes into pipes)."""
    kinds = [r["kind"] if r["status"] == "ready" else f"{r['kind']} ({r['status']})"
             for r in rows]
    name_w = max(len(r["name"]) for r in rows)
    kind_w = max(len(k) for k in kinds)
    lines = _wrapped("forgectl methods (one method's options: forgectl methods NAME; every "
                     "field: --json)", 0, width) + [""]
    for r, kind in zip(rows, kinds, strict=True):
        facts = (f"{r['name']:<{name_w}}  {kind:<{kind_w}}  needs {r['needs']}; "
                 f"weights {r['weights']}")
        lines += textwrap.wrap(facts, width=width, subsequent_indent=" " * (name_w + kind_w + 4),
                               break_on_hyphens=False)
        lines += _wrapped(r["summary"], 4, width)
    return lines


def _one(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    width = _width()
    lines = _wrapped(f"{row['name']} ({row['kind']}, {row['status']}): {row['summary']}", 0,
                     width)
    lines.append(f"needs: {row['needs']}; weights: {row['weights']}; "
                 f"trainable: {'yes' if row['trainable'] else 'no'}")
    if row["paper"]:
        lines += _wrapped(f"paper: {row['paper']}", 0, width)
    if not row["options"]:
        lines.append("options: none")
    else:
        lines += ["", "options (-p KEY=VALUE):"]
        for opt in row["options"]:
            lines.append(f"  {opt['name']} = {json.dumps(opt['default'])}  ({opt['valid']})")
            lines += _wrapped(opt["help"], 6, width)
    typer.echo("\n".join(lines))
