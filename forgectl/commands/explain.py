"""`forgectl explain`: an evidence report (HTML + JSON) for one image from every analyzer."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from forgectl.commands._options import (
    MAX_PIXELS_DEFAULT,
    RESTORE_DEFAULT,
    MaxPixelsOpt,
    OutDirOpt,
    RestoreOpt,
    ThresholdOpt,
)

if TYPE_CHECKING:  # report and the stage import numpy and more: not at `--help` time
    from forgectl.intake import ForensicImage
    from forgectl.report import Explanation
    from forgectl.restore import RestoreStage

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
    image: Annotated[Path, typer.Argument(
        metavar="IMAGE", help="Image file to report on; - reads it from standard input (kept as "
        "--out/stdin.<ext>).", show_default=False)],
    out: OutDirOpt,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods", metavar="NAMES",
            help="Comma-separated methods to run (default: all with their weights present).",
        ),
    ] = None,
    threshold: ThresholdOpt = None,
    max_pixels: MaxPixelsOpt = MAX_PIXELS_DEFAULT,
    restore: RestoreOpt = RESTORE_DEFAULT,
) -> None:
    """Evidence report for one image: <stem>.report.html (self-contained) and .report.json.

    File and JPEG facts, then each analyzer's heatmap, overlay, maps and reading.
    An analyzer that fails appears as an error; the report is still written.
    """
    from forgectl import report
    from forgectl.errors import InputError
    from forgectl.intake import load_image
    from forgectl.outputs import write_bytes, write_json
    from forgectl.restore import RestoreStage, check_restore_mode

    check_restore_mode(restore)
    names = parse_methods(methods)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if str(image) == "-":
        from forgectl.pipeline import save_standard_input

        image = save_standard_input(out)  # kept as <out>/stdin.<ext>, as localize keeps it
    html_path = out / (image.stem + HTML_SUFFIX)
    json_path = out / (image.stem + JSON_SUFFIX)
    if image.exists() and image.resolve() in (html_path.resolve(), json_path.resolve()):
        raise InputError(f"the report would overwrite the input {image}; choose another --out")

    loaded = load_image(image, max_pixels=max_pixels)
    stage = RestoreStage(restore)
    if stage.mode == "off":
        explanation = report.explain_image(loaded, names, threshold)
        restoration = None
    else:
        explanation, restoration = explain_restored(loaded, names, threshold, stage)
    record = report.build_record(explanation)
    if restoration is not None:
        record["restoration"] = restoration
    record["outputs"] = {"html": str(html_path)}
    # HTML first, JSON last: the JSON's presence means the report is complete.
    write_bytes(html_path, report.render_html(explanation).encode("utf-8"))
    write_json(json_path, record)

    for entry in explanation.entries:
        if entry.error:
            typer.echo(f"forgectl: {entry.name}: failed: {entry.error}", err=True)
    typer.echo(str(html_path))
    typer.echo(str(json_path))


def explain_restored(
    image: ForensicImage, names: list[str], threshold: float | None, stage: RestoreStage
) -> tuple[Explanation, dict[str, Any]]:
    """``report.explain_image`` behind the ``--restore`` stage: one decision for the image,
    then each method on the input its policy gives it (docs/RESTORE.md); the report keeps the
    original file's facts and preview.

    Returns:
        ``(explanation, restoration block)``: the image's decision (mode, fired, kind,
        parameter, clipped fraction, the module's facts, settings) and ``methods``: per
        method, its policy and whether it ran on restored pixels.
    """
    from datetime import UTC, datetime

    from forgectl import registry, report
    from forgectl.restore import (
        OWN,
        RESTORED,
        decision_block,
        method_policy,
        restored_image,
        stage_note,
        stage_record,
    )

    decision = stage.decide(image.rgb)
    fired = bool(decision.get("restored"))
    restored = restored_image(image, stage.restore(image.rgb, decision)) if fired else None
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    parts: dict[str, Any] = {}
    parts_restored = False  # the input the fusion whose members are in ``parts`` saw
    entries, per_method = [], {}
    for name in names:
        try:
            policy, why = method_policy(registry.get_spec(name))
        except Exception:  # a broken registration: run_method reports it as an error panel
            policy, why = RESTORED, ""
        sees_restored = fired and policy == RESTORED
        # A fusion's member entry is reused only if it saw the input this method would see.
        if name in parts and threshold is None and parts_restored == sees_restored:
            entry = parts[name]
        else:
            run_parts: dict[str, Any] = {}
            entry = report.run_method(name, restored if sees_restored else image, threshold,
                                      run_parts)
            if run_parts:
                parts, parts_restored = run_parts, sees_restored
        if policy == OWN:  # its own restoration ran inside it: report what that did
            own = entry.result.facts.get("restoration") if entry.result is not None else None
            sees_restored = bool(isinstance(own, dict) and own.get("restored"))
        elif entry.result is not None and fired:
            note = stage_note(decision, why, sees_restored)
            entry.result.facts.setdefault("restoration_stage", note)
            if sees_restored and not entry.result.note.startswith(note):
                entry.result.note = f"{note}; {entry.result.note}" if entry.result.note else note
        entries.append(entry)
        try:
            block = stage_record(stage, registry.get_spec(name), decision, sees_restored)
        except Exception:  # the error panel already says the method is broken
            continue
        per_method[name] = {k: block[k] for k in ("method_input", "method_saw_restored",
                                                 "policy")}
    summary = decision_block(stage, decision)
    summary["settings"] = stage.settings()
    summary["methods"] = per_method
    return report.Explanation(image=image, entries=entries, created=created), summary

