"""Output writers: mask, heatmap, overlay, JSON record, results.jsonl. Nothing is half-written.

A file either appears complete or not at all: data goes to a temporary file in the same folder,
is flushed to disk, then ``os.replace`` moves it into place (atomic on POSIX). Ctrl-C mid-write
leaves at most a ``.tmp`` file, which :func:`atomic_write` removes on the way out (a SIGKILL
can leave one; the next ``localize`` run over the folder removes it).

``results.jsonl`` is the exception: it grows one record at a time (:class:`ResultsLog`), each
line one ``write`` then ``fsync``, so a killed batch keeps every record it finished; a torn last
line (a kill or a full disk mid-line) is dropped by :func:`read_jsonl`.

Write failures (full disk, read-only or missing folder) raise :class:`OutputError` naming the
file and the cause.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from forgectl.errors import OutputError

#: Version of the per-image JSON record; bump on incompatible changes.
SCHEMA_VERSION = "forgectl.result/1"

OUTPUT_SUFFIXES = (".mask.png", ".heatmap.png", ".overlay.png", ".reliability.png", ".json")
#: Result maps written as their own 8-bit grey PNG (``<stem>.<name>.png``, 255 = 1.0) when a
#: method gives them: ``reliability`` (``auto``: how much of its evidence sees each pixel).
MAP_OUTPUTS = ("reliability",)
#: The per-image PNGs ``localize`` can write (``--outputs``); the JSON is always written.
IMAGE_OUTPUTS = ("mask", "heatmap", "overlay", *MAP_OUTPUTS)
#: Errors a write can hit whatever the caller does (a full disk, a read-only file system).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def cannot_write(path: Path, exc: OSError) -> OutputError:
    """One line for a failed write: the file and the system's reason (never an object repr)."""
    reason = exc.strerror or type(exc).__name__
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return OutputError(f"cannot write {path}: {reason}{where}")


@contextmanager
def atomic_write(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    Raises:
        OutputError: the folder cannot be made or written, or the disk is full (the
            temporary file is removed).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from exc
    in_body = True
    try:
        # mkstemp creates 0600 files; give outputs the usual permissions (0666 minus umask).
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode) as fh:
            yield fh
            in_body = False
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and (not in_body or exc.errno in _WRITE_ERRNOS):
            raise cannot_write(path, exc) from exc
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


#: The colour map as a 256-entry PNG palette (R, G, B, R, G, B, ...).
HEAT_PALETTE: list[int] = _LUT.reshape(-1).tolist()


def heat_index(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W) uint8 ``round(255 * heatmap)`` (half to even, as
    ``np.round``), out-of-range values clipped, NaN as 0.

    OpenCV rounds and saturates in one multithreaded pass; the clip (a 12 MP temporary) is
    only made for maps that need it.
    """
    import cv2

    heatmap = np.asarray(heatmap)
    if heatmap.size == 0:
        return np.zeros(heatmap.shape, np.uint8)
    # NaN makes min/max NaN and the test False: such maps are clipped (NaN then becomes 0).
    if not (heatmap.min() >= 0.0 and heatmap.max() <= 1.0):
        heatmap = np.clip(heatmap, 0.0, 1.0)
    # OpenCV sees any array as a matrix: give the result the input's shape back (1-D scales).
    return cv2.convertScaleAbs(heatmap, alpha=255.0).reshape(heatmap.shape)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) uint8 RGB with an inferno-like colour map (any
    shape (...) -> (..., 3))."""
    import cv2

    idx = heat_index(heatmap)
    if idx.ndim != 2:
        return _LUT[idx]
    return cv2.LUT(cv2.merge([idx, idx, idx]), _LUT.reshape(256, 1, 3))


def heatmap_png(heatmap: np.ndarray, compress_level: int = 1, optimize: bool = False) -> bytes:
    """The heatmap as an 8-bit palette PNG: each pixel is ``round(255 * heatmap)`` and the
    palette is the colour map, so viewers show the colours and ``np.array(Image.open(f))``
    gives the values back. A third of the bytes of the RGB picture, and at 12 MP 0.1 s to
    encode against 0.6 s."""
    image = Image.fromarray(heat_index(heatmap))
    image.putpalette(HEAT_PALETTE)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level, optimize=optimize)
    return buf.getvalue()


def overlay(rgb: np.ndarray, heatmap: np.ndarray, mask: np.ndarray,
            colour: np.ndarray | None = None) -> np.ndarray:
    """Blend the heatmap over a dimmed copy of the image and outline the mask in cyan.

    ``out = (1 - a) * 0.6 * rgb + a * colour`` with ``a = 0.75 * heatmap``: a calm region
    shows the photo at 60 % brightness, a hot one mostly the colour map.

    Args:
        rgb: (H, W, 3) uint8. heatmap: (H, W) float in [0, 1]. mask: (H, W) bool.
        colour: ``colorize(heatmap)`` when the caller has it already.

    Returns:
        (H, W, 3) uint8.
    """
    import cv2

    alpha = np.clip(heatmap, 0.0, 1.0).astype(np.float32, copy=False)
    alpha *= np.float32(0.75)
    dimmed = cv2.convertScaleAbs(np.ascontiguousarray(rgb), alpha=0.6)
    # blendLinear normalises by the weights' sum, here 1: one multithreaded pass, no float
    # copies of the image (at 12 MP 0.1 s against 0.35 s in numpy).
    colour = colorize(heatmap) if colour is None else colour
    out = cv2.blendLinear(dimmed, colour, np.float32(1.0) - alpha, alpha)
    if mask.any():
        contours, _ = cv2.findContours(
            mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        thickness = max(1, round(min(rgb.shape[:2]) / 300))
        cv2.drawContours(out, contours, -1, (0, 255, 255), thickness)
    return out


def prepare_folder(folder: Path) -> Path | None:
    """Make the output folder (and its parents).

    Returns:
        The topmost folder this made (``folder`` or a parent), None when ``folder`` existed:
        what :func:`remove_unused_folder` may take away again.

    Raises:
        OutputError: it is a file, cannot be made, or is not writable.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"cannot write to {folder}: it is a file, not a folder")
    made = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        made = candidate
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot_write(folder, exc) from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {folder}: permission denied or read-only")
    return made


def remove_unused_folder(folder: Path, made: Path | None, log: Path | None = None) -> None:
    """After a run refused before its first image: remove ``log`` when it is empty, then the
    folders :func:`prepare_folder` made (``made`` down to ``folder``) that are still empty, so
    a refused command leaves nothing behind. Anything with content stays."""
    if log is not None:
        try:
            if log.stat().st_size == 0:
                log.unlink()
        except OSError:
            pass
    if made is None:
        return
    folder = Path(folder)
    for candidate in (folder, *folder.parents):
        try:
            candidate.rmdir()  # only succeeds when empty
        except OSError:
            return
        if candidate == made:
            return


def remove_stale_temporaries(targets: Iterable[Path]) -> int:
    """Remove the temporary files a killed writer left for any of ``targets`` (``.<name>.
    <random>.tmp`` beside them); returns how many. Each folder is listed once."""
    by_folder: dict[Path, set[str]] = {}
    for t in targets:
        by_folder.setdefault(Path(t).parent, set()).add(Path(t).name)
    removed = 0
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            target = name[1:-4].rpartition(".")[0]
            if target in names:
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError:
                    pass
    return removed


def output_paths(stem_path: Path) -> dict[str, Path]:
    """``{"mask", "heatmap", "overlay", "reliability", "json"}`` -> ``<stem>.mask.png`` ...
    ``<stem>.json`` (``reliability`` is written only by methods that make it)."""
    return {
        kind: stem_path.with_name(stem_path.name + suffix)
        for kind, suffix in zip(("mask", "heatmap", "overlay", *MAP_OUTPUTS, "json"),
                                OUTPUT_SUFFIXES, strict=True)
    }


def discard_outputs(stem_path: Path) -> None:
    """Remove the per-image files of ``stem_path`` and any temporary file left for them (by a
    killed process): an image whose set is not complete has none of its files."""
    for path in output_paths(stem_path).values():
        path.unlink(missing_ok=True)
    folder = stem_path.parent
    if folder.is_dir():
        for suffix in OUTPUT_SUFFIXES:
            for tmp in folder.glob(f".{_glob_escape(stem_path.name + suffix)}.*.tmp"):
                tmp.unlink(missing_ok=True)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_result_files(
    stem_path: Path, rgb: np.ndarray, heatmap: np.ndarray, mask: np.ndarray, record: dict,
    maps: dict[str, np.ndarray] | None = None, threads: int = 1,
    kinds: Iterable[str] = IMAGE_OUTPUTS,
) -> dict[str, Any]:
    """Write ``<stem>.mask.png``, ``.heatmap.png``, ``.overlay.png`` (and ``.<name>.png`` for
    each of :data:`MAP_OUTPUTS` in ``maps``), those of them named in ``kinds``, and ``.json``.
    An earlier run's PNG of a kind not written now is removed: the set on disk is the one the
    JSON lists.

    The JSON goes last (an earlier run's JSON is removed first) and holds the other files'
    paths and sha256 and ``"complete": true``, so its presence means the set is complete and
    ``--resume`` can check it. A failure removes what this call wrote.

    ``threads`` is how many PNGs are made at once.

    Returns:
        The record as written to the JSON.

    Raises:
        OutputError: a write failed (nothing of this image is left).
    """
    paths = output_paths(stem_path)
    wanted = set(kinds)
    encoders: dict[str, Callable[[], bytes]] = {
        "mask": lambda: png_bytes(mask.astype(np.uint8) * 255),
        "heatmap": lambda: heatmap_png(heatmap),
        "overlay": lambda: png_bytes(overlay(rgb, heatmap, mask), compress_level=1),
    }
    for name in MAP_OUTPUTS:
        if maps and name in maps:
            encoders[name] = functools.partial(_grey_png, maps[name])
    encoders = {k: f for k, f in encoders.items() if k in wanted}
    images = _run_all(encoders, threads)
    try:
        paths["json"].unlink(missing_ok=True)
        for kind in IMAGE_OUTPUTS:
            if kind not in images:
                paths[kind].unlink(missing_ok=True)
        for kind, data in images.items():
            write_bytes(paths[kind], data)
        record = dict(record)
        record["outputs"] = {k: str(paths[k]) for k in images}
        record["output_sha256"] = {k: hashlib.sha256(v).hexdigest() for k, v in images.items()}
        record["complete"] = True
        write_json(paths["json"], record)
    except BaseException as exc:
        discard_outputs(stem_path)
        if isinstance(exc, OSError):
            raise cannot_write(stem_path.parent, exc) from exc
        raise
    return record


def _grey_png(values: np.ndarray) -> bytes:
    return png_bytes(np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8), 1)


def _run_all(encoders: dict[str, Callable[[], bytes]], threads: int) -> dict[str, bytes]:
    """``{name: encode}`` -> ``{name: its PNG bytes}`` in the same order. OpenCV and Pillow's
    compressor release the GIL, so ``threads`` > 1 makes several at once (at 12 MP the
    overlay alone takes about a second)."""
    if threads <= 1 or len(encoders) <= 1:
        return {k: encode() for k, encode in encoders.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(encoders))) as pool:
        futures = {k: pool.submit(encode) for k, encode in encoders.items()}
        return {k: f.result() for k, f in futures.items()}


# --------------------------------------------------------------------------- results.jsonl


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a JSONL file, skipping lines that are not one JSON object (a torn last
    line from a killed writer). Returns ``(records, lines dropped)``; a missing file is empty.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return [], 0
    records, dropped = [], 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            dropped += 1
    return records, dropped


class ResultsLog:
    """``results.jsonl`` written record by record.

    Opening replaces the file (atomically) with ``initial`` records; each :meth:`append` is
    then one ``write`` of the whole line to an ``O_APPEND`` descriptor followed by ``fsync``,
    so a kill (even SIGKILL) or a power cut keeps every finished record. A write that fails
    part-way (a full disk) is cut back to the last whole line before :class:`OutputError` is
    raised.
    """

    def __init__(self, path: Path, initial: Iterable[dict[str, Any]] = (), sync: bool = True):
        self.path = Path(path)
        self.sync = sync
        with atomic_write(self.path, "w") as fh:
            for record in initial:
                fh.write(to_json(record) + "\n")
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise cannot_write(self.path, exc) from exc

    def write_line(self, line: str) -> None:
        """Append one line (no newline inside) and make it durable."""
        if self._fd is None:
            raise ValueError("results log is closed")
        data = (line + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            if self.sync:
                os.fsync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise cannot_write(self.path, exc) from exc

    def append(self, record: dict[str, Any]) -> None:
        self.write_line(to_json(record))

    def size(self) -> int:
        """Bytes in the file now (grows by whole lines; tells whether an append landed)."""
        if self._fd is None:
            raise ValueError("results log is closed")
        return os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
