"""A malformed-input corpus, generated: broken, odd and hostile image files for fuzzing intake.

:func:`build` writes about 570 small files into a folder and returns one :class:`Sample` per
file, saying what a correct `forgectl localize` must do with it:

- ``"ok"``: a valid (if unusual) image: it must be analysed;
- ``"error"``: it must be refused with a one-line error (empty, not an image, a bomb);
- ``"any"``: damaged data: analysed or refused, but never a crash, a hang or a traceback.

Families (``Sample.family``): ``truncated``, ``bitflip``, ``splice``, ``zerofill`` (mutations of
JPEG, PNG, TIFF, WebP, BMP and GIF files), ``zero-byte``, ``wrong-ext``, ``not-image``,
``bomb-declared`` (a small file whose header claims a huge size), ``bomb-real`` (a valid file
that decodes to a huge image from a few bytes: hand-made in every format), ``variant`` (CMYK,
YCCK, 16-bit, float, palette with transparency, progressive, restart markers, multi-frame, ...),
``size`` (1x1, 7x9, 10000x3, 3x10000), ``exif`` (broken EXIF offsets), ``arithmetic`` (JPEG
frames declaring arithmetic coding: Pillow/libjpeg cannot write a real one).

Everything is deterministic (``seed``) and takes about a second; used by
tests/test_malformed.py (a fast subset of methods) and benchmarks/malformed_corpus.py (every
method on every file).
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from forgectl.synth.scenes import natural_image

#: The size of a real bomb: over the default 100 MP limit (header check), 144 MP.
BOMB_SIDE = 12_000
#: The size a declared bomb's header claims.
DECLARED_SIDE = 60_000


@dataclass(frozen=True)
class Sample:
    """One corpus file: ``name`` in the corpus folder, its family, what must happen."""

    name: str
    family: str
    expect: str


# --------------------------------------------------------------------------- valid bases


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    if min(h, w) >= 16:
        return natural_image(h, w, seed=seed)
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _cv2_png16(rgb16: np.ndarray, ext: str) -> bytes:
    import cv2

    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb16[:, :, ::-1]))
    assert ok
    return buf.tobytes()


def _ycck_jpeg(rgb: np.ndarray) -> bytes:
    """A 4-component JPEG whose Adobe marker says YCCK (transform 2): Pillow writes CMYK with
    transform 0, so the component values are made YCCK here and the marker is patched."""
    cmy = 255 - rgb.astype(np.float64)
    k = cmy.min(axis=2, keepdims=True) * 0.5
    r, g, b = [255 - c for c in np.moveaxis(cmy, 2, 0)]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    ycck = np.stack([y, cb, cr, k[:, :, 0]], axis=2)
    img = Image.frombytes("CMYK", rgb.shape[1::-1],
                          np.clip(np.round(ycck), 0, 255).astype(np.uint8).tobytes())
    data = bytearray(_save(img, "JPEG", quality=90))
    pos = data.find(b"\xff\xee")
    assert pos >= 0 and data[pos + 4: pos + 9] == b"Adobe"
    data[pos + 15] = 2  # APP14: marker, length, "Adobe", version, flags0, flags1, transform
    return bytes(data)


def valid_bases(seed: int = 0) -> dict[str, bytes]:
    """Valid files by name (the extension names the format)."""
    rgb = _rgb(48, 64, seed)
    rgb2 = _rgb(56, 40, seed + 1)
    img = Image.fromarray(rgb)
    grey = img.convert("L")
    pal = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    out: dict[str, bytes] = {
        "base.jpg": _save(img, "JPEG", quality=85),
        "base-progressive.jpg": _save(img, "JPEG", quality=85, progressive=True),
        "base-restart.jpg": _save(img, "JPEG", quality=85, restart_marker_blocks=2),
        "base-444.jpg": _save(img, "JPEG", quality=95, subsampling=0),
        "base-grey.jpg": _save(grey, "JPEG", quality=80),
        "base-other.jpg": _save(Image.fromarray(rgb2), "JPEG", quality=70),
        "base-cmyk.jpg": _save(img.convert("CMYK"), "JPEG", quality=90),
        "base-ycck.jpg": _ycck_jpeg(rgb),
        "base-optimized.jpg": _save(img, "JPEG", quality=75, optimize=True),
        "base-icc.jpg": _save(img, "JPEG", quality=85, icc_profile=b"not really an ICC"),
        "base-trailing.jpg": _save(img, "JPEG", quality=85) + b"camera junk\xff\xd8\x00" * 9,
        "base.png": _save(img, "PNG"),
        "base-palette-trns.png": _save(pal, "PNG", transparency=3),
        "base-16bit.png": _save(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257), "PNG"),
        "base-16bit-rgb.png": _cv2_png16(rgb.astype(np.uint16) * 257, ".png"),
        "base-rgba.png": _save(img.convert("RGBA"), "PNG"),
        "base-la.png": _save(img.convert("LA"), "PNG"),
        "base-1bit.png": _save(img.convert("1"), "PNG"),
        "base-other.png": _save(Image.fromarray(rgb2), "PNG"),
        "base.tif": _save(img, "TIFF"),
        "base-lzw.tif": _save(img, "TIFF", compression="tiff_lzw"),
        "base-deflate.tif": _save(img, "TIFF", compression="tiff_adobe_deflate"),
        "base-jpeg.tif": _save(img, "TIFF", compression="jpeg"),
        "base-float.tif": _save(Image.fromarray(rgb[:, :, 1].astype(np.float32) / 255.0),
                                "TIFF"),
        "base-16bit.tif": _save(Image.fromarray(rgb[:, :, 2].astype(np.uint16) * 257),
                                "TIFF"),
        "base-16bit-rgb.tif": _cv2_png16(rgb.astype(np.uint16) * 257, ".tiff"),
        "base-cmyk.tif": _save(img.convert("CMYK"), "TIFF"),
        "base-1bit.tif": _save(img.convert("1"), "TIFF"),
        "base-int32.tif": _save(Image.fromarray(rgb[:, :, 0].astype(np.int32) * 1000),
                                "TIFF"),
        "base-multipage.tif": _save(img, "TIFF", save_all=True,
                                    append_images=[grey.convert("RGB")]),
        "base.webp": _save(img, "WEBP", quality=80),
        "base-lossless.webp": _save(img, "WEBP", lossless=True),
        "base-alpha.webp": _save(img.convert("RGBA"), "WEBP", quality=80),
        "base.bmp": _save(img, "BMP"),
        "base-palette.bmp": _save(pal, "BMP"),
        "base.gif": _save(pal, "GIF"),
        "base-trns.gif": _save(pal, "GIF", transparency=2),
        "base-animated.gif": _save(pal, "GIF", save_all=True,
                                   append_images=[grey.convert("P")], duration=50),
    }
    return out


def size_variants(seed: int = 0) -> dict[str, bytes]:
    """1x1, 7x9, 10000x3 and 3x10000 in every format."""
    out = {}
    for h, w in ((1, 1), (7, 9), (3, 10000), (10000, 3)):
        img = Image.fromarray(_rgb(h, w, seed + h))
        for fmt, ext, kw in (("JPEG", "jpg", {"quality": 90}), ("PNG", "png", {}),
                             ("TIFF", "tif", {}), ("WEBP", "webp", {"quality": 90}),
                             ("BMP", "bmp", {}), ("GIF", "gif", {})):
            src = img.convert("P") if fmt == "GIF" else img
            out[f"size-{w}x{h}.{ext}"] = _save(src, fmt, **kw)
    return out


# --------------------------------------------------------------------------- mutations


def _mutations(data: bytes, other: bytes, rng: random.Random) -> dict[str, bytes]:
    """33 damaged copies of ``data``: 9 truncations, 14 bit flips, 4 splices, 6 zero fills."""
    n = len(data)
    out: dict[str, bytes] = {}
    for i, cut in enumerate([8, 20, n // 50, n // 10, n // 4, n // 2, 3 * n // 4, n - 16, n - 1]):
        out[f"truncated-{i}"] = data[: max(1, min(cut, n - 1))]
    for i in range(14):
        buf = bytearray(data)
        flips = 1 if i < 4 else rng.randint(2, 16)
        for _ in range(flips):
            # The first flips hit headers (where parsers decide sizes), the rest anywhere.
            pos = rng.randrange(min(n, 96)) if i % 2 == 0 else rng.randrange(n)
            buf[pos] ^= 1 << rng.randrange(8)
        out[f"bitflip-{i}"] = bytes(buf)
    for i in range(4):
        a = rng.randrange(n // 4, n)
        b = rng.randrange(len(other) // 4, len(other))
        out[f"splice-{i}"] = data[:a] + other[b:] if i % 2 == 0 else data[:a] + data[a // 2:]
    for i in range(6):
        buf = bytearray(data)
        if i == 5:
            start, length = n // 2, n - n // 2
        else:
            start = rng.randrange(n)
            length = rng.choice([8, 32, 256, 4096])
        buf[start: start + length] = bytes(len(buf[start: start + length]))
        out[f"zerofill-{i}"] = bytes(buf)
    return out


#: Which bases are mutated, and the other file spliced into each.
MUTATED = (
    ("base.jpg", "base-other.jpg"),
    ("base-progressive.jpg", "base.png"),
    ("base-restart.jpg", "base-other.jpg"),
    ("base-444.jpg", "base-grey.jpg"),
    ("base.png", "base-other.png"),
    ("base-palette-trns.png", "base.png"),
    ("base-16bit.png", "base.jpg"),
    ("base.tif", "base-lzw.tif"),
    ("base-lzw.tif", "base.tif"),
    ("base-deflate.tif", "base.png"),
    ("base.webp", "base-lossless.webp"),
    ("base-lossless.webp", "base.webp"),
    ("base.bmp", "base-palette.bmp"),
    ("base.gif", "base-trns.gif"),
)


# --------------------------------------------------------------------------- bombs


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(
        ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit grey PNG of side x side pixels (all black) in a few kB."""
    row = bytes(1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid baseline grey JPEG of side x side pixels (mid grey): Huffman tables with one
    1-bit code each make every 8x8 block 2 bits (DC difference 0, end of block)."""
    side = side // 32 * 32
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, side, side, 1) + b"\x01\x11\x00"
    one_code = bytes([1] + [0] * 15)
    dht = (b"\xff\xc4" + struct.pack(">H", 2 + 2 * 18) + b"\x00" + one_code + b"\x00"
           + b"\x10" + one_code + b"\x00")
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x00\x3f\x00"
    blocks = (side // 8) ** 2
    return b"\xff\xd8" + dqt + sof + dht + sos + bytes(blocks * 2 // 8) + b"\xff\xd9"


def tiff_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid 1-bit TIFF of side x side pixels, one Deflate strip of zeros."""
    row = bytes((side + 7) // 8)
    comp = zlib.compressobj(9)
    strip = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    entries = [(256, 4, side), (257, 4, side), (258, 3, 1), (259, 3, 8), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, side), (279, 4, len(strip))]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, typ, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HI", value, 0)[:4] if typ == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, typ, 1) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + ifd + strip


class _Bits:
    """LSB-first bit writer (WebP lossless, GIF LZW)."""

    def __init__(self) -> None:
        self.acc = self.n = 0
        self.out = bytearray()

    def put(self, value: int, bits: int) -> None:
        self.acc |= value << self.n
        self.n += bits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def done(self) -> bytes:
        if self.n:
            self.out.append(self.acc & 0xFF)
            self.acc = self.n = 0
        return bytes(self.out)


def webp_bomb(side: int = 16383) -> bytes:
    """A valid lossless WebP of side x side opaque black pixels in ~30 bytes: every prefix
    code is a "simple" one-symbol code, so a pixel costs zero bits."""
    bits = _Bits()
    bits.put(0x2F, 8)
    bits.put(side - 1, 14)
    bits.put(side - 1, 14)
    bits.put(0, 1)  # alpha is not used
    bits.put(0, 3)  # version
    bits.put(0, 1)  # no transform
    bits.put(0, 1)  # no colour cache
    bits.put(0, 1)  # no meta prefix codes
    for symbol in (0, 0, 0, 255, 0):  # green, red, blue, alpha, distance
        bits.put(1, 1)  # simple code
        bits.put(0, 1)  # one symbol
        if symbol < 2:
            bits.put(0, 1)
            bits.put(symbol, 1)
        else:
            bits.put(1, 1)
            bits.put(symbol, 8)
    vp8l = bits.done()
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l + (b"\x00" if len(vp8l) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid RLE8 BMP of side x side pixels of colour 0: 2 bytes per 255 pixels."""
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    full, rest = divmod(side, 255)
    row = b"\xff\x00" * full + (bytes([rest, 0]) if rest else b"") + b"\x00\x00"
    data = row * side + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    return header + info + palette + data


def gif_bomb(side: int = BOMB_SIDE) -> bytes:
    """A valid GIF of side x side pixels of colour 0: LZW of one long run (codes for ever
    longer runs of 0, a clear code whenever the table is full)."""
    min_size = 2
    clear, eoi = 1 << min_size, (1 << min_size) + 1
    bits = _Bits()
    remaining = side * side
    width = min_size + 1
    bits.put(clear, width)
    while remaining:
        # After a clear the decoder's next free code is eoi + 1; it adds one entry per code
        # after the first (the previous run plus one pixel), so run lengths grow by one and
        # each code is the entry being added (LZW's "KwKwK" case).
        next_code, previous = eoi + 1, 0
        while remaining and next_code < 4093:
            run = min(previous + 1, remaining)
            bits.put(0 if run == 1 else eoi + run - 1, width)
            remaining -= run
            if previous:
                next_code += 1
                if next_code == (1 << width) and width < 12:
                    width += 1
            previous = run
        if remaining:
            bits.put(clear, width)
            width = min_size + 1
    bits.put(eoi, width)
    lzw = bits.done()
    blocks = b"".join(bytes([len(lzw[i:i + 255])]) + lzw[i:i + 255]
                      for i in range(0, len(lzw), 255))
    screen = struct.pack("<HHBBB", side, side, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, side, side, 0)
    return b"GIF89a" + screen + image + bytes([min_size]) + blocks + b"\x00\x3b"


def real_bombs(side: int = BOMB_SIDE) -> dict[str, bytes]:
    """A valid huge image in each format (side x side; WebP at its 16383 maximum)."""
    return {"bomb-real.png": png_bomb(side), "bomb-real.jpg": jpeg_bomb(side),
            "bomb-real.tif": tiff_bomb(side), "bomb-real.webp": webp_bomb(),
            "bomb-real.bmp": bmp_bomb(side), "bomb-real.gif": gif_bomb(side)}


def declared_bombs(bases: dict[str, bytes], side: int = DECLARED_SIDE) -> dict[str, bytes]:
    """Small valid files whose headers are patched to claim side x side pixels."""
    out = {}
    jpg = bytearray(bases["base.jpg"])
    sof = jpg.find(b"\xff\xc0")
    jpg[sof + 5: sof + 9] = struct.pack(">HH", side, side)
    out["bomb-declared.jpg"] = bytes(jpg)
    png = bases["base.png"]
    ihdr = bytearray(png[16:29])
    ihdr[0:8] = struct.pack(">II", side, side)
    out["bomb-declared.png"] = png[:8] + _png_chunk(b"IHDR", bytes(ihdr)) + png[33:]
    out["bomb-declared-badcrc.png"] = png[:16] + struct.pack(">II", side, side) + png[24:]
    tif = bytearray(bases["base.tif"])
    (ifd,) = struct.unpack("<I", tif[4:8])
    (count,) = struct.unpack("<H", tif[ifd: ifd + 2])
    for k in range(count):
        pos = ifd + 2 + 12 * k
        tag, typ = struct.unpack("<HH", tif[pos: pos + 4])
        if tag in (256, 257):
            tif[pos + 8: pos + 12] = (struct.pack("<HH", side, 0) if typ == 3
                                      else struct.pack("<I", side))
    out["bomb-declared.tif"] = bytes(tif)
    webp = bytearray(bases["base.webp"])
    if webp[12:16] == b"VP8 ":
        webp[26:30] = struct.pack("<HH", 16383, 16383)
    out["bomb-declared.webp"] = bytes(webp)
    lossless = bytearray(bases["base-lossless.webp"])
    if lossless[12:16] == b"VP8L":
        (head,) = struct.unpack("<I", lossless[21:25])
        head = (head & ~((1 << 28) - 1)) | (16382 | (16382 << 14))
        lossless[21:25] = struct.pack("<I", head)
    out["bomb-declared-lossless.webp"] = bytes(lossless)
    bmp = bytearray(bases["base.bmp"])
    bmp[18:26] = struct.pack("<ii", side, side)
    out["bomb-declared.bmp"] = bytes(bmp)
    gif = bytearray(bases["base.gif"])
    gif[6:10] = struct.pack("<HH", 65535, 65535)
    flags = gif[10]
    desc = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)
    while gif[desc] == 0x21:  # skip extension blocks to the image descriptor
        pos = desc + 2
        while gif[pos]:
            pos += gif[pos] + 1
        desc = pos + 1
    if gif[desc] == 0x2C:
        gif[desc + 5: desc + 9] = struct.pack("<HH", 65535, 65535)
    out["bomb-declared.gif"] = bytes(gif)
    return out


# --------------------------------------------------------------------------- EXIF


def _exif_jpeg(jpeg: bytes, tiff: bytes) -> bytes:
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def _ifd(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
    body = struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        body += struct.pack("<HHII", tag, typ, count, value)
    return body + struct.pack("<I", next_ifd)


def _tiff_with_entry(tiff: bytes, entry: tuple[int, int, int, int]) -> bytes:
    """A little-endian TIFF with one more IFD0 entry (a rewritten IFD appended at the end)."""
    (ifd,) = struct.unpack("<I", tiff[4:8])
    (count,) = struct.unpack("<H", tiff[ifd: ifd + 2])
    raw = [tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k] for k in range(count)]
    raw.append(struct.pack("<HHII", *entry))
    raw.sort(key=lambda e: struct.unpack("<H", e[:2])[0])
    new_ifd = len(tiff) + len(tiff) % 2
    body = tiff + bytes(len(tiff) % 2) + struct.pack("<H", len(raw)) + b"".join(raw) + bytes(4)
    return body[:4] + struct.pack("<I", new_ifd) + body[8:]


def broken_exif(bases: dict[str, bytes]) -> dict[str, bytes]:
    """JPEG/PNG/TIFF files whose EXIF offsets point past the end, at themselves, at
    garbage; huge counts; a thumbnail beyond the file."""
    jpeg = bases["base.jpg"]
    head = b"II*\x00"
    cases = {
        "ifd-past-end": head + struct.pack("<I", 0x7FFFFFF0),
        "ifd-loop": head + struct.pack("<I", 8) + _ifd([(0x0112, 3, 1, 6)], next_ifd=8),
        "huge-count": head + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + bytes(40),
        "value-past-end": head + struct.pack("<I", 8) + _ifd([(0x010F, 2, 4000, 0x7FFF0000)]),
        "exif-ifd-garbage": head + struct.pack("<I", 8) + _ifd([(0x8769, 4, 1, 0xFFFFFF00)]),
        "gps-ifd-self": head + struct.pack("<I", 8) + _ifd([(0x8825, 4, 1, 8)]),
        "orientation-ascii": head + struct.pack("<I", 8) + _ifd([(0x0112, 2, 4, 0x41424344)]),
        "orientation-99": head + struct.pack("<I", 8) + _ifd([(0x0112, 3, 1, 99)]),
        "thumbnail-past-end": head + struct.pack("<I", 8) + _ifd(
            [(0x0112, 3, 1, 1)], next_ifd=26) + _ifd([(0x0201, 4, 1, 0x00FFFFFF),
                                                      (0x0202, 4, 1, 0x00FFFFFF)]),
        "big-endian-garbage": b"MM\x00*" + struct.pack(">I", 8) + bytes(range(256)) * 2,
        "truncated-header": b"II*",
        "not-tiff": b"hello, EXIF",
    }
    out = {f"exif-{k}.jpg": _exif_jpeg(jpeg, v) for k, v in cases.items()}
    png = bases["base.png"]
    for k in ("ifd-loop", "ifd-past-end", "huge-count"):
        out[f"exif-{k}.png"] = png[:33] + _png_chunk(b"eXIf", cases[k]) + png[33:]
    for k, pointer in (("exif-ifd-garbage", 0xFFFFFF00), ("exif-ifd-self", 8)):
        out[f"exif-{k}.tif"] = _tiff_with_entry(bases["base.tif"], (0x8769, 4, 1, pointer))
    return out


# --------------------------------------------------------------------------- the corpus


def _not_images() -> dict[str, bytes]:
    return {
        "text.jpg": b"this is text, not a JPEG\n" * 4,
        "html.png": b"<!doctype html><html><body>hello</body></html>\n",
        "pdf.tif": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "zip.webp": b"PK\x03\x04" + bytes(60),
        "elf.gif": b"\x7fELF\x02\x01\x01" + bytes(57),
        "random.bmp": random.Random(7).randbytes(2000),
        "magic-only.jpg": b"\xff\xd8\xff",
        "magic-only.png": b"\x89PNG\r\n\x1a\n",
        "magic-only.tif": b"II*\x00",
        "magic-only.webp": b"RIFF\x00\x00\x00\x00WEBP",
        "magic-only.gif": b"GIF89a",
        "magic-only.bmp": b"BM",
        "riff-not-webp.webp": b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28),
        "bigtiff-garbage.tif": b"II+\x00\x08\x00\x00\x00" + bytes(64),
        "jpeg-soi-eoi.jpg": b"\xff\xd8\xff\xd9",
        "png-no-idat.png": b"\x89PNG\r\n\x1a\n" + _png_chunk(
            b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)) + _png_chunk(b"IEND", b""),
    }


def _arithmetic(bases: dict[str, bytes]) -> dict[str, bytes]:
    out = {}
    for marker, name in ((b"\xff\xc9", "sof9"), (b"\xff\xca", "sof10"), (b"\xff\xc3",
                                                                           "lossless")):
        data = bytearray(bases["base.jpg"])
        pos = data.find(b"\xff\xc0")
        data[pos: pos + 2] = marker
        out[f"arithmetic-{name}.jpg"] = bytes(data)
    return out


def build(folder: Path, seed: int = 0) -> list[Sample]:
    """Write the corpus into ``folder`` (created); returns its samples in name order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    bases = valid_bases(seed)
    files: dict[str, tuple[bytes, str, str]] = {}

    def add(name: str, data: bytes, family: str, expect: str) -> None:
        assert name not in files, name
        files[name] = (data, family, expect)

    for name, data in bases.items():
        add(name.replace("base", "variant", 1), data, "variant", "ok")
    for name, data in size_variants(seed).items():
        add(name, data, "size", "ok")
    for base, other in MUTATED:
        stem, ext = base.rsplit(".", 1)
        for kind, data in _mutations(bases[base], bases[other], rng).items():
            add(f"{kind}-{stem}.{ext}", data, kind.split("-")[0], "any")
    for ext in ("jpg", "png", "tif", "webp", "bmp", "gif"):
        add(f"zero-byte.{ext}", b"", "zero-byte", "error")
    for name, data in _not_images().items():
        add(f"not-image-{name}", data, "not-image", "error")
    wrong = {"jpg-as.png": "base.jpg", "png-as.jpg": "base.png", "tif-as.webp": "base.tif",
             "webp-as.tif": "base.webp", "gif-as.jpg": "base.gif", "bmp-as.png": "base.bmp",
             "jpg-as.jpeg": "base-progressive.jpg", "png-as.gif": "base-rgba.png",
             "webp-as.jfif": "base-lossless.webp", "tif-as.bmp": "base-lzw.tif"}
    for name, base in wrong.items():
        add(f"wrong-ext-{name}", bases[base], "wrong-ext", "ok")
    for name, data in real_bombs().items():
        add(name, data, "bomb-real", "error")
    for name, data in declared_bombs(bases).items():
        add(name, data, "bomb-declared", "error")
    for name, data in broken_exif(bases).items():
        add(name, data, "exif", "any" if "garbage" in name else "ok")
    for name, data in _arithmetic(bases).items():
        add(name, data, "arithmetic", "error")

    samples = []
    for name in sorted(files):
        data, family, expect = files[name]
        (folder / name).write_bytes(data)
        samples.append(Sample(name, family, expect))
    return samples


def by_family(samples: list[Sample]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.family] = counts.get(s.family, 0) + 1
    return dict(sorted(counts.items()))


#: For scripts: ``python -m tests.malformed FOLDER`` writes the corpus and prints the counts.
def main(argv: list[str] | None = None, echo: Callable[[str], None] = print) -> None:
    import sys

    args = sys.argv[1:] if argv is None else argv
    samples = build(Path(args[0] if args else "malformed-corpus"))
    echo(f"{len(samples)} files: {by_family(samples)}")


if __name__ == "__main__":
    main()
