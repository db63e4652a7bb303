"""`forgectl methods [NAME]`: what can run, what it needs, its weights and its options."""

from __future__ import annotations

import json
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
    from rich.console import Console
    from rich.table import Table

    table = Table(title="forgectl methods (details: forgectl methods NAME)")
    for col in ("name", "kind", "needs", "weights", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        kind = r["kind"] if r["status"] == "ready" else f"{r['kind']} ({r['status']})"
        table.add_row(r["name"], kind, r["needs"], r["weights"], r["summary"])
    Console().print(table)


def _one(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(row, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{row['name']}[/bold] ({row['kind']}, {row['status']}): {row['summary']}")
    console.print(f"needs: {row['needs']}; weights: {row['weights']}; "
                  f"trainable: {'yes' if row['trainable'] else 'no'}")
    if row["paper"]:
        console.print(f"paper: {row['paper']}")
    if not row["options"]:
        console.print("options: none")
        return
    table = Table(title="options (-p KEY=VALUE)")
    for col in ("name", "default", "valid", "help"):
        table.add_column(col, overflow="fold")
    for opt in row["options"]:
        table.add_row(opt["name"], json.dumps(opt["default"]), opt["valid"], opt["help"])
    console.print(table)
