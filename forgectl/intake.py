"""Forensic image intake: decode by content, keep what decoding loses, read JPEG internals.

Every method receives a :class:`ForensicImage`. Pixels are analysed on the *stored* grid:
EXIF orientation is reported, never applied, because compression traces live on the grid the
encoder saw.

JPEG internals (quantization tables, luminance DCT coefficients) come from ``jpegio`` (libjpeg's
own coefficient buffers) when it is installed, an optional extra that builds from source; else
the tables come from the headers and the coefficients are recomputed from libjpeg's decoded luma
(:func:`jpeg_reader`, :func:`_decoded_internals`). ``jpegio`` is C code that trusts its input,
so a file is first validated with a marker walk and a full Pillow decode.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import struct
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from forgectl.errors import InputError, UsageError, describe

#: Refuse larger images before decoding them (about 100 megapixels).
DEFAULT_MAX_PIXELS = 100_000_000
#: File name endings a folder walk treats as images (the content decides the format).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif",
     ".avif", ".heic", ".heif", ".hif"}
)
#: The formats :func:`detect_format` knows, in words, for error messages.
READABLE_FORMATS = "JPEG, PNG, TIFF, WebP, AVIF, HEIC, BMP or GIF"
#: How many leading bytes :func:`detect_format` needs (an ISO-BMFF ``ftyp`` box lists brands).
FORMAT_HEAD_BYTES = 64

# Pillow's own bomb check would fire with a different message; we check the size ourselves.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"II+\x00", 0, "TIFF"),
    (b"MM\x00+", 0, "TIFF"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"BM", 0, "BMP"),
)

# IJG (libjpeg) base tables in natural (row-major) order, Annex K of ITU-T T.81.
IJG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.int32,
)


# ISO-BMFF brands (the ``ftyp`` box) of still-image HEIF files. AVIF (AV1) is decoded by Pillow
# itself; HEIC (HEVC: what iPhones save by default) needs the optional pillow-heif package.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_HEIF_GENERIC_BRANDS = frozenset({b"mif1", b"msf1", b"mif2"})


def _heif_format(head: bytes) -> str | None:
    """``AVIF``, ``HEIF`` or None from an ISO-BMFF file's ``ftyp`` box (major brand first,
    then the compatible brands; MP4/MOV videos carry other brands and are not images)."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(head[:4], "big"), len(head))
    brands = [head[8:12]] + [head[i : i + 4] for i in range(16, end - 3, 4)]
    for brand in brands:
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIC_BRANDS:
            return "HEIF"
    return "HEIF" if any(b in _HEIF_GENERIC_BRANDS for b in brands) else None


def detect_format(head: bytes) -> str | None:
    """Return the image format named by the file's first bytes (give at least
    :data:`FORMAT_HEAD_BYTES`), or ``None``.

    Looks only at content; the file name is never consulted.
    """
    for magic, offset, name in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return name
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return _heif_format(head)


@functools.cache  # once per process; a failed import is not cached and fails again
def _register_heif_opener() -> None:
    """Let Pillow open HEIC through pillow-heif (an optional extra: its wheels bundle libheif
    and an HEVC decoder)."""
    try:
        import pillow_heif
    except ImportError as exc:
        raise InputError(
            "HEIC/HEIF image: reading it needs the optional pillow-heif package "
            "(pip install 'forgectl[heic]', or convert it to PNG first)"
        ) from exc
    pillow_heif.register_heif_opener()


def ijg_table(quality: int, base: np.ndarray = IJG_LUMA) -> np.ndarray:
    """The table libjpeg writes for ``quality`` in 1..100 (``jpeg_quality_scaling``)."""
    quality = int(min(max(quality, 1), 100))
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    table = (base * scale + 50) // 100
    return np.clip(table, 1, 255).astype(np.int32)


def estimate_ijg_quality(luma_table: np.ndarray) -> tuple[int, bool]:
    """Closest IJG quality for a luminance table, and whether it matches that table exactly.

    Args:
        luma_table: (8, 8) quantization steps in natural order.

    Returns:
        ``(quality, exact)``; ``exact`` is False for custom (camera or editor) tables.
    """
    table = np.asarray(luma_table, dtype=np.int64).reshape(8, 8)
    errors = [np.abs(ijg_table(q).astype(np.int64) - table).sum() for q in range(1, 101)]
    best = int(np.argmin(errors))
    return best + 1, bool(errors[best] == 0)


@dataclass(frozen=True)
class JpegData:
    """What the JPEG file itself stores, as libjpeg reads it (through ``jpegio`` or its decoder).

    Attributes:
        coefficients: one int32 array per component (Y, Cb, Cr, ...), shape
            ``(8 * blocks_high, 8 * blocks_wide)`` of that component. The 8x8 block at
            ``[8*i:8*i+8, 8*j:8*j+8]`` holds the quantized DCT coefficients of block row ``i``,
            column ``j`` in natural order (``[u, v]``: vertical then horizontal frequency).
            For Y, block ``(i, j)`` covers pixels ``[8i:8i+8, 8j:8j+8]`` of the image: the grid
            is aligned to the image origin. Arrays may extend past the image to the MCU border.
        quant_tables: for each component, the (8, 8) int32 table it was quantized with, in
            natural order (the same layout as the coefficient blocks).
        sampling: ``(h, v)`` sampling factors per component.
        subsampling: ``"4:4:4"``, ``"4:2:2"``, ``"4:2:0"``, ``"4:1:1"``, ``"gray"`` or ``"other"``.
        progressive: True for a progressive-mode file.
        quality: estimated IJG quality of the Y table (1..100).
        standard_tables: True when the Y table is exactly an IJG-scaled table.
        reader: ``"jpegio"`` (libjpeg's coefficient buffers) or ``"decoder"`` (jpegio not
            installed, or not chosen: :func:`jpeg_reader`; Y only, recomputed from the decoded
            luma: :func:`_decoded_internals`).
        source: ``"file"`` (read from the JPEG file) or ``"pixels"`` (a PNG/TIFF/... whose
            pixels still carry an earlier JPEG save: Y only, table and coefficients inferred by
            :mod:`forgectl.analysis.jpeg_history`; ``quality`` is then that of the lattice the
            pixels show, an earlier save's when the table is all ones).
    """

    coefficients: tuple[np.ndarray, ...]
    quant_tables: tuple[np.ndarray, ...]
    sampling: tuple[tuple[int, int], ...]
    subsampling: str
    progressive: bool
    quality: int
    standard_tables: bool
    source: str = "file"
    reader: str = "jpegio"

    @property
    def y_quant(self) -> np.ndarray:
        """(8, 8) int32 luminance quantization table."""
        return self.quant_tables[0]

    def y_coefficients(self, height: int, width: int) -> np.ndarray:
        """(8*ceil(H/8), 8*ceil(W/8)) int32 Y coefficients cropped to the image's own blocks."""
        bh, bw = -(-height // 8), -(-width // 8)
        return self.coefficients[0][: 8 * bh, : 8 * bw]

    def facts(self) -> dict[str, Any]:
        """JSON-ready summary (tables as nested lists)."""
        return {
            "source": self.source,
            "reader": self.reader,
            "quality_estimate": self.quality,
            "standard_ijg_tables": self.standard_tables,
            "subsampling": self.subsampling,
            "progressive": self.progressive,
            "components": len(self.quant_tables),
            "quant_tables": [t.tolist() for t in self.quant_tables],
        }


@dataclass
class ForensicImage:
    """A decoded image plus the facts a forensic method needs.

    Attributes:
        rgb: (H, W, 3) uint8 pixels of the stored grid (no EXIF rotation applied).
        name: display name (file path, or a label for in-memory images).
        path: source file, or None for in-memory images.
        sha256: hex digest of the file's bytes (of the encoded bytes for in-memory images).
        format: ``JPEG``, ``PNG``, ``TIFF``, ``WEBP``, ``AVIF``, ``HEIF`` (HEIC), ``BMP``,
            ``GIF`` or ``RAW`` (from an array).
        mode: original Pillow mode (``RGB``, ``L``, ``RGBA``, ``I;16``, ``CMYK``, ``P`` ...).
        bit_depth: bits per sample before conversion to 8 bits.
        has_alpha: the file had an alpha channel (dropped here, reported in the JSON).
        has_icc: an ICC profile is embedded (not applied).
        orientation: EXIF orientation tag (1..8) if present; never applied.
        exif: a few EXIF text fields (make, model, software, datetime) when present.
        has_thumbnail: an EXIF thumbnail is embedded.
        n_frames: frames in the file (only the first is analysed).
        jpeg: JPEG internals for JPEG files; for other formats None, or (once a JPEG-domain
            method looked) what the pixels keep of an earlier JPEG save (``jpeg.source ==
            "pixels"``).
        file_size: size of the file in bytes.
        pixel_history: for a non-JPEG input a JPEG-domain method looked at, the facts of that
            search (found or not, evidence, grid offset), else None.
        jpeg_grid_view: when the pixels carry an earlier JPEG save on a grid offset from the
            image's origin (cropped after that save): the image padded at the top and left
            (edge pixels repeated) so that grid starts at its origin,
            with the JPEG data read from the pixels; JPEG methods run on it and crop back.
    """

    rgb: np.ndarray
    name: str
    path: Path | None = None
    sha256: str = ""
    format: str = "RAW"
    mode: str = "RGB"
    bit_depth: int = 8
    has_alpha: bool = False
    has_icc: bool = False
    orientation: int | None = None
    exif: dict[str, str] = field(default_factory=dict)
    has_thumbnail: bool = False
    n_frames: int = 1
    jpeg: JpegData | None = None
    file_size: int = 0
    pixel_history: dict[str, Any] | None = None
    pixel_history_checked: bool = False
    jpeg_grid_view: ForensicImage | None = None

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def is_jpeg(self) -> bool:
        return self.jpeg is not None

    def facts(self) -> dict[str, Any]:
        """JSON-ready description of the input (no pixel data)."""
        out: dict[str, Any] = {
            "path": str(self.path) if self.path else self.name,
            "sha256": self.sha256,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": self.file_size,
            "mode": self.mode,
            "bit_depth": self.bit_depth,
            "has_alpha": self.has_alpha,
            "has_icc_profile": self.has_icc,
            "exif_orientation": self.orientation,
            "exif": dict(self.exif),
            "has_exif_thumbnail": self.has_thumbnail,
            "frames": self.n_frames,
        }
        if self.jpeg is not None:
            out["jpeg"] = self.jpeg.facts()
        elif self.jpeg_grid_view is not None and self.jpeg_grid_view.jpeg is not None:
            out["jpeg"] = self.jpeg_grid_view.jpeg.facts()
        if self.pixel_history is not None:
            out["jpeg_history_from_pixels"] = dict(self.pixel_history)
        return out


# --------------------------------------------------------------------------- validation


def _check_jpeg_structure(data: bytes) -> None:
    """Walk the JPEG markers up to the scan and require an EOI after it.

    libjpeg (inside jpegio) aborts or reads garbage on broken headers; catching them here keeps
    the process alive and the message clear.
    """
    n = len(data)
    pos = 2
    seen_sof = seen_sos = False
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise InputError("corrupt JPEG: bad marker structure")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker == 0xD9:
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > n:
            raise InputError("truncated JPEG: a header segment runs past the end of the file")
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE):
            seen_sof = True
            if marker not in (0xC0, 0xC1, 0xC2):
                raise InputError("unsupported JPEG: lossless, hierarchical or arithmetic coding")
        if marker == 0xDA:
            seen_sos = True
            break
        pos += 2 + length
    if not (seen_sof and seen_sos):
        raise InputError("corrupt JPEG: no frame or scan header")
    # Trailing garbage after EOI is common (camera data); a missing EOI means truncation.
    if data.rfind(b"\xff\xd9") < pos:
        raise InputError("truncated JPEG: no end-of-image marker")


class _Captured:
    text = ""


@contextmanager
def _native_stderr() -> Iterator[_Captured]:
    """Capture what C libraries (libjpeg, libtiff) print on fd 2 while decoding: warnings
    about damaged data are evidence, not terminal noise. ``.text`` is set on exit."""
    captured = _Captured()
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            captured.text = log.read(1 << 16).decode("latin-1", "replace")


def _native_reason(text: str) -> str | None:
    """The first error (not warning) a C decoder printed, without the temporary file name
    libtiff puts in front of some."""
    for line in text.splitlines():
        line = line.strip()
        if line and "warning" not in line.lower():
            head, sep, rest = line.partition(": ")
            line = rest if sep and head.endswith((".tif", ".tiff", ".tmp")) else line
            return line if len(line) <= 200 else line[:197] + "..."
    return None


def _subsampling_name(sampling: list[tuple[int, int]]) -> str:
    if len(sampling) == 1:
        return "gray"
    (h0, v0), rest = sampling[0], sampling[1:]
    if any(s != (1, 1) for s in rest):
        return "other"
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (4, 1): "4:1:1"}.get(
        (h0, v0), "other"
    )


#: Environment variable choosing the JPEG reader: ``jpegio``, ``decoder`` or ``auto`` (unset:
#: jpegio when it is installed). Forcing ``decoder`` makes an install with jpegio give the
#: same outputs as one without it (docs/OUTPUTS.md, ``jpeg.reader``).
JPEG_READER_ENV = "FORGECTL_JPEG_READER"
JPEG_READERS = ("auto", "jpegio", "decoder")


def jpeg_reader() -> str:
    """The JPEG reader this process uses: ``"jpegio"`` or ``"decoder"``.

    Read from :data:`JPEG_READER_ENV` at each call. ``auto`` (or unset) takes jpegio when it
    can be imported, else the decoder.

    Raises:
        UsageError: an unknown value, or ``jpegio`` asked for where it is not installed.
    """
    choice = (os.environ.get(JPEG_READER_ENV) or "auto").strip().lower()
    if choice not in JPEG_READERS:
        raise UsageError(f"{JPEG_READER_ENV}={choice!r}: expected one of "
                         f"{', '.join(JPEG_READERS)}")
    if choice == "decoder":
        return "decoder"
    try:
        import jpegio  # noqa: F401  # C extension; imported only when a JPEG is read
    except ImportError:
        if choice == "jpegio":
            raise UsageError(f"{JPEG_READER_ENV}=jpegio, but jpegio is not installed: "
                             "pip install 'forgectl[jpegio]' (needs a C compiler)") from None
        return "decoder"
    return "jpegio"


def _read_jpeg_internals(path: str) -> JpegData | None:
    """The file's JPEG internals through jpegio, or (:func:`jpeg_reader`: jpegio is an optional
    dependency that builds from source) recomputed from the decoder: :func:`_decoded_internals`.
    """
    if jpeg_reader() == "decoder":
        return _decoded_internals(path)
    import jpegio

    # libjpeg reports damaged entropy-coded data only as warnings on fd 2 and goes on with
    # garbage; capture them and refuse the file, since traces in corrupt data mean nothing.
    with _native_stderr() as log:
        try:
            jpg = jpegio.read(path)
        except Exception as exc:  # jpegio raises plain exceptions on libjpeg errors
            raise InputError(f"corrupt JPEG: {describe(exc)}") from exc
    _refuse_damaged(log.text)
    # jpegio's arrays view memory owned by the reader object: copy before it is freed.
    coefs = tuple(np.array(c, dtype=np.int32, copy=True) for c in jpg.coef_arrays)
    tables = [np.array(t, dtype=np.int32, copy=True).reshape(8, 8) for t in jpg.quant_tables]
    comps = jpg.comp_info
    per_comp = tuple(tables[int(c.quant_tbl_no)] for c in comps)
    sampling = [(int(c.h_samp_factor), int(c.v_samp_factor)) for c in comps]
    quality, exact = estimate_ijg_quality(per_comp[0])
    return JpegData(
        coefficients=coefs,
        quant_tables=per_comp,
        sampling=tuple(sampling),
        subsampling=_subsampling_name(sampling),
        progressive=bool(jpg.progressive_mode),
        quality=quality,
        standard_tables=exact,
    )


def _refuse_damaged(libjpeg_messages: str) -> None:
    """Raise on libjpeg's warnings about damaged entropy-coded data: libjpeg reports them only
    on fd 2 and goes on with garbage, and traces in corrupt data mean nothing."""
    for line in libjpeg_messages.splitlines():
        if line.startswith("Corrupt JPEG data") or "Premature end" in line:
            raise InputError(f"corrupt JPEG: {line.strip()}")


#: Block rows recomputed at once by :func:`_decoded_internals` (bounds its float copy).
_DECODED_BAND_BLOCKS = 64


def _decoded_internals(path: str) -> JpegData | None:
    """JPEG internals without jpegio: tables, sampling and mode from the file's headers
    (Pillow), and the Y coefficients recomputed as the rounded orthonormal 8x8 DCT (JPEG's
    FDCT) of libjpeg's decoded luma minus 128, divided by the table. Decoding rounds and clips
    each pixel, so a coefficient can come out one step off where a block clips or a step is
    1, and partial blocks at the right and bottom edges are guessed by repeating the edge:
    on casia1-dev's JPEGs 99.7 % of the coefficients equal jpegio's (docs/OUTPUTS.md). Only
    Y is recomputed (the methods read Y; upsampled chroma cannot be undone exactly). None for
    colour spaces other than YCbCr and grey (CMYK, YCCK): the file is then analysed as pixels.
    """
    # The transform of analysis.jpeg.block_dct, which intake may not import (it sits a layer
    # up), in float64: the quotients are rounded back onto the lattice here.
    import cv2
    from scipy.fft import dctn

    with Image.open(path) as img:  # the headers only: Pillow decodes no pixels here
        if img.mode not in ("RGB", "L"):
            return None
        size = img.size
        tables = {k: np.asarray(v, np.int32).reshape(8, 8) for k, v in img.quantization.items()}
        layer = list(getattr(img, "layer", None) or [("1", 1, 1, min(tables))])
        progressive = bool(img.info.get("progressive") or img.info.get("progression"))
    # libjpeg's decoded luma: grey output of a YCbCr file is its Y plane, before any colour
    # conversion (the same bytes as Pillow's draft("YCbCr") Y on all of casia1-dev). OpenCV's
    # libjpeg, unlike Pillow's, reports damaged entropy-coded data on fd 2 as jpegio's does.
    with _native_stderr() as log:
        luma = cv2.imdecode(np.fromfile(path, np.uint8),
                            cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    _refuse_damaged(log.text)
    if luma is None or luma.shape != (size[1], size[0]):
        raise InputError("corrupt JPEG: libjpeg could not decode its luminance")
    per_comp = tuple(tables[int(c[3])] for c in layer)
    sampling = [(int(c[1]), int(c[2])) for c in layer]
    h, w = luma.shape
    bh, bw = -(-h // 8), -(-w // 8)
    y_table = per_comp[0].astype(np.float64)
    coef = np.empty((8 * bh, 8 * bw), np.int32)
    for top in range(0, bh, _DECODED_BAND_BLOCKS):
        rows = min(_DECODED_BAND_BLOCKS, bh - top)
        band = luma[8 * top: 8 * (top + rows)].astype(np.float64) - 128.0
        band = np.pad(band, ((0, 8 * rows - band.shape[0]), (0, 8 * bw - w)), mode="edge")
        blocks = band.reshape(rows, 8, bw, 8).transpose(0, 2, 1, 3)
        q = np.rint(dctn(blocks, axes=(2, 3), norm="ortho") / y_table)
        coef[8 * top: 8 * (top + rows)] = q.transpose(0, 2, 1, 3).reshape(8 * rows, 8 * bw)
    quality, exact = estimate_ijg_quality(per_comp[0])
    return JpegData(
        coefficients=(coef,),
        quant_tables=per_comp,
        sampling=tuple(sampling),
        subsampling=_subsampling_name(sampling),
        progressive=progressive,
        quality=quality,
        standard_tables=exact,
        reader="decoder",
    )


def _exif_facts(img: Image.Image) -> tuple[int | None, dict[str, str], bool]:
    try:
        exif = img.getexif()
    except Exception:  # malformed EXIF must not stop the analysis of pixels
        return None, {}, False
    orientation = exif.get(0x0112)
    fields = {"make": 0x010F, "model": 0x0110, "software": 0x0131, "datetime": 0x0132}
    text = {}
    for key, tag in fields.items():
        value = exif.get(tag)
        if isinstance(value, bytes):
            value = value.decode("latin-1", "replace")
        if value:
            text[key] = str(value).strip("\x00 ").strip()
    raw = img.info.get("exif", b"")
    # An EXIF thumbnail is a complete JPEG inside APP1, after the 6-byte "Exif\0\0" header.
    thumb = isinstance(raw, bytes) and raw.find(b"\xff\xd8\xff", 6) >= 0
    try:
        orient = int(orientation) if orientation is not None else None
    except (TypeError, ValueError):
        orient = None
    return orient, text, bool(thumb)


def _to_rgb8(img: Image.Image, data: bytes) -> tuple[np.ndarray, int, bool]:
    """Convert any Pillow image to (H, W, 3) uint8; return bit depth and alpha presence."""
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in img.info
    )
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I") or mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        bit_depth = 16
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(arr[:, :, None], 3, axis=2), bit_depth, has_alpha
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return np.repeat(np.round(arr).astype(np.uint8)[:, :, None], 3, axis=2), 32, has_alpha
    bit_depth = 1 if mode == "1" else 8
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb), bit_depth, has_alpha


def _decode_16bit_colour(data: bytes) -> np.ndarray | None:
    """OpenCV reads 16-bit RGB PNG/TIFF that Pillow cannot; returns (H, W, 3) uint16 RGB."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    arr = arr[:, :, :3][:, :, ::-1]  # BGR(A) -> RGB
    return arr


def image_from_bytes(
    data: bytes,
    name: str = "<bytes>",
    path: Path | None = None,
    max_pixels: int | None = None,
    read_jpeg: bool = True,
) -> ForensicImage:
    """Decode an encoded image (any supported format) into a :class:`ForensicImage`.

    Raises:
        InputError: empty, unknown format, over the pixel limit, truncated or corrupt.
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else int(max_pixels)
    if not data:
        raise InputError("empty file (0 bytes)")
    fmt = detect_format(data[:FORMAT_HEAD_BYTES])
    if fmt is None:
        raise InputError(f"not an image: content is not {READABLE_FORMATS}")
    if fmt == "JPEG":
        _check_jpeg_structure(data)
    elif fmt == "HEIF":
        _register_heif_opener()
    try:
        with warnings.catch_warnings(), _native_stderr() as native:
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width <= 0 or height <= 0:
                raise InputError("image has no pixels")
            if width * height > limit:
                raise InputError(
                    f"image is {width}x{height} ({width * height / 1e6:.0f} MP), over the "
                    f"limit of {limit / 1e6:.0f} MP (raise it with --max-pixels)"
                )
            n_frames = int(getattr(img, "n_frames", 1) or 1)
            img.seek(0)
            img.load()
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types for broken data
        # libtiff says what went wrong on stderr; Pillow only "decoder error -2".
        reason = _native_reason(native.text) or _decode_reason(exc)
        raise InputError(f"cannot decode {fmt}: {reason}") from exc
    mode = img.mode
    rgb, bit_depth, has_alpha = _to_rgb8(img, data)
    if fmt in ("PNG", "TIFF") and mode in ("RGB", "RGBA"):
        # Pillow reduces 16-bit colour PNG/TIFF to 8 bits silently; detect and keep the depth.
        deep = _decode_16bit_colour(data) if _maybe_16bit_colour(img, data, fmt) else None
        if deep is not None and deep.shape[:2] == rgb.shape[:2]:
            rgb = np.clip(np.round(deep.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)
            rgb = np.ascontiguousarray(rgb)
            bit_depth = 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on damaged EXIF; pixels still count
        orientation, exif_text, thumb = _exif_facts(img)

    jpeg = None
    if fmt == "JPEG" and read_jpeg:
        if path is not None:
            jpeg = _read_jpeg_internals(str(path))
        else:
            fd, tmp = tempfile.mkstemp(suffix=".jpg")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                jpeg = _read_jpeg_internals(tmp)
            finally:
                os.unlink(tmp)
        bh, bw = -(-height // 8), -(-width // 8)
        y = jpeg.coefficients[0] if jpeg is not None else None
        if y is not None and (y.shape[0] < 8 * bh or y.shape[1] < 8 * bw):
            raise InputError("corrupt JPEG: coefficient planes smaller than the image")

    return ForensicImage(
        rgb=rgb,
        name=name,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        mode=mode,
        bit_depth=bit_depth,
        has_alpha=has_alpha,
        has_icc=bool(img.info.get("icc_profile")),
        orientation=orientation,
        exif=exif_text,
        has_thumbnail=thumb,
        n_frames=n_frames,
        jpeg=jpeg,
        file_size=len(data),
    )


def _decode_reason(exc: BaseException) -> str:
    """Why Pillow failed, in words (its "cannot identify image file" names a Python object)."""
    if isinstance(exc, Image.UnidentifiedImageError):
        return "the header is corrupt or a variant Pillow cannot read"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode it"
    return describe(exc)


def _maybe_16bit_colour(img: Image.Image, data: bytes, fmt: str) -> bool:
    if fmt == "PNG":
        # IHDR bit depth is byte 24 of a PNG file.
        return len(data) > 24 and data[24] == 16
    bits = img.tag_v2.get(258) if hasattr(img, "tag_v2") else None
    if isinstance(bits, tuple | list):
        return any(int(b) > 8 for b in bits)
    return bits is not None and int(bits) > 8


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> ForensicImage:
    """Read and decode an image file. Never modifies the file.

    Raises:
        InputError: missing, unreadable, not an image, too large, truncated or corrupt.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file: {p}")
    if p.is_dir():
        raise InputError(f"is a folder, not an image: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from exc
    return image_from_bytes(data, name=str(p), path=p, max_pixels=max_pixels)


def encode_jpeg(rgb: np.ndarray, quality: int, subsampling: int = 2, **kwargs: Any) -> bytes:
    """Encode (H, W, 3) uint8 RGB as a baseline JPEG with libjpeg's IJG tables (via Pillow).

    ``subsampling``: Pillow's code, 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0.
    """
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(
        buf, format="JPEG", quality=int(quality), subsampling=subsampling, **kwargs
    )
    return buf.getvalue()


def image_from_array(
    rgb: np.ndarray, name: str = "<array>", jpeg_quality: int | None = None
) -> ForensicImage:
    """Wrap pixels as a ForensicImage; with ``jpeg_quality`` they are first really JPEG-encoded
    (so the result has true DCT coefficients and tables, and decoded pixels to match)."""
    arr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if jpeg_quality is not None:
        return image_from_bytes(encode_jpeg(arr, jpeg_quality), name=name)
    img = ForensicImage(rgb=arr, name=name, sha256=hashlib.sha256(arr.tobytes()).hexdigest())
    img.file_size = arr.nbytes
    return img
