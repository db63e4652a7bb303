"""``forgectl restore IMG --out DIR``: undo a brightness/contrast disturbance into files.

:func:`write_restoration` writes the restored pixels as a lossless PNG and a JSON record, and
never touches the input file. The restorers: :class:`forgectl.backends.restorer.Restorer`
(learned) and :func:`forgectl.analysis.restoration.classical_restore` (the blind baseline).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.analysis.restoration import classical_restore
from forgectl.errors import InputError

if TYPE_CHECKING:
    from forgectl.backends.restorer import Restorer

RESTORE_SCHEMA = "forgectl.restore/1"


RESTORE_SUFFIXES = (".restored.png", ".restore.json")


def write_restoration(
    image_path: str | Path,
    out_dir: str | Path,
    restorer: Restorer | None = None,
    *,
    out_stem: str | Path | None = None,
    max_pixels: int | None = None,
) -> dict[str, Any]:
    """``forgectl restore IMG --out DIR``: ``<stem>.restored.png`` + ``<stem>.restore.json``.

    Args:
        image_path: the input (read only; never written). out_dir: created if missing.
        restorer: the learned module; None runs the classical baseline.
        out_stem: output path without suffix (default ``out_dir / <input stem>``; a batch
            passes :func:`forgectl.pipeline.plan_outputs` stems so equal names do not collide).
        max_pixels: refuse larger images (:func:`forgectl.intake.load_image`).

    Returns:
        The JSON record (also written).

    Raises:
        InputError: unreadable input, or an output path that would overwrite the input.
    """
    from forgectl.intake import load_image
    from forgectl.outputs import png_bytes, write_bytes, write_json

    src = Path(image_path)
    image = load_image(src, max_pixels)
    stem = Path(out_stem) if out_stem is not None else Path(out_dir) / src.stem
    png_path, json_path = (stem.with_name(stem.name + s) for s in RESTORE_SUFFIXES)
    for p in (png_path, json_path):
        if p.exists() and p.resolve() == src.resolve():
            raise InputError(f"refusing to overwrite the input {src}")
    if restorer is None:
        restored, facts = classical_restore(image.rgb)
    else:
        restored, facts = restorer.restore(image.rgb)
    write_bytes(png_path, png_bytes(np.ascontiguousarray(restored), compress_level=1))
    record = {
        "schema": RESTORE_SCHEMA,
        "input": {
            "path": str(src),
            "sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "format": image.format,
        },
        "output": str(png_path),
        "restoration": facts,
    }
    write_json(json_path, record)
    return record
