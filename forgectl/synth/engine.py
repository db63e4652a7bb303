"""Synthetic forgeries from pristine photos: splice, copy-move, removal, and authentic samples.

No forgery training set can be downloaded here, so every learned method trains on samples made
by :class:`SynthesisEngine` from the photos in ``../shared/corpus``. A sample is deterministic in
``(seed, index)``: the engine derives one 64-bit sample seed from the pair and draws every random
choice from it, so a sample does not depend on which samples were made before it.

How one sample is made (see ``docs/SYNTH.md`` for the data recipe):

1. **Host**: a source photo, cropped to a working size (``size_range``, CASIA-like aspect) and
   resampled, or cropped at its own resolution (``native_crop_prob``) so the photo's own JPEG
   traces survive. It may be JPEG-compressed before the edit (``history.prior_jpeg_prob``).
2. **Manipulation** of an object-like region (the main object of a photo cut with
   saliency-seeded GrabCut, or a blob, rectangle, ellipse or polygon):

   * ``splice``: a region of *another* photo (with its own crop, scale and maybe JPEG grid),
     flipped/rotated maybe, scaled to a plausible area, colour-matched to the host
     (partial Reinhard transfer in Lab), pasted with an antialiased or feathered edge.
   * ``copymove``: a region of the same photo pasted elsewhere with translation, maybe
     rotation, scale and flip; the mask marks the target only (as CASIA does).
   * ``removal``: an object-like region filled by ``cv2.inpaint`` (Telea or Navier-Stokes),
     with noise matched to the surroundings in some samples.
   * ``authentic``: no edit; the same histories, so models learn not to fire on them.

3. **History** after the edit (resample, blur, noise, extra JPEG), a global brightness or
   contrast disturbance (ReConWave-Net), and the save: real JPEG bytes (single or double,
   aligned or shifted grid) or PNG. See :mod:`forgectl.synth.histories`.

The mask is 1 where the manipulation changed pixels (the pasted object where its blend weight
is at least 0.5, the copy-move target, the inpainted region) on the final grid of the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from forgectl.errors import InputError, UsageError
from forgectl.intake import DEFAULT_MAX_PIXELS, estimate_ijg_quality, image_from_bytes
from forgectl.synth import histories, regions
from forgectl.synth.histories import HistoryConfig, Step
from forgectl.synth.sample import SynthSample

#: Sample kinds, as in :attr:`SynthSample.kind`.
KINDS = ("splice", "copymove", "removal", "authentic")
#: ``manipulation_type`` written to MANIFEST.tsv (CASIA's words where CASIA has the kind).
MANIFEST_TYPES = {
    "splice": "splice",
    "copymove": "copy-move",
    "removal": "removal",
    "authentic": "",
}
_KIND_ALIASES = {
    "copy-move": "copymove",
    "copy_move": "copymove",
    "inpaint": "removal",
    "inpainting": "removal",
    "pristine": "authentic",
}
SPLITS = ("train", "val", "test", "all")
_IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp", ".bmp"}
)


# --------------------------------------------------------------------------- sources


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursive, by extension, hidden files skipped), sorted.

    Raises:
        InputError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"not a folder of images: {root}")
    found = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in _IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return sorted(found)


def _name_fraction(name: str) -> float:
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_sources(
    paths: list[Path], split: str, val_fraction: float = 0.1, test_fraction: float = 0.1
) -> list[Path]:
    """The sources of one split, decided by a hash of each file *name* (not its folder).

    The same photo under two folders lands in the same split, and adding photos never moves
    others between splits. ``"test"`` holds out photos for evaluation, ``"all"`` keeps every one.

    Args:
        paths: source photos. split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
        val_fraction, test_fraction: expected shares of the val and test splits.

    Returns:
        The paths of the split, in input order.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise UsageError("val_fraction and test_fraction must be >= 0 and sum to less than 1")
    if split == "all":
        return list(paths)

    def which(p: Path) -> str:
        u = _name_fraction(Path(p).name)
        if u < test_fraction:
            return "test"
        return "val" if u < test_fraction + val_fraction else "train"

    return [p for p in paths if which(p) == split]


@dataclass
class _Source:
    """A decoded source photo (maybe reduced) and its facts."""

    rgb: np.ndarray  # (h, w, 3) uint8, long side <= source_max_side
    decode_scale: float  # rgb size / file size
    format: str
    quality: int | None  # closest IJG quality of a JPEG's luminance table


class SourceCache:
    """LRU cache of decoded sources: a 12 MP photo is decoded (and reduced) once.

    JPEGs much larger than ``max_side`` are decoded at 1/2, 1/4 or 1/8 scale by libjpeg
    (Pillow's ``draft``), then reduced with area averaging; smaller files keep their pixels.
    """

    def __init__(self, max_side: int = 1600, capacity: int = 48) -> None:
        self.max_side = int(max_side)
        self.capacity = max(1, int(capacity))
        self._items: OrderedDict[str, _Source] = OrderedDict()
        self._objects: dict[str, tuple[list[np.ndarray], tuple[int, int]]] = {}

    def get(self, path: Path) -> _Source:
        key = str(path)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        src = self._load(Path(path))
        self._items[key] = src
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return src

    def objects(self, path: Path) -> tuple[list[np.ndarray], tuple[int, int]]:
        """Main objects of a source on their small grid; kept even after the pixels leave."""
        key = str(path)
        if key not in self._objects:
            src = self.get(path)
            found = regions.main_objects(src.rgb)
            grid = found[0].shape if found else (0, 0)
            self._objects[key] = (found, (int(grid[0]), int(grid[1])))
        return self._objects[key]

    def _load(self, path: Path) -> _Source:
        import cv2
        from PIL import Image

        try:
            with Image.open(path) as img:
                fmt = img.format or "?"
                quality = None
                tables = getattr(img, "quantization", None)
                if fmt == "JPEG" and tables:
                    quality = estimate_ijg_quality(np.asarray(tables[0]).reshape(8, 8))[0]
                width, height = img.size
                if width * height > DEFAULT_MAX_PIXELS:
                    raise InputError(f"source {path} is over {DEFAULT_MAX_PIXELS} pixels")
                if fmt == "JPEG" and max(width, height) >= 2 * self.max_side:
                    ratio = self.max_side / max(width, height)
                    img.draft("RGB", (math.ceil(width * ratio), math.ceil(height * ratio)))
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except InputError:
            raise
        except Exception as exc:  # Pillow raises many types on broken files
            raise InputError(f"cannot decode source {path}: {exc}") from exc
        h, w = rgb.shape[:2]
        if max(h, w) > self.max_side:
            ratio = self.max_side / max(h, w)
            rgb = cv2.resize(
                rgb,
                (max(1, round(w * ratio)), max(1, round(h * ratio))),
                interpolation=cv2.INTER_AREA,
            )
        rgb = np.ascontiguousarray(rgb)
        return _Source(rgb=rgb, decode_scale=rgb.shape[1] / width, format=fmt, quality=quality)


# --------------------------------------------------------------------------- config


@dataclass
class SynthConfig:
    """What the engine makes, as plain data (goes verbatim into model cards).

    Attributes:
        kinds: sampling weights of :data:`KINDS` (missing kinds are never made).
        size_range: long side of the working image in pixels (rounded to 8).
        aspect_range: short side / long side of the working image (CASIA: 256/384 = 0.67).
        native_crop_prob: crop at the photo's own resolution when it is large enough, keeping
            its camera or web JPEG traces (otherwise crop and resample).
        crop_fraction: size of a resampled crop relative to the largest crop that fits.
        max_upscale: a crop is enlarged at most this much (unless the photo is too small).
        source_max_side: sources are reduced to this long side when decoded (cached).
        cache_size: decoded sources kept in memory (LRU).
        shapes: weights of region shapes; ``"object"`` is a GrabCut object (a blob when the
            photo has none), the others are :data:`forgectl.synth.regions.SHAPES`.
        salient_shape_prob: a random shape is centred on a point drawn from the saliency map
            (else anywhere).
        area_range: forged area as a fraction of the image (splice, copy-move), log-uniform.
        removal_area_range: the same for removal (inpainting large areas is a smear).
        level_prob: a copy-moved region keeps its height in the frame (same ground line) and a
            spliced object lands in the lower two thirds (else anywhere).
        max_paste_scale: largest enlargement of a pasted region.
        colour_match_prob, colour_match_strength: partial Reinhard transfer in Lab of a splice.
        feather_prob, feather_sigma: feathered paste edge (Gaussian alpha, pixels); else an
            antialiased hard edge.
        rotate_prob, max_rotation: rotation of pasted regions (degrees).
        flip_prob: horizontal flip of pasted regions.
        copymove_scale_prob, copymove_scale: rescaling of a copy-moved region.
        inpaint_radius: ``cv2.inpaint`` radius range (pixels).
        inpaint_noise_prob: add noise matched to the surroundings to an inpainted region.
        min_mask_fraction: a forged sample whose final mask is smaller is redrawn.
        min_side: post-edit resampling never shrinks the short side below this.
        history: the processing history (:class:`HistoryConfig`).
    """

    kinds: dict[str, float] = field(
        default_factory=lambda: {"splice": 0.4, "copymove": 0.25, "removal": 0.1, "authentic": 0.25}
    )
    size_range: tuple[int, int] = (256, 512)
    aspect_range: tuple[float, float] = (0.62, 1.0)
    native_crop_prob: float = 0.3
    crop_fraction: tuple[float, float] = (0.45, 1.0)
    max_upscale: float = 1.25
    source_max_side: int = 1600
    cache_size: int = 48
    shapes: dict[str, float] = field(
        default_factory=lambda: {
            "object": 0.6,
            "blob": 0.18,
            "rect": 0.1,
            "ellipse": 0.07,
            "polygon": 0.05,
        }
    )
    salient_shape_prob: float = 0.6
    area_range: tuple[float, float] = (0.012, 0.3)
    removal_area_range: tuple[float, float] = (0.005, 0.12)
    level_prob: float = 0.5
    max_paste_scale: float = 1.5
    colour_match_prob: float = 0.7
    colour_match_strength: tuple[float, float] = (0.3, 1.0)
    feather_prob: float = 0.45
    feather_sigma: tuple[float, float] = (0.6, 2.5)
    rotate_prob: float = 0.25
    max_rotation: float = 25.0
    flip_prob: float = 0.3
    copymove_scale_prob: float = 0.5
    copymove_scale: tuple[float, float] = (0.75, 1.25)
    inpaint_radius: tuple[int, int] = (3, 9)
    inpaint_noise_prob: float = 0.5
    min_mask_fraction: float = 0.002
    min_side: int = 128
    history: HistoryConfig = field(default_factory=HistoryConfig)

    def __post_init__(self) -> None:
        if isinstance(self.history, dict):
            self.history = HistoryConfig(**self.history)
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise UsageError(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
        if any(w < 0 for w in self.kinds.values()) or sum(self.kinds.values()) <= 0:
            raise UsageError("kind weights must be >= 0 with a positive sum")
        bad_shapes = sorted(set(self.shapes) - {"object", *regions.SHAPES})
        if bad_shapes or sum(self.shapes.values()) <= 0:
            raise UsageError(f"shape weights must name object or {', '.join(regions.SHAPES)}")
        lo, hi = self.size_range
        if not 32 <= lo <= hi:
            raise UsageError(f"size_range must satisfy 32 <= min <= max, got {lo}, {hi}")
        for name in ("area_range", "removal_area_range"):
            a, b = getattr(self, name)
            if not 0 < a <= b < 1:
                raise UsageError(f"{name} must satisfy 0 < low <= high < 1")

    def to_dict(self) -> dict[str, Any]:
        out = histories._plain(asdict(self))
        out["history"] = self.history.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        """Inverse of :meth:`to_dict` (lists become tuples where the field is a range)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown synth config key(s): {', '.join(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if isinstance(values.get("history"), dict):
            h = {k: tuple(v) if isinstance(v, list) else v for k, v in values["history"].items()}
            unknown = sorted(set(h) - {f.name for f in fields(HistoryConfig)})
            if unknown:
                raise UsageError(f"unknown synth history key(s): {', '.join(unknown)}")
            values["history"] = HistoryConfig(**h)
        return cls(**values)

    def with_kinds(self, names: list[str]) -> SynthConfig:
        """A copy making only ``names`` (aliases such as ``copy-move`` accepted), same weights."""
        chosen = []
        for name in names:
            key = _KIND_ALIASES.get(name.strip().lower(), name.strip().lower())
            if key not in KINDS:
                raise UsageError(f"unknown kind {name!r}; known: {', '.join(KINDS)}")
            chosen.append(key)
        if not chosen:
            raise UsageError("no kinds given")
        defaults = SynthConfig().kinds
        weights = {k: self.kinds.get(k) or defaults[k] for k in dict.fromkeys(chosen)}
        return SynthConfig.from_dict({**self.to_dict(), "kinds": weights})


# --------------------------------------------------------------------------- geometry helpers


@dataclass
class _Working:
    """A source cropped (and maybe resampled) to a working image, and how it maps back."""

    rgb: np.ndarray  # (H, W, 3) uint8
    path: Path
    crop: tuple[float, float, float, float]  # x0, y0, x1, y1 on the cached source grid
    scale: tuple[float, float]  # working pixels per cached-source pixel (x, y)
    step: Step


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = [k for k, v in weights.items() if v > 0]
    p = np.asarray([weights[k] for k in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _working_crop(rng: np.random.Generator, path: Path, src: _Source, cfg: SynthConfig) -> _Working:
    """Crop a source to a working size: native resolution or resampled (area when shrinking)."""
    import cv2

    sh, sw = src.rgb.shape[:2]
    lo, hi = cfg.size_range
    long_side = 8 * int(rng.integers(lo // 8, hi // 8 + 1))
    aspect = float(rng.uniform(*cfg.aspect_range))
    short_side = max(8, 8 * round(long_side * aspect / 8))
    landscape = sw >= sh
    tw, th = (long_side, short_side) if landscape else (short_side, long_side)
    native = rng.random() < cfg.native_crop_prob
    if not native and max(sw, sh) < long_side and max(sw, sh) >= lo:
        # A small photo: shrink the working size to it instead of enlarging (keeps detail).
        fit = max(sw, sh) / long_side
        tw, th = max(8, 8 * int(tw * fit / 8)), max(8, 8 * int(th * fit / 8))
    if native and sw >= tw and sh >= th:
        x0, y0 = int(rng.integers(0, sw - tw + 1)), int(rng.integers(0, sh - th + 1))
        rgb = src.rgb[y0 : y0 + th, x0 : x0 + tw].copy()
        step = {
            "op": "crop",
            "box": [x0, y0, x0 + tw, y0 + th],
            "scale": round(src.decode_scale, 4),
            "native": src.decode_scale == 1.0,
        }
        return _Working(rgb, path, (x0, y0, x0 + tw, y0 + th), (1.0, 1.0), step)
    # Largest crop of the target aspect that fits, times a random fraction.
    if sw / sh >= tw / th:
        cw_max, ch_max = sh * tw / th, float(sh)
    else:
        cw_max, ch_max = float(sw), sw * th / tw
    # Never enlarge more than max_upscale (a strongly enlarged photo is a blur, not a photo):
    # shrink the target when even the largest crop is too small, down to the size range.
    need = tw / (cw_max * cfg.max_upscale)
    if need > 1.0:
        shrink = max(1.0 / need, lo / max(tw, th))
        tw, th = max(8, 8 * int(tw * shrink / 8)), max(8, 8 * int(th * shrink / 8))
    lowest = min(1.0, max(cfg.crop_fraction[0], tw / (cw_max * cfg.max_upscale)))
    frac = float(rng.uniform(lowest, max(lowest, cfg.crop_fraction[1])))
    cw, ch = max(8.0, cw_max * frac), max(8.0, ch_max * frac)
    x0 = float(rng.uniform(0, sw - cw)) if sw > cw else 0.0
    y0 = float(rng.uniform(0, sh - ch)) if sh > ch else 0.0
    xi0, yi0 = int(x0), int(y0)
    xi1, yi1 = min(sw, max(xi0 + 8, round(x0 + cw))), min(sh, max(yi0 + 8, round(y0 + ch)))
    crop = src.rgb[yi0:yi1, xi0:xi1]
    sx, sy = tw / (xi1 - xi0), th / (yi1 - yi0)
    interp = cv2.INTER_AREA if sx < 1 else cv2.INTER_CUBIC
    rgb = cv2.resize(crop, (tw, th), interpolation=interp)
    step = {
        "op": "crop_resize",
        "box": [xi0, yi0, xi1, yi1],
        "scale": round(sx * src.decode_scale, 4),
        "native": False,
    }
    return _Working(np.ascontiguousarray(rgb), path, (xi0, yi0, xi1, yi1), (sx, sy), step)


def _map_small_mask(
    small: np.ndarray, grid_scale: tuple[float, float], work: _Working
) -> np.ndarray:
    """A small-grid object mask carried onto the working image: (H, W) uint8 {0, 1}.

    Pixel centres map as ``x_w + 0.5 = ((x_s + 0.5) / k - x0) * r`` (k: small-grid pixels per
    cached-source pixel, r: working pixels per source pixel, x0: crop origin); bilinear, then a
    0.5 threshold.
    """
    import cv2

    h, w = work.rgb.shape[:2]
    (kx, ky), (rx, ry) = grid_scale, work.scale
    matrix = np.array(
        [
            [rx / kx, 0, (0.5 / kx - work.crop[0]) * rx - 0.5],
            [0, ry / ky, (0.5 / ky - work.crop[1]) * ry - 0.5],
        ],
        np.float64,
    )
    up = cv2.warpAffine(
        small.astype(np.float32),
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return (up >= 0.5).astype(np.uint8)


def _border_fraction(mask: np.ndarray) -> float:
    """Share of the image border covered by the mask (a cut object shows a straight edge)."""
    edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    return float(edge.mean())


def _regions_of(work: _Working, cache: SourceCache, area: tuple[float, float]) -> list[np.ndarray]:
    """Main objects of the working image's source, on its grid, of plausible size and whole."""
    objects, grid = cache.objects(work.path)
    if not objects:
        return []
    src = cache.get(work.path)
    grid_scale = (grid[1] / src.rgb.shape[1], grid[0] / src.rgb.shape[0])
    found = []
    for small in objects:
        mask = _map_small_mask(small, grid_scale, work)
        frac = float(mask.mean())
        if area[0] <= frac <= area[1] and _border_fraction(mask) < 0.05:
            found.append(mask)
    return found


def _choose_region(
    rng: np.random.Generator,
    work: _Working,
    cache: SourceCache,
    cfg: SynthConfig,
    area: tuple[float, float],
    shape: str | None = None,
) -> tuple[np.ndarray, str]:
    """An object-like region of a working image: (H, W) uint8 {0,1} mask and its shape name.

    ``shape`` (drawn from ``cfg.shapes`` when None) ``"object"`` falls back to a blob when the
    image has no whole object of a fitting size.
    """
    shape = _pick(rng, cfg.shapes) if shape is None else shape
    if shape == "object":
        found = _regions_of(work, cache, area)
        if found:
            return found[int(rng.integers(len(found)))], "object"
        shape = "blob"
    h, w = work.rgb.shape[:2]
    target = _log_uniform(rng, area)
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    fill = {"rect": 1.0, "ellipse": math.pi / 4, "polygon": 0.45, "blob": 0.7}[shape]
    box_area = target * h * w / fill
    bw = int(min(0.9 * w, max(6, math.sqrt(box_area * aspect))))
    bh = int(min(0.9 * h, max(6, box_area / max(bw, 1))))
    if rng.random() < cfg.salient_shape_prob:
        # Centre the shape on a salient point: forgers copy or remove *things*, not flat sky.
        saliency = regions.spectral_residual_saliency(work.rgb).astype(np.float64).ravel()
        centre = int(rng.choice(saliency.size, p=saliency / saliency.sum()))
        cy, cx = divmod(centre, w)
        x0 = int(np.clip(cx - bw // 2, 0, w - bw))
        y0 = int(np.clip(cy - bh // 2, 0, h - bh))
    else:
        x0, y0 = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
    mask = np.zeros((h, w), np.uint8)
    mask[y0 : y0 + bh, x0 : x0 + bw] = regions.random_shape(rng, shape, bh, bw)
    return mask, shape


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass
class _Paste:
    """A region cut from an image, ready to be transformed and composited."""

    patch: np.ndarray  # (h, w, 3) uint8, region plus margin
    alpha: np.ndarray  # (h, w) float32 in [0, 1]


def _cut(rgb: np.ndarray, mask: np.ndarray, margin_frac: float = 0.15) -> _Paste:
    x0, y0, x1, y1 = _bbox(mask)
    m = max(4, int(margin_frac * max(x1 - x0, y1 - y0)))
    h, w = mask.shape
    x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(w, x1 + m), min(h, y1 + m)
    return _Paste(rgb[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].astype(np.float32))


def _transform(paste: _Paste, scale: float, angle: float, flip: bool) -> tuple[_Paste, np.ndarray]:
    """Flip and pre-shrink a paste; return it and the 2x3 matrix (rotation, remaining scale)
    about its region's centre, without translation."""
    import cv2

    patch, alpha = paste.patch, paste.alpha
    if flip:
        patch, alpha = patch[:, ::-1].copy(), alpha[:, ::-1].copy()
    rest = scale
    if scale < 1.0:  # shrink with area averaging first: warpAffine alone would alias
        h, w = alpha.shape
        size = (max(2, round(w * scale)), max(2, round(h * scale)))
        patch = cv2.resize(patch, size, interpolation=cv2.INTER_AREA)
        alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
        rest = 1.0
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(xs) == 0:
        ys, xs = np.nonzero(alpha > 0)
    centre = ((xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, rest)
    matrix[:, 2] -= centre  # the region's centre goes to the origin; placement adds a target
    return _Paste(patch, alpha), matrix


def _placed_extent(paste: _Paste, matrix: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(paste.alpha >= 0.5)
    if len(xs) == 0:
        ys, xs = np.nonzero(paste.alpha > 0)
    corners = np.array(
        [
            [xs.min(), ys.min()],
            [xs.max() + 1, ys.min()],
            [xs.min(), ys.max() + 1],
            [xs.max() + 1, ys.max() + 1],
        ],
        np.float64,
    )
    moved = corners @ matrix[:, :2].T + matrix[:, 2]
    return moved[:, 0].min(), moved[:, 1].min(), moved[:, 0].max(), moved[:, 1].max()


def _warp(
    paste: _Paste, matrix: np.ndarray, size: tuple[int, int], cubic: bool
) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    h, w = size
    flags = cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR
    patch = cv2.warpAffine(
        paste.patch, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT_101
    )
    alpha = cv2.warpAffine(
        paste.alpha,
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return patch, alpha


def _edge(
    rng: np.random.Generator, alpha: np.ndarray, cfg: SynthConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """Antialiased hard edge (the warp's own 1-pixel ramp) or a feathered one."""
    import cv2

    if rng.random() < cfg.feather_prob:
        sigma = round(float(rng.uniform(*cfg.feather_sigma)), 3)
        hard = (alpha >= 0.5).astype(np.float32)
        return cv2.GaussianBlur(hard, (0, 0), sigmaX=sigma), {"edge": "feather", "sigma": sigma}
    return np.clip(alpha, 0.0, 1.0), {"edge": "hard"}


def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _colour_match(
    patch: np.ndarray, region: np.ndarray, host: np.ndarray, window: np.ndarray, strength: float
) -> np.ndarray:
    """Partial Reinhard transfer: the region's Lab mean/std moved toward the host window's.

    Args:
        patch: (H, W, 3) uint8 donor pixels on the host grid. region: (H, W) bool pasted area.
        host: (H, W, 3) uint8. window: (H, W) bool host pixels around the target.
        strength: 0 = unchanged, 1 = full transfer.
    """
    import cv2

    lab_p, lab_h = _lab(patch), _lab(host)
    src, ref = lab_p[region], lab_h[window]
    mu_s, sd_s = src.mean(axis=0), src.std(axis=0) + 1e-3
    mu_r, sd_r = ref.mean(axis=0), ref.std(axis=0) + 1e-3
    ratio = np.clip(sd_r / sd_s, 0.5, 2.0)  # extreme std ratios wash out or blow up texture
    moved = (lab_p - mu_s) * ratio + mu_r
    out = lab_p + strength * (moved - lab_p)
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


def _composite(host: np.ndarray, patch: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[:, :, None].astype(np.float32)
    out = host.astype(np.float32) * (1.0 - a) + patch.astype(np.float32) * a
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _fit_scale(paste: _Paste, scale: float, angle: float, size: tuple[int, int]) -> float:
    """Largest scale <= ``scale`` whose rotated region fits in 90 % of the image."""
    ys, xs = np.nonzero(paste.alpha >= 0.5)
    bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    rw, rh = c * bw + s * bh, s * bw + c * bh
    return min(scale, 0.9 * size[1] / rw, 0.9 * size[0] / rh)


def _place(
    rng: np.random.Generator,
    paste: _Paste,
    matrix: np.ndarray,
    size: tuple[int, int],
    level: float | None = None,
) -> np.ndarray:
    """Add a random translation that keeps the transformed region inside the image.

    Args:
        level: when given, the region's centre row is drawn near it (sigma 6 % of the height):
            a copied object stays on its ground line, a pasted object lands low in the frame.
    """
    x0, y0, x1, y1 = _placed_extent(paste, matrix)
    h, w = size
    tx = float(rng.uniform(-x0, max(-x0, w - x1)))
    if level is None:
        ty = float(rng.uniform(-y0, max(-y0, h - y1)))
    else:
        ty = float(np.clip(level + rng.normal(0.0, 0.06 * h), -y0, max(-y0, h - y1)))
    placed = matrix.copy()
    placed[:, 2] += (round(tx), round(ty))
    return placed


def _transform_params(rng: np.random.Generator, cfg: SynthConfig) -> tuple[float, bool]:
    angle = 0.0
    if rng.random() < cfg.rotate_prob:
        angle = round(float(rng.uniform(-cfg.max_rotation, cfg.max_rotation)), 2)
    return angle, bool(rng.random() < cfg.flip_prob)


# --------------------------------------------------------------------------- manipulations


def _splice(
    rng: np.random.Generator, engine: SynthesisEngine, host: _Working
) -> tuple[np.ndarray, np.ndarray, Step]:
    cfg = engine.config
    donor_path = engine._pick_source(rng, exclude=host.path)
    donor_src = engine.cache.get(donor_path)
    shape = _pick(rng, cfg.shapes)
    if shape == "object":  # the whole photo: a random crop would often cut its object
        dh, dw = donor_src.rgb.shape[:2]
        full = {"op": "crop", "box": [0, 0, dw, dh], "scale": round(donor_src.decode_scale, 4)}
        donor = _Working(donor_src.rgb, donor_path, (0, 0, dw, dh), (1.0, 1.0), full)
    else:
        donor = _working_crop(rng, donor_path, donor_src, cfg)
    region, shape = _choose_region(rng, donor, engine.cache, cfg, (0.005, 0.6), shape)
    paste = _cut(donor.rgb, region)
    size = host.rgb.shape[:2]
    area = _log_uniform(rng, cfg.area_range) * size[0] * size[1]
    angle, flip = _transform_params(rng, cfg)
    scale = min(math.sqrt(area / max(float(region.sum()), 1.0)), cfg.max_paste_scale)
    scale = _fit_scale(paste, scale, angle, size)
    paste, matrix = _transform(paste, scale, angle, flip)
    donor_jpeg = histories.plan_prior_jpeg(rng, cfg.history, cfg.history.donor_jpeg_prob)
    if donor_jpeg is not None:  # the donor's own compression, on its own (unaligned) grid
        paste.patch = histories.jpeg_roundtrip(
            paste.patch, donor_jpeg["quality"], donor_jpeg["subsampling"]
        )
    level = None
    if shape == "object" and rng.random() < cfg.level_prob:
        level = float(rng.uniform(0.45, 0.85)) * size[0]
    matrix = _place(rng, paste, matrix, size, level)
    patch, alpha = _warp(paste, matrix, size, cubic=rng.random() < 0.5)
    alpha, edge = _edge(rng, alpha, cfg)
    mask = alpha >= 0.5
    step: Step = {
        "op": "splice",
        "donor": engine._name(donor_path),
        "donor_crop": donor.step,
        "shape": shape,
        "scale": round(scale, 4),
        "angle": angle,
        "flip": flip,
        **edge,
    }
    if donor_jpeg is not None:
        step["donor_jpeg"] = {k: donor_jpeg[k] for k in ("quality", "subsampling")}
    if mask.any() and rng.random() < cfg.colour_match_prob:
        import cv2

        strength = round(float(rng.uniform(*cfg.colour_match_strength)), 3)
        x0, y0, x1, y1 = _bbox(mask)
        grow = max(x1 - x0, y1 - y0) // 2
        window = np.zeros(size, np.uint8)
        window[max(0, y0 - grow) : y1 + grow, max(0, x0 - grow) : x1 + grow] = 1
        near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ring = window.astype(bool) & ~near
        if ring.sum() > 64:
            patch = _colour_match(patch, mask, host.rgb, ring, strength)
            step["colour_match"] = strength
    return _composite(host.rgb, patch, alpha), mask, step


def _copymove(
    rng: np.random.Generator, engine: SynthesisEngine, host: _Working
) -> tuple[np.ndarray, np.ndarray, Step]:
    cfg = engine.config
    size = host.rgb.shape[:2]
    region, shape = _choose_region(rng, host, engine.cache, cfg, (cfg.area_range[0], 0.3))
    source_mask = region.astype(bool)
    paste = _cut(host.rgb, region)
    angle, flip = _transform_params(rng, cfg)
    scale = 1.0
    if rng.random() < cfg.copymove_scale_prob:
        scale = round(float(rng.uniform(*cfg.copymove_scale)), 3)
    scale = _fit_scale(paste, scale, angle, size)
    paste, matrix = _transform(paste, scale, angle, flip)
    cubic = rng.random() < 0.5
    level = None
    if rng.random() < cfg.level_prob:
        ys = np.nonzero(source_mask.any(axis=1))[0]
        level = (ys.min() + ys.max() + 1) / 2.0
    best = None
    for _ in range(12):  # prefer a target that does not cover its own source
        placed = _place(rng, paste, matrix, size, level)
        patch, alpha = _warp(paste, placed, size, cubic)
        target = alpha >= 0.5
        overlap = float((target & source_mask).sum()) / max(float(target.sum()), 1.0)
        if best is None or overlap < best[0]:
            best = (overlap, patch, alpha, placed)
        if overlap <= 0.1:
            break
    overlap, patch, alpha, placed = best
    alpha, edge = _edge(rng, alpha, cfg)
    mask = alpha >= 0.5
    step: Step = {
        "op": "copymove",
        "shape": shape,
        "scale": round(scale, 4),
        "angle": angle,
        "flip": flip,
        "shift": [round(float(placed[0, 2]), 1), round(float(placed[1, 2]), 1)],
        "overlap": round(overlap, 3),
        **edge,
    }
    return _composite(host.rgb, patch, alpha), mask, step


def _removal(
    rng: np.random.Generator, engine: SynthesisEngine, host: _Working
) -> tuple[np.ndarray, np.ndarray, Step]:
    import cv2

    cfg = engine.config
    region, shape = _choose_region(rng, host, engine.cache, cfg, cfg.removal_area_range)
    grow = int(rng.integers(2, 7))  # cover the object's own edge, as a removal brush does
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    hole = cv2.dilate(region, kernel)
    radius = int(rng.integers(cfg.inpaint_radius[0], cfg.inpaint_radius[1] + 1))
    method = "telea" if rng.random() < 0.5 else "ns"
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    out = cv2.inpaint(host.rgb, hole, radius, flag)
    step: Step = {"op": "removal", "shape": shape, "grow": grow, "radius": radius, "method": method}
    if rng.random() < cfg.inpaint_noise_prob:
        # Inpainting is smooth; real retouching keeps grain. Match the ring's noise level
        # (median absolute deviation of a high-pass, per channel).
        ring = cv2.dilate(hole, kernel).astype(bool) & ~hole.astype(bool)
        high = host.rgb.astype(np.float32) - cv2.GaussianBlur(host.rgb, (0, 0), 1.0).astype(
            np.float32
        )
        sigma = 1.4826 * np.median(np.abs(high[ring]), axis=0) if ring.any() else np.zeros(3)
        sigma = np.clip(sigma, 0.0, 12.0)
        noise = np.random.default_rng(int(rng.integers(2**31))).normal(0.0, 1.0, out.shape)
        noisy = out.astype(np.float32) + (noise * sigma).astype(np.float32)
        inside = hole.astype(bool)
        out[inside] = np.clip(np.round(noisy[inside]), 0, 255).astype(np.uint8)
        step["grain"] = [round(float(s), 2) for s in sigma]
    return out, hole.astype(bool), step


_MANIPULATIONS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, Step]]] = {
    "splice": _splice,
    "copymove": _copymove,
    "removal": _removal,
}


# --------------------------------------------------------------------------- engine


class SynthesisEngine:
    """Makes :class:`SynthSample` objects from source photos, deterministically.

    Args:
        sources: source photos (see :func:`list_images`, :func:`split_sources`).
        seed: dataset seed (>= 0); sample ``i`` depends only on ``(seed, i)`` and the sources.
        config: what to make (:class:`SynthConfig`); defaults when None.
        root: folder that source names in labels are relative to (default: the sources'
            common folder), so labels do not depend on where the corpus is mounted.
    """

    def __init__(
        self,
        sources: list[Path],
        seed: int = 0,
        config: SynthConfig | None = None,
        root: Path | None = None,
    ) -> None:
        if not sources:
            raise InputError("no source images to synthesize from")
        if int(seed) < 0:
            raise UsageError(f"seed must be >= 0, got {seed}")
        self.sources = [Path(p) for p in sources]
        self.seed = int(seed)
        self.config = config or SynthConfig()
        if root is None:
            common = os.path.commonpath([str(p.parent.resolve()) for p in self.sources])
            root = Path(common)
        self.root = Path(root).resolve()
        self.cache = SourceCache(self.config.source_max_side, self.config.cache_size)
        self.bad_sources: dict[str, str] = {}

    def sample_seed(self, index: int) -> int:
        """The 64-bit seed of sample ``index`` (depends only on the dataset seed and index)."""
        if int(index) < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        state = np.random.SeedSequence([self.seed, int(index)]).generate_state(2, np.uint32)
        return int(state[0]) << 32 | int(state[1])

    def _name(self, path: Path) -> str:
        try:
            return Path(path).resolve().relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).name

    def _pick_source(self, rng: np.random.Generator, exclude: Path | None = None) -> Path:
        """A random usable source (undecodable ones are remembered and skipped)."""
        for _ in range(64):
            path = self.sources[int(rng.integers(len(self.sources)))]
            if len(self.sources) > 1 and exclude is not None and path == exclude:
                continue
            if str(path) in self.bad_sources:
                continue
            try:
                src = self.cache.get(path)
            except InputError as exc:
                self.bad_sources[str(path)] = str(exc)
                continue
            if min(src.rgb.shape[:2]) >= 32:
                return path
            self.bad_sources[str(path)] = "smaller than 32 pixels"
        raise InputError(
            f"no usable source image found among {len(self.sources)} "
            f"({len(self.bad_sources)} could not be decoded or are too small)"
        )

    def sample(self, index: int, kind: str | None = None) -> SynthSample:
        """Sample ``index``: deterministic in ``(seed, index)``, independent of call order.

        Args:
            index: >= 0. kind: force a kind (tests, per-kind datasets); default draws it from
                ``config.kinds`` (the draw is made either way, so other choices do not move).
        """
        sample_seed = self.sample_seed(index)
        rng = np.random.default_rng(sample_seed)
        drawn = _pick(rng, self.config.kinds)
        kind = drawn if kind is None else _KIND_ALIASES.get(kind, kind)
        if kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        for _ in range(8):  # a forged sample whose region vanished (tiny, cropped) is redrawn
            sample = self._make(rng, kind, sample_seed)
            if kind == "authentic" or sample.mask.mean() >= self.config.min_mask_fraction:
                return sample
        return sample

    def _make(self, rng: np.random.Generator, kind: str, sample_seed: int) -> SynthSample:
        cfg, hcfg = self.config, self.config.history
        host_path = self._pick_source(rng)
        src = self.cache.get(host_path)
        host = _working_crop(rng, host_path, src, cfg)
        steps: list[Step] = [{"op": "source", "format": src.format, "quality": src.quality}]
        steps.append(host.step)
        sources = [self._name(host_path)]
        last_quality = None
        prior = histories.plan_prior_jpeg(rng, hcfg, hcfg.prior_jpeg_prob)
        if prior is not None:
            host.rgb = histories.jpeg_roundtrip(host.rgb, prior["quality"], prior["subsampling"])
            steps.append(prior)
            last_quality = prior["quality"]

        if kind == "authentic":
            rgb, mask = host.rgb, np.zeros(host.rgb.shape[:2], bool)
        else:
            rgb, mask, step = _MANIPULATIONS[kind](rng, self, host)
            steps.append(step)
            if "donor" in step:
                sources.append(step["donor"])

        min_scale = cfg.min_side / min(rgb.shape[:2])
        post = histories.plan_post(rng, hcfg, min_scale)
        rgb, mask = histories.apply_steps(rgb, mask, post)
        steps.extend(post)
        for s in post:
            if s["op"] == "jpeg":
                last_quality = s["quality"]
            elif s["op"] == "resize":
                last_quality = None  # resampling wipes the earlier grid: no "double" after it

        disturbance = histories.plan_disturbance(rng, hcfg)
        clean = None
        disturb = histories.disturbance_step(disturbance)
        if disturb is not None:
            clean = rgb
            rgb, mask = histories.apply_step(rgb, mask, disturb)
            steps.append(disturb)

        save = histories.plan_save(rng, hcfg, last_quality)
        saved_mask = mask
        data, ext, mask = histories.encode_final(rgb, mask, save)
        steps.append(save)
        reshare = histories.plan_reshare(rng, hcfg, cfg.min_side / min(mask.shape))
        if reshare is not None:
            data, ext, mask = _reshare(data, mask, reshare)
            steps.extend(reshare)
        image = image_from_bytes(data, name=f"synth-{self.seed}-{sample_seed:016x}{ext}")
        clean_rgb = None
        if clean is not None and reshare is None and save["op"] == "png":  # lossless
            clean_rgb = np.ascontiguousarray(clean)
        elif clean is not None:  # the undisturbed image through the same saves, for pairing
            clean_data, _, clean_mask = histories.encode_final(clean, saved_mask, save)
            if reshare is not None:
                clean_data = _reshare(clean_data, clean_mask, reshare)[0]
            clean_rgb = histories.decode_rgb(clean_data)
        mask_u8 = mask.astype(np.uint8)
        return SynthSample(
            image=image,
            file_bytes=data,
            file_ext=ext,
            mask=mask_u8,
            boxes=regions.mask_boxes(mask_u8),
            kind=kind,
            history=steps,
            disturbance=disturbance,
            clean_rgb=clean_rgb,
            source=sources,
            seed=sample_seed,
        )


def _reshare(data: bytes, mask: np.ndarray, steps: list[Step]) -> tuple[bytes, str, np.ndarray]:
    """A saved file shared again: decode, run ``steps[:-1]``, save with ``steps[-1]``."""
    rgb, mask = histories.apply_steps(histories.decode_rgb(data), mask, steps[:-1])
    return histories.encode_final(rgb, mask, steps[-1])


# --------------------------------------------------------------------------- writing


def _notes(sample: SynthSample) -> str:
    """A short, tab-free summary of a sample's history for MANIFEST.tsv."""
    parts = []
    for step in sample.history:
        op = step["op"]
        if op == "jpeg":
            shift = step.get("grid_shift") or [0, 0]
            parts.append(
                f"jpeg{step['quality']}" + (f"@{shift[0]},{shift[1]}" if any(shift) else "")
            )
        elif op in ("splice", "copymove", "removal"):
            parts.append(f"{op}:{step['shape']}")
        elif op in ("resize", "crop_resize"):
            parts.append(f"{op} x{step['scale']}")
        elif op in ("blur", "noise"):
            parts.append(f"{op} {step['sigma']}")
        elif op == "brightness":
            parts.append(f"brightness {step['alpha']:+}")
        elif op == "contrast":
            parts.append(f"contrast x{step['beta']}")
        elif op in ("png", "crop"):
            parts.append(op)
        elif op == "offset_crop":
            parts.append(f"reshare crop +{step['dy']},{step['dx']}")
    return "; ".join(parts)


def write_dataset(
    engine: SynthesisEngine,
    out_dir: Path,
    n: int,
    start: int = 0,
    progress: Callable[[int, SynthSample], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write samples ``start .. start+n-1`` as a benchmark dataset; return the manifest path.

    Layout: ``images/`` (forged files, real JPEG bytes where the history ends in JPEG),
    ``masks/`` (PNG, 255 = manipulated, same stem), ``authentic/``, ``labels.jsonl`` (one JSON
    line per sample: boxes, history, disturbance, sources, seed), ``synth.json`` (config and
    seed) and ``MANIFEST.tsv`` (``image_path, mask_path, label, manipulation_type, notes``),
    written last so its presence means the set is complete. Every file is written atomically;
    no timestamps are recorded, so the same engine gives byte-identical files.

    Raises:
        UsageError: ``out_dir`` is an existing non-empty folder and ``overwrite`` is False.
    """
    from forgectl.outputs import atomic_write, png_bytes, to_json, write_bytes, write_json

    out_dir = Path(out_dir)
    if n < 1:
        raise UsageError("n must be at least 1")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out is a file, not a folder: {out_dir}")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UsageError(f"output folder is not empty: {out_dir} (use --force to write into it)")
    src_resolved = {str(p.resolve()) for p in engine.sources}
    if str(out_dir.resolve()) in src_resolved or any(
        Path(s).is_relative_to(out_dir.resolve()) for s in src_resolved
    ):
        raise UsageError("the output folder holds source images; choose another --out")

    rows = ["image_path\tmask_path\tlabel\tmanipulation_type\tnotes"]
    with atomic_write(out_dir / "labels.jsonl", "w") as labels:
        for index in range(start, start + n):
            sample = engine.sample(index)
            stem = f"{index:06d}_{sample.kind}"
            forged = sample.kind != "authentic"
            image_rel = f"{'images' if forged else 'authentic'}/{stem}{sample.file_ext}"
            mask_rel = f"masks/{stem}.png" if forged else ""
            write_bytes(out_dir / image_rel, sample.file_bytes)
            if forged:
                write_bytes(out_dir / mask_rel, png_bytes(sample.mask * np.uint8(255)))
            rows.append(
                "\t".join(
                    [
                        image_rel,
                        mask_rel,
                        "tampered" if forged else "authentic",
                        MANIFEST_TYPES[sample.kind],
                        _notes(sample),
                    ]
                )
            )
            record = {
                "index": index,
                "seed": sample.seed,
                "image": image_rel,
                "mask": mask_rel or None,
                "kind": sample.kind,
                "size": [sample.image.width, sample.image.height],
                "mask_fraction": round(float(sample.mask.mean()), 5),
                "boxes": sample.boxes.astype(int).tolist(),
                "history": sample.history,
                "disturbance": sample.disturbance,
                "source": sample.source,
            }
            labels.write(to_json(record) + "\n")
            if progress is not None:
                progress(index, sample)
    sources_digest = hashlib.sha256(
        "\n".join(engine._name(p) for p in engine.sources).encode()
    ).hexdigest()
    write_json(
        out_dir / "synth.json",
        {
            "generator": "forgectl.synth.engine",
            "seed": engine.seed,
            "start": start,
            "n": n,
            "sources": len(engine.sources),
            "sources_sha256": sources_digest,
            "config": engine.config.to_dict(),
        },
    )
    manifest = out_dir / "MANIFEST.tsv"
    with atomic_write(manifest, "w") as fh:
        fh.write("\n".join(rows) + "\n")
    return manifest


def read_labels(out_dir: Path) -> list[dict[str, Any]]:
    """The ``labels.jsonl`` records of a dataset written by :func:`write_dataset`."""
    text = (Path(out_dir) / "labels.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in io.StringIO(text) if line.strip()]
