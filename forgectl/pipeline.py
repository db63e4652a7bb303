"""Library side of `localize`: find inputs, name outputs, analyse one file, build its record.

Kept apart from the command so other front ends (scripts, services) get the same behaviour.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from forgectl import __version__
from forgectl.backends.base import Backend, Result
from forgectl.errors import InputError
from forgectl.intake import IMAGE_EXTENSIONS, ForensicImage, load_image
from forgectl.outputs import OUTPUT_SUFFIXES, SCHEMA_VERSION

#: Extensions picked up when a folder is given (explicit files are tried whatever their name).
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    """One file to analyse and the output stem it maps to (``<out>/<rel>/<stem>``)."""

    path: Path
    out_stem: Path


def _is_our_output(name: str) -> bool:
    return any(name.endswith(s) for s in OUTPUT_SUFFIXES if s != ".json")


def _folder_images(folder: Path, recursive: bool) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    found = []
    for p in folder.glob(pattern):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and not _is_our_output(p.name):
            found.append(p)
    return sorted(found)


def collect_inputs(args: Iterable[str], recursive: bool = False) -> tuple[list[Path], list[str]]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated file list.

    Returns:
        ``(files, problems)``: problems are one-line messages for arguments that matched
        nothing (the caller reports them as failures).
    """
    files: list[Path] = []
    problems: list[str] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = _folder_images(p, recursive)
            if not found:
                problems.append(f"{arg}: no image files in folder")
            files.extend(found)
        elif p.exists():
            files.append(p)
        elif _GLOB_CHARS & set(arg):
            matched = [Path(m) for m in sorted(glob.glob(arg, recursive=True))]
            matched = [m for m in matched if m.is_file()]
            if not matched:
                problems.append(f"{arg}: pattern matched no files")
            files.extend(matched)
        else:
            problems.append(f"{arg}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique, problems


def plan_outputs(files: list[Path], out_dir: Path) -> list[InputFile]:
    """Map each input to an output stem that mirrors its path below the inputs' common folder.

    Files with the same stem in different folders land in different folders; two files with
    the same stem in one folder (``a.jpg``, ``a.png``) keep their extension in the stem.
    """
    if not files:
        return []
    resolved = [f.resolve() for f in files]
    base = Path(os.path.commonpath([r.parent for r in resolved]))
    stems: dict[Path, list[int]] = {}
    rels = []
    for i, r in enumerate(resolved):
        rel = r.parent.relative_to(base) / r.stem
        rels.append(rel)
        stems.setdefault(rel, []).append(i)
    plan = []
    for f, r, rel in zip(files, resolved, rels, strict=True):
        if len(stems[rel]) > 1:
            rel = rel.with_name(f"{r.stem}_{r.suffix.lstrip('.').lower() or 'noext'}")
        plan.append(InputFile(path=f, out_stem=out_dir / rel))
    return plan


def check_not_overwriting_inputs(
    plan: list[InputFile], suffixes: Iterable[str] = OUTPUT_SUFFIXES
) -> None:
    """Refuse to run when an output path (stem + one of ``suffixes``) would replace an input."""
    inputs = {item.path.resolve() for item in plan}
    for item in plan:
        for suffix in suffixes:
            target = item.out_stem.with_name(item.out_stem.name + suffix).resolve()
            if target in inputs:
                raise InputError(f"output {target} would overwrite an input; choose another --out")


def analyze_file(
    backend: Backend, path: Path, max_pixels: int | None = None
) -> tuple[ForensicImage, Result, dict[str, float]]:
    """Decode ``path`` and run ``backend`` on it; returns the image, result and timings (s)."""
    t0 = time.perf_counter()
    image = load_image(path, max_pixels=max_pixels)
    t1 = time.perf_counter()
    result = backend.localize(image)
    t2 = time.perf_counter()
    return image, result, {"decode_s": round(t1 - t0, 4), "analyze_s": round(t2 - t1, 4)}


def build_record(
    image: ForensicImage, result: Result, backend: Backend, timings: dict[str, float]
) -> dict[str, Any]:
    """The per-image JSON record (schema ``forgectl.result/1``, documented in docs/OUTPUTS.md)."""
    spec = backend.spec
    return {
        "schema": SCHEMA_VERSION,
        "forgectl_version": __version__,
        "input": image.facts(),
        "method": {
            "name": spec.name,
            "kind": spec.kind,
            "weights": backend.weights_id,
            "weights_sha256": backend.weights_sha256,
            # Which engine ran the network: "torch" or "onnx"; None for classical methods.
            "runtime": backend.runtime if spec.kind == "learned" else None,
            "threshold": backend.threshold,
            "mask_rule": "method" if spec.decides_mask else "heatmap >= threshold",
        },
        "applicable": result.applicable,
        "note": result.note,
        "score": round(result.score, 6),
        "tampered_fraction": round(result.tampered_fraction, 6),
        "facts": result.facts,
        "timings": timings,
    }


def error_record(path: Path, message: str, method: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "forgectl_version": __version__,
        "input": {"path": str(path)},
        "method": {"name": method},
        "error": message,
    }
