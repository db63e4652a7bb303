"""Per-image record output shared by the batch commands (`localize`, `restore`)."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # outputs imports numpy and Pillow: not at `forgectl --help` time
    from forgectl.outputs import ResultsLog


def emit_record(
    record: dict[str, Any], log: ResultsLog | IO[str] | None, json_stdout: bool
) -> None:
    """Append ``record`` to the batch's ``results.jsonl`` and, with ``--json``, print it as one
    line on stdout.

    ``log`` is a :class:`~forgectl.outputs.ResultsLog` (each line written whole and fsynced,
    so a killed batch keeps every record it finished) or a text file (flushed per record).
    """
    from forgectl.outputs import to_json

    line = to_json(record)
    if hasattr(log, "write_line"):  # a ResultsLog
        log.write_line(line)
    elif log is not None:
        log.write(line + "\n")
        log.flush()
    if json_stdout:
        typer.echo(line)
