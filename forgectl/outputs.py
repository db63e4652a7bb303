"""Output writers: mask, heatmap, overlay, JSON record. Every write is atomic.

A file either appears complete or not at all: data goes to a temporary file in the same folder,
then ``os.replace`` moves it into place (atomic on POSIX). Ctrl-C mid-write leaves at most a
``.tmp`` file, which :func:`atomic_write` removes on the way out.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

#: Version of the per-image JSON record; bump on incompatible changes.
SCHEMA_VERSION = "forgectl.result/1"

OUTPUT_SUFFIXES = (".mask.png", ".heatmap.png", ".overlay.png", ".json")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give outputs the usual permissions (0666 minus umask).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """One-line JSON (for stdout and JSONL)."""
    return json.dumps(obj, default=_json_default, separators=(",", ":"))


def png_bytes(arr: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG-encode a uint8 array. Photo-like content gains little from levels above 1 but
    costs several seconds at 12 MP, so colour outputs use level 1."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


# Inferno-like colour map sampled at 9 stops (perceptually ordered, readable in grey print).
_STOPS = np.array(
    [
        [0, 0, 4],
        [31, 12, 72],
        [85, 15, 109],
        [136, 34, 106],
        [186, 54, 85],
        [227, 89, 51],
        [249, 140, 10],
        [249, 201, 50],
        [252, 255, 164],
    ],
    dtype=np.float32,
)
_LUT = np.stack(
    [np.interp(np.linspace(0, 8, 256), np.arange(9), _STOPS[:, c]) for c in range(3)], axis=1
).astype(np.uint8)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) uint8 RGB with an inferno-like colour map."""
    idx = np.clip(np.round(np.nan_to_num(heatmap) * 255.0), 0, 255).astype(np.uint8)
    return _LUT[idx]


def overlay(rgb: np.ndarray, heatmap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend the heatmap over a dimmed copy of the image and outline the mask in cyan.

    Args:
        rgb: (H, W, 3) uint8. heatmap: (H, W) float in [0, 1]. mask: (H, W) bool.

    Returns:
        (H, W, 3) uint8.
    """
    import cv2

    # out = base + alpha * (colour - base), with in-place float32 ops to bound memory on 12 MP.
    out = rgb.astype(np.float32)
    out *= 0.6
    colour = colorize(heatmap).astype(np.float32)
    colour -= out
    colour *= (np.clip(heatmap, 0, 1).astype(np.float32) * 0.75)[:, :, None]
    out += colour
    del colour
    out = np.clip(out, 0, 255, out=out).astype(np.uint8)
    if mask.any():
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        thickness = max(1, round(min(rgb.shape[:2]) / 300))
        out = np.ascontiguousarray(out)
        cv2.drawContours(out, contours, -1, (0, 255, 255), thickness)
    return out


def write_result_files(
    stem_path: Path, rgb: np.ndarray, heatmap: np.ndarray, mask: np.ndarray, record: dict
) -> dict[str, str]:
    """Write ``<stem>.mask.png``, ``.heatmap.png``, ``.overlay.png`` and ``.json``.

    The JSON goes last and names the other three, so its presence means the set is complete.
    Returns the written paths by kind.
    """
    paths = {
        "mask": stem_path.with_name(stem_path.name + ".mask.png"),
        "heatmap": stem_path.with_name(stem_path.name + ".heatmap.png"),
        "overlay": stem_path.with_name(stem_path.name + ".overlay.png"),
        "json": stem_path.with_name(stem_path.name + ".json"),
    }
    write_bytes(paths["mask"], png_bytes(mask.astype(np.uint8) * 255))
    write_bytes(paths["heatmap"], png_bytes(colorize(heatmap), compress_level=1))
    write_bytes(paths["overlay"], png_bytes(overlay(rgb, heatmap, mask), compress_level=1))
    record = dict(record)
    record["outputs"] = {k: str(v) for k, v in paths.items() if k != "json"}
    write_json(paths["json"], record)
    return {k: str(v) for k, v in paths.items()}
