"""Per-image record output shared by the batch commands (`localize`, `restore`)."""

from __future__ import annotations

from typing import IO, Any

import typer


def emit_record(record: dict[str, Any], log: IO[str] | None, json_stdout: bool) -> None:
    """Append ``record`` to the batch's ``results.jsonl`` (flushed, so an interrupted batch
    keeps what it did) and, with ``--json``, print it as one line on stdout."""
    from forgectl.outputs import to_json

    line = to_json(record)
    if log is not None:
        log.write(line + "\n")
        log.flush()
    if json_stdout:
        typer.echo(line)
