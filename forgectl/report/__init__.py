"""The evidence report behind `forgectl explain`: run analyzers, assemble a record, render HTML.

Nothing here knows any particular method. Every analyzer is reached through the registry and
shown through the generic :class:`~forgectl.backends.base.Result` fields (heatmap, mask, score,
applicable, note, maps, facts) and ``Backend.reading``; a new method appears in the report by
being registered. The only facts read by name are the documented cross-method keys
``double_compressed`` and ``primary_quality_estimate`` (:data:`DOUBLE_COMPRESSION_KEYS`), taken
from whichever method reports them.

The HTML is one self-contained file: inline CSS, images as base64 PNG downscaled to panel size,
no script (a Content-Security-Policy forbids any), and every text that comes from the input file
or a method (EXIF strings, file names, notes, facts) is HTML-escaped, since an attacker controls
the file.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from string import Template
from typing import Any

import numpy as np

from forgectl import __version__, registry
from forgectl.backends.base import Result
from forgectl.intake import ForensicImage
from forgectl.outputs import colorize, heatmap_png, overlay, png_bytes
from forgectl.weights import weights_dir

#: Version of the explain JSON record; bump on incompatible changes.
EXPLAIN_SCHEMA = "forgectl.explain/1"

#: A method "flags" the image in the summary when its image-level score reaches this.
FLAG_SCORE = 0.5

#: Cross-method fact keys the JPEG section reads from any method's ``Result.facts``.
DOUBLE_COMPRESSION_KEYS = ("double_compressed", "primary_quality_estimate")

# Display boxes (width, height) in pixels; images are only ever shrunk to fit, never enlarged.
PREVIEW_BOX = (480, 480)
PANEL_BOX = (400, 400)
MAP_BOX = (200, 200)

# Attacker-controlled strings can be arbitrarily long; the report shows a bounded prefix.
MAX_TEXT = 300
MAX_FACTS_TEXT = 4000

_COMPONENT_NAMES = ("Y", "Cb", "Cr", "K")


# --------------------------------------------------------------------------- running analyzers


@dataclass
class MethodEntry:
    """What one analyzer said about the image, or why it could not say anything.

    Attributes:
        name: registry name.
        kind / summary / paper: from the method's spec (empty when the spec failed to load).
        result: the method's Result, None when it raised.
        threshold: heatmap threshold the backend used.
        reading: ``backend.reading(result)``, one sentence.
        error: one-line ``Type: message`` when loading or running raised, else empty.
        elapsed_s: wall time of load + analysis.
    """

    name: str
    kind: str = ""
    summary: str = ""
    paper: str = ""
    result: Result | None = None
    threshold: float | None = None
    reading: str = ""
    error: str = ""
    elapsed_s: float = 0.0

    @property
    def status(self) -> str:
        """``error``, ``not_applicable``, ``empty`` (all-zero heatmap and score), ``flagged``
        (score >= FLAG_SCORE) or ``below``.

        ``empty`` covers both "looked and found nothing" and "blind on this input" (for example
        no double compression to measure): only the method's reading can tell them apart.
        """
        if self.result is None:
            return "error"
        if not self.result.applicable:
            return "not_applicable"
        if self.result.score <= 0.0 and not self.result.heatmap.any():
            return "empty"
        return "flagged" if self.result.score >= FLAG_SCORE else "below"


@dataclass
class Explanation:
    """An image and every selected analyzer's entry, in run order."""

    image: ForensicImage
    entries: list[MethodEntry] = field(default_factory=list)
    created: str = ""


def default_methods() -> list[str]:
    """Registered methods whose weights are present (classical methods need none).

    A method whose spec cannot even be imported stays in the list, so the report shows it as
    an error instead of hiding a broken registration.
    """
    names = []
    for name in registry.available():
        try:
            weights = registry.get_spec(name).weights
        except Exception:  # a broken module is reported by run_method as an error panel
            names.append(name)
            continue
        if weights is None or (weights_dir() / weights).is_file():
            names.append(name)
    return names


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return _clip(f"{type(exc).__name__}: {text}", MAX_TEXT)


def run_method(
    name: str, image: ForensicImage, threshold: float | None = None,
    parts: dict[str, MethodEntry] | None = None,
) -> MethodEntry:
    """Load and run one registered method; any exception becomes ``entry.error``.

    A method made of other methods (``auto``) exposes what its members said through
    ``backend.parts()``; those entries are added to ``parts`` so the report shows them without
    running the members twice.
    """
    entry = MethodEntry(name=name)
    start = time.perf_counter()
    try:
        spec = registry.get_spec(name)
        entry.kind, entry.summary, entry.paper = spec.kind, spec.summary, spec.paper
        backend = registry.load(name, threshold=threshold)
        backend.keep_parts = parts is not None
        entry.threshold = backend.threshold
        result = backend.localize(image)
        entry.reading = backend.reading(result)
        entry.result = result
        if parts is not None:
            for part_name, part_backend, output in backend.parts():
                part_spec = part_backend.spec
                parts[part_name] = MethodEntry(
                    name=part_name, kind=part_spec.kind, summary=part_spec.summary,
                    paper=part_spec.paper, result=output.result,
                    threshold=part_backend.threshold,
                    reading=part_backend.reading(output.result),
                    elapsed_s=round(output.seconds, 3))
    except Exception as exc:  # one failing analyzer must never abort the whole report
        entry.result = None
        entry.error = _one_line(exc)
    entry.elapsed_s = round(time.perf_counter() - start, 3)
    return entry


def explain_image(
    image: ForensicImage, methods: list[str], threshold: float | None = None
) -> Explanation:
    """Run each of ``methods`` (registry names, already validated) on ``image``; a member of
    an earlier fusion method is shown from that run (with ``threshold`` unset, where members
    use their own thresholds as inside the fusion)."""
    created = datetime.now(UTC).replace(microsecond=0).isoformat()
    parts: dict[str, MethodEntry] = {}
    entries = []
    for name in methods:
        if name in parts and threshold is None:
            entries.append(parts[name])
        else:
            entries.append(run_method(name, image, threshold, parts))
    return Explanation(image=image, entries=entries, created=created)


# --------------------------------------------------------------------------- record (JSON)


def double_compression_evidence(entries: list[MethodEntry]) -> list[dict[str, Any]]:
    """``double_compressed`` / ``primary_quality_estimate`` from every method reporting them."""
    found = []
    for entry in entries:
        if entry.result is None or not entry.result.applicable:
            continue
        facts = entry.result.facts
        if DOUBLE_COMPRESSION_KEYS[0] in facts:
            item = {"method": entry.name}
            item.update({k: facts.get(k) for k in DOUBLE_COMPRESSION_KEYS})
            found.append(item)
    return found


def summarize(entries: list[MethodEntry]) -> dict[str, Any]:
    """Method names grouped by status, with the score each flagged one reached."""
    groups: dict[str, list[Any]] = {
        "flagged": [],
        "below": [],
        "empty": [],
        "not_applicable": [],
        "error": [],
    }
    for entry in entries:
        status = entry.status
        if status == "flagged":
            groups[status].append({"method": entry.name, "score": _round(entry.result.score)})
        else:
            groups[status].append(entry.name)
    return {"flag_score": FLAG_SCORE, **groups}


def _round(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def method_record(entry: MethodEntry) -> dict[str, Any]:
    """The JSON entry of one method (``score``/``applicable`` are None after an error)."""
    result = entry.result
    return {
        "name": entry.name,
        "kind": entry.kind,
        "status": entry.status,
        "applicable": None if result is None else result.applicable,
        "score": None if result is None else _round(result.score),
        "tampered_fraction": None if result is None else _round(result.tampered_fraction, 6),
        "threshold": entry.threshold,
        "reading": entry.reading,
        "note": "" if result is None else result.note,
        "facts": {} if result is None else result.facts,
        "maps": [] if result is None else sorted(result.maps),
        "figures": [] if result is None else sorted(result.figures),
        "error": entry.error or None,
        "elapsed_s": entry.elapsed_s,
    }


def headline(entries: list[MethodEntry]) -> MethodEntry | None:
    """The entry the report opens with: the first fusion method (``kind == "fusion"``) that
    ran, whose score is the fused verdict over the others; None without one."""
    for entry in entries:
        if entry.kind == "fusion" and entry.result is not None:
            return entry
    return None


def verdict_record(entries: list[MethodEntry]) -> dict[str, Any] | None:
    head = headline(entries)
    if head is None or head.result is None:
        return None
    return {"method": head.name, "score": _round(head.result.score),
            "manipulated": head.result.score >= FLAG_SCORE,
            "tampered_fraction": _round(head.result.tampered_fraction, 6),
            "reading": head.reading}


def build_record(explanation: Explanation) -> dict[str, Any]:
    """The explain JSON (schema ``forgectl.explain/1``)."""
    entries = explanation.entries
    return {
        "schema": EXPLAIN_SCHEMA,
        "forgectl_version": __version__,
        "created": explanation.created,
        "verdict": verdict_record(entries),
        "input": explanation.image.facts(),
        "double_compression": double_compression_evidence(entries),
        "summary": summarize(entries),
        "methods": [method_record(e) for e in entries],
    }


# --------------------------------------------------------------------------- images


def _fit(height: int, width: int, box: tuple[int, int]) -> tuple[int, int]:
    """(h, w) scaled down (never up) to fit ``box`` = (max_w, max_h), aspect kept."""
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrink(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average ``arr`` (H, W[, C]) to ``size`` = (h, w); a no-op when already that size."""
    import cv2

    if arr.shape[:2] == size:
        return arr
    return cv2.resize(arr, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _heat_png(heatmap: np.ndarray, box: tuple[int, int]) -> str:
    """(H, W) map in [0, 1] -> colour-mapped PNG data URI, shrunk to fit ``box``: an 8-bit
    palette image, a third of the size of the same picture as RGB."""
    small = _shrink(heatmap.astype(np.float32), _fit(*heatmap.shape, box))
    return _data_uri(heatmap_png(small, compress_level=9, optimize=True))


def _overlay_png(rgb: np.ndarray, result: Result, box: tuple[int, int]) -> str:
    """The localize overlay at display size, as a lossless RGB PNG data URI.

    Lossless on purpose: palette or JPEG compression would cut the size but band smooth skies
    and add block edges, which a reader could take for traces of manipulation.
    """
    size = _fit(rgb.shape[0], rgb.shape[1], box)
    small_rgb = _shrink(rgb, size)
    small_heat = _shrink(result.heatmap, size)
    # Keep a flagged region that covers a good part of a display pixel; area averaging of the
    # boolean mask would otherwise erase regions thinner than the downscale factor.
    small_mask = _shrink(result.mask.astype(np.float32), size) >= 0.25
    # Level 1: a dozen overlays at level 6 cost 0.3 s per report to make it 8 % smaller.
    return _data_uri(png_bytes(overlay(small_rgb, small_heat, small_mask), compress_level=1))


# --------------------------------------------------------------------------- HTML pieces


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def esc(value: Any, limit: int = MAX_TEXT) -> str:
    """Printable, length-bounded, HTML-escaped text of ``value`` (safe in content and quotes)."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return html.escape(_clip(text, limit), quote=True)


def _yes_no(flag: Any) -> str:
    if flag is None:
        return "unknown"
    return "yes" if flag else "no"


def _rows(pairs: list[tuple[str, str]]) -> str:
    """``<tr>`` rows; the values must already be escaped HTML."""
    return "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _file_section(image: ForensicImage) -> str:
    facts = image.facts()
    exif = facts["exif"]
    camera = " ".join(v for v in (exif.get("make", ""), exif.get("model", "")) if v)
    size = facts["bytes"]
    depth = f"{esc(facts['mode'])}, {facts['bit_depth']} bits per sample"
    pairs = [
        ("File", f"<code>{esc(facts['path'])}</code>"),
        ("Format (by content)", esc(facts["format"])),
        ("Dimensions", f"{facts['width']} \u00d7 {facts['height']} px"),
        ("File size", f"{size:,} bytes" if size else "unknown"),
        ("SHA-256", f'<code class="hash">{esc(facts["sha256"])}</code>'),
        ("Colour mode", depth),
        ("Alpha channel", "yes (dropped)" if facts["has_alpha"] else "no"),
        ("ICC profile", _yes_no(facts["has_icc_profile"])),
        ("EXIF camera", esc(camera) if camera else '<span class="muted">none</span>'),
        ("EXIF software", _or_none(exif.get("software"))),
        ("EXIF date/time", _or_none(exif.get("datetime"))),
        ("EXIF orientation", _orientation(facts["exif_orientation"])),
        ("EXIF thumbnail", _yes_no(facts["has_exif_thumbnail"])),
        ("Frames", str(facts["frames"]) + (" (first analysed)" if facts["frames"] > 1 else "")),
    ]
    preview = _data_uri(png_bytes(_shrink(image.rgb, _fit(image.height, image.width, PREVIEW_BOX))))
    return (
        '<section><h2>File</h2><div class="row">'
        f'<figure><img src="{preview}" alt="input image">'
        "<figcaption>input, stored pixel grid</figcaption></figure>"
        f'<table class="facts">{_rows(pairs)}</table></div></section>'
    )


def _orientation(tag: int | None) -> str:
    if tag is None:
        return '<span class="muted">none</span>'
    # Pixels are analysed as stored; a rotated display would misplace every map.
    return f"{int(tag)} (not applied: maps follow the stored pixel grid)"


def _or_none(value: Any, none_text: str = "none") -> str:
    if value is None or value == "":
        return f'<span class="muted">{esc(none_text)}</span>'
    return esc(value)


def _quant_table_html(table: np.ndarray, caption: str) -> str:
    cells = []
    for row in np.asarray(table).reshape(8, 8):
        tds = []
        for q in row:
            # Shade by log step size (1 -> white, >= 100 -> dark): coarse steps stand out, and
            # the small steps of high qualities still differ visibly.
            shade = round(97 - 45 * np.log(min(max(int(q), 1), 100)) / np.log(100))
            tds.append(f'<td style="background:hsl(210,40%,{shade}%)">{int(q)}</td>')
        cells.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="qt"><caption>{caption}</caption>{"".join(cells)}</table>'


def _jpeg_section(image: ForensicImage, entries: list[MethodEntry]) -> str:
    view = image.jpeg_grid_view
    jpeg = image.jpeg if image.jpeg is not None else (view.jpeg if view is not None else None)
    if jpeg is None:
        searched = (
            " and its pixels show no earlier JPEG save"
            if image.pixel_history is not None else ""
        )
        return (
            f'<section><h2>JPEG</h2><p class="muted">Not a JPEG file{searched}: no quantization '
            "tables or DCT coefficients to examine; JPEG-only analyzers are not applicable."
            "</p></section>"
        )
    if jpeg.source == "pixels":
        table_kind = (
            f"estimated from the pixels of this {image.format} (an earlier JPEG save), "
            f"closest IJG quality {jpeg.quality}"
        )
    elif jpeg.standard_tables:
        table_kind = f"standard IJG (libjpeg) table, exactly quality {jpeg.quality}"
    else:
        table_kind = f"custom table (camera or editor), closest IJG quality {jpeg.quality}"
    if jpeg.source != "file":
        source = esc(f"the pixels: a {image.format} that was a JPEG before (luminance only)")
    elif jpeg.reader == "decoder":
        source = ("the file's tables; luminance coefficients recomputed from the decoded "
                  "pixels (jpegio not installed, or FORGECTL_JPEG_READER=decoder)")
    else:
        source = "the file"
    pairs = [
        ("Source", source),
        ("Estimated quality", f"{jpeg.quality} (from the luminance table)"),
        ("Luminance table", esc(table_kind)),
    ]
    if view is not None:
        dy, dx = (image.pixel_history or {}).get("grid_offset", [0, 0])
        pairs.append(("Grid", esc(
            f"starts {dy} px down and {dx} px right of the image's corner: the image was "
            "cropped after that JPEG save; JPEG methods ran on that grid")))
    if jpeg.source == "file":  # the pixels do not tell these
        pairs += [
            ("Chroma subsampling", esc(jpeg.subsampling)),
            ("Progressive", _yes_no(jpeg.progressive)),
            ("Components", str(len(jpeg.quant_tables))),
        ]
    pairs.append(("Double compression", _double_compression_html(entries)))
    tables = []
    for i, table in enumerate(jpeg.quant_tables):
        label = _COMPONENT_NAMES[i] if i < len(_COMPONENT_NAMES) else f"component {i}"
        caption = f"{label} quantization"
        if i == 0 and jpeg.standard_tables:
            caption += f" = IJG q{jpeg.quality}"
        elif i == 0:
            caption += " (custom)"
        tables.append(_quant_table_html(table, esc(caption)))
    return (
        '<section><h2>JPEG</h2><div class="row">'
        f'<table class="facts">{_rows(pairs)}</table>'
        f'<div class="qts">{"".join(tables)}</div></div></section>'
    )


def _double_compression_html(entries: list[MethodEntry]) -> str:
    evidence = double_compression_evidence(entries)
    if not evidence:
        return (
            '<span class="muted">not examined (no analyzer reporting double compression '
            "ran on this file)</span>"
        )
    parts = []
    for item in evidence:
        source = f'<span class="muted">(from {esc(item["method"])})</span>'
        if item["double_compressed"]:
            q = item.get("primary_quality_estimate")
            first = f", first compression at about quality {esc(q)}" if q is not None else ""
            parts.append(f"evidence of aligned double compression{first} {source}")
        else:
            parts.append(
                "no evidence of aligned double compression found (this does not show the "
                f"file was saved only once) {source}"
            )
    return "<br>".join(parts)


_STATUS_TEXT = {
    "flagged": "score \u2265 {flag:.2f}",
    "below": "score below {flag:.2f}",
    "empty": "empty map",
    "not_applicable": "not applicable",
    "error": "failed",
}


def _summary_section(entries: list[MethodEntry]) -> str:
    def names(status: str, with_score: bool = False) -> str:
        items = []
        for i, e in enumerate(entries):
            if e.status == status:
                score = f" ({e.result.score:.2f})" if with_score and e.result else ""
                items.append(f'<a href="#{_card_id(i)}">{esc(e.name)}</a>{score}')
        return ", ".join(items)

    lines = []
    flagged = names("flagged", with_score=True)
    if flagged:
        lines.append(
            f'<li class="flag">Reached a score of {FLAG_SCORE:.2f} or more (something worth '
            f"examining): {flagged}.</li>"
        )
    else:
        lines.append(
            f"<li>No analyzer reached a score of {FLAG_SCORE:.2f}. That is an absence of these "
            "particular traces, not proof that the image is unedited.</li>"
        )
    groups = (
        ("below", "Applicable, below that score"),
        ("empty", "Empty map: found nothing, or blind on this kind of image (see its reading)"),
        ("not_applicable", "Not applicable to this input"),
        ("error", "Failed to run"),
    )
    for status, label in groups:
        listed = names(status)
        if listed:
            lines.append(f"<li>{label}: {listed}.</li>")
    return (
        '<section class="summary"><h2>Summary</h2><ul>'
        + "".join(lines)
        + '</ul><p class="caveat">Each analyzer looks for one kind of trace, misses '
        "manipulations that leave no such trace, and can react to ordinary content (edges, "
        "texture, saturation, re-saving). The maps below show <i>where</i> a trace is unusual; "
        "they are evidence to be weighed by a person, not a verdict.</p></section>"
    )


def _verdict_section(entries: list[MethodEntry], rgb: np.ndarray) -> str:
    """The fused verdict, map and reliability map, first thing on the page (when a fusion
    method ran)."""
    head = headline(entries)
    if head is None or head.result is None:
        return ""
    result = head.result
    p = result.score
    word = "manipulated" if p >= FLAG_SCORE else "no manipulation found"
    cls = "flag" if p >= FLAG_SCORE else ""
    figures = [
        _figure(_overlay_png(rgb, result, PANEL_BOX), "fused map over the image"),
        _figure(_heat_png(result.heatmap, PANEL_BOX), "fused heatmap"),
    ]
    if "reliability" in result.maps:
        figures.append(_figure(_heat_png(result.maps["reliability"], PANEL_BOX),
                               "reliability (bright = the members can see here)"))
    return (
        f'<section class="verdict"><h2>Verdict: <span class="{cls}">{esc(word)}</span></h2>'
        f"<p>Score: <b>{p:.2f}</b> (0.5 = the decision threshold; "
        f"{esc(head.name)}, fitted on synthetic forgeries, threshold chosen on real ones; "
        f'<a href="#{_card_id(entries.index(head))}">details</a>). '
        f"{100 * result.tampered_fraction:.1f}% of pixels flagged; members' scores (and how "
        f"much each moved this verdict): {esc(_member_list(result))}.</p>"
        f'<div class="panels">{"".join(figures)}</div>'
        '<p class="caveat">Dark areas of the reliability map are flat, clipped or otherwise '
        "unreadable for every member: no finding there means little. The members' own "
        "evidence follows.</p></section>"
    )


def _member_list(result: Result) -> str:
    members = result.facts.get("members") or []

    def one(m: dict) -> str:
        if not m.get("applicable"):
            return f"{m['method']} (blind)"
        effect = m.get("verdict_effect")
        moved = f" ({effect:+.2f})" if effect is not None else ""
        return f"{m['method']} {m['score']:.2f}{moved}"

    return ", ".join(one(m) for m in members) or "none"


def _legend() -> str:
    stops = colorize(np.linspace(0.0, 1.0, 9, dtype=np.float32))
    gradient = ", ".join(f"rgb({r},{g},{b})" for r, g, b in stops)
    return (
        '<div class="legend"><span>0</span>'
        f'<span class="bar" style="background:linear-gradient(to right, {gradient})"></span>'
        '<span>1</span><span class="muted">heatmap value (higher = more unusual); overlay: '
        "the image dimmed, heatmap blended in, mask (heatmap \u2265 threshold, or the method's "
        "own decision) outlined in cyan</span></div>"
    )


def _figure(src: str, caption: str, cls: str = "") -> str:
    return (
        f'<figure class="{cls}"><img src="{src}" alt="{caption}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def _facts_details(facts: dict[str, Any]) -> str:
    if not facts:
        return ""
    text = json.dumps(facts, indent=1, default=str)
    return (
        f"<details><summary>method facts</summary><pre>{esc(text, MAX_FACTS_TEXT)}</pre></details>"
    )


def _card_id(index: int) -> str:
    return f"method-{index}"


def _method_card(index: int, entry: MethodEntry, rgb: np.ndarray) -> str:
    status = entry.status
    card = f'<article class="card {status}" id="{_card_id(index)}">'
    label = _STATUS_TEXT[status].format(flag=FLAG_SCORE)
    head = f"<h3>{esc(entry.name)}</h3>"
    if entry.kind:
        head += f'<span class="kind">{esc(entry.kind)}</span>'
    result = entry.result
    if result is not None and result.applicable:
        head += f'<span class="badge {status}">score {result.score:.2f} \u00b7 {esc(label)}</span>'
    else:
        head += f'<span class="badge {status}">{esc(label)}</span>'
    about = f'<p class="about">{esc(entry.summary)}</p>' if entry.summary else ""

    if result is None:
        body = f'<p class="error">{esc(entry.error)}</p>'
        return f"{card}<header>{head}</header>{about}{body}</article>"

    reading = f'<p class="reading">{esc(entry.reading)}</p>'
    if not result.applicable:
        return f"{card}<header>{head}</header>{about}{reading}</article>"

    figures = [
        _figure(_heat_png(result.heatmap, PANEL_BOX), "heatmap"),
        _figure(
            _overlay_png(rgb, result, PANEL_BOX),
            f"overlay, {100 * result.tampered_fraction:.1f}% of pixels in the mask",
        ),
    ]
    # Extra maps share one column that wraps on its own, so the two main panels stay side by
    # side however many maps a method adds.
    extra = [
        _figure(_heat_png(result.maps[k], MAP_BOX), esc(k), "small") for k in sorted(result.maps)
    ]
    extra += [
        _figure(_data_uri(png_bytes(result.figures[k])), esc(k), "small")
        for k in sorted(result.figures)
    ]
    if extra:
        figures.append(f'<div class="maps">{"".join(extra)}</div>')
    note = ""
    if result.note and result.note != entry.reading:
        note = f'<p class="note">{esc(result.note)}</p>'
    threshold = "" if entry.threshold is None else f"threshold {entry.threshold:.2f} \u00b7 "
    paper = f" \u00b7 {esc(entry.paper, 600)}" if entry.paper else ""
    meta = f'<p class="meta">{threshold}{entry.elapsed_s:.2f} s{paper}</p>'
    return (
        f"{card}<header>{head}</header>{about}{reading}"
        f'<div class="row">{"".join(figures)}</div>{note}{_facts_details(result.facts)}'
        f"{meta}</article>"
    )


def _asset(name: str) -> str:
    """A text file of this package (the page template, its style sheet)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")




def render_html(explanation: Explanation) -> str:
    """The self-contained HTML report (one string; images inline as base64 PNG)."""
    image = explanation.image
    cards = "".join(_method_card(i, e, image.rgb) for i, e in enumerate(explanation.entries))
    if not cards:
        cards = '<section><p class="muted">No analyzer was selected.</p></section>'
    return Template(_asset("page.html")).substitute(
        style=_asset("style.css"),
        title=esc(image.path.name if image.path else image.name),
        version=esc(__version__),
        created=esc(explanation.created),
        count=len(explanation.entries),
        verdict=_verdict_section(explanation.entries, image.rgb),
        summary=_summary_section(explanation.entries),
        file=_file_section(image),
        jpeg=_jpeg_section(image, explanation.entries),
        legend=_legend(),
        cards=cards,
    )
