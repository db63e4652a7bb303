"""`forgectl methods`: list registered methods, what they need and their weights."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def methods(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the methods `localize` can run, what input they need and their weights."""
    from forgectl import backends
    from forgectl.backends.base import WEIGHTS_DIR

    rows = []
    for name in backends.available():
        spec = backends.get_spec(name)
        needs = "JPEG file" if spec.needs_jpeg else "any image"
        weights = spec.weights or "-"
        if spec.weights and not (WEIGHTS_DIR / spec.weights).is_file():
            weights += " (missing)"
        rows.append(
            {
                "name": name,
                "kind": spec.kind,
                "needs": needs,
                "weights": weights,
                "summary": spec.summary,
                "paper": spec.paper,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="forgectl methods")
    for col in ("name", "kind", "needs", "weights", "summary"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["needs"], r["weights"], r["summary"])
    Console().print(table)
