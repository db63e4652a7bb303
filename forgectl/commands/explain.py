"""`forgectl explain`: an evidence report (HTML + JSON) for one image from every analyzer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forgectl.commands._options import MaxPixelsOpt, OutDirOpt, ThresholdOpt
from forgectl.intake import DEFAULT_MAX_PIXELS

HTML_SUFFIX = ".report.html"
JSON_SUFFIX = ".report.json"


def parse_methods(text: str | None) -> list[str]:
    """``"ela, dq"`` -> ``["ela", "dq"]`` (registry order kept as given, duplicates dropped);
    ``None`` -> every registered method whose weights are present.

    Raises:
        UsageError: an empty list or a name that is not registered.
    """
    from forgectl import registry, report
    from forgectl.errors import UsageError

    if text is None:
        return report.default_methods()
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UsageError("--methods needs at least one method name")
    known = registry.available()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UsageError(
            f"unknown method(s) {', '.join(map(repr, unknown))} (known: {', '.join(known)})"
        )
    return names


def explain(
    image: Annotated[Path, typer.Argument(help="Image file to report on.", show_default=False)],
    out: OutDirOpt,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Comma-separated methods to run (default: all with their weights present).",
        ),
    ] = None,
    threshold: ThresholdOpt = None,
    max_pixels: MaxPixelsOpt = DEFAULT_MAX_PIXELS,
) -> None:
    """Evidence report for one image: <stem>.report.html (self-contained) and .report.json.

    File and JPEG facts, then each analyzer's heatmap, overlay, maps and reading.
    An analyzer that fails appears as an error; the report is still written.
    """
    from forgectl import report
    from forgectl.errors import InputError
    from forgectl.intake import load_image
    from forgectl.outputs import write_bytes, write_json

    names = parse_methods(methods)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    html_path = out / (image.stem + HTML_SUFFIX)
    json_path = out / (image.stem + JSON_SUFFIX)
    if image.exists() and image.resolve() in (html_path.resolve(), json_path.resolve()):
        raise InputError(f"the report would overwrite the input {image}; choose another --out")

    loaded = load_image(image, max_pixels=max_pixels)
    explanation = report.explain_image(loaded, names, threshold)
    record = report.build_record(explanation)
    record["outputs"] = {"html": str(html_path)}
    # HTML first, JSON last: the JSON's presence means the report is complete.
    write_bytes(html_path, report.render_html(explanation).encode("utf-8"))
    write_json(json_path, record)

    for entry in explanation.entries:
        if entry.error:
            typer.echo(f"forgectl: {entry.name}: failed: {entry.error}", err=True)
    typer.echo(str(html_path))
    typer.echo(str(json_path))
