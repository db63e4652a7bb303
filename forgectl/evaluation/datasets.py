"""Benchmark datasets: a folder layout or a ``MANIFEST.tsv``, read into a list of items.

Two layouts are understood (the manifest wins when both are present):

* ``MANIFEST.tsv`` (tab-separated, with a header): ``image_path``, ``mask_path`` (empty for
  authentic images), ``label`` (``tampered`` / ``authentic`` and synonyms), and optionally
  ``manipulation_type`` and ``notes``. Paths are relative to the manifest's folder. This is what
  ``casia1-dev`` ships and what ``forgectl synth`` writes.
* Folders: ``images/`` (tampered) paired by file stem with ``masks/`` (any image format;
  ``<stem>``, ``<stem>_gt`` or ``<stem>_mask``), and optionally ``authentic/``.

Masks are read as grey levels, ``> 127`` = tampered. Nothing is resized: a mask whose size
differs from its image is an error for that item (see :func:`load_mask`).

A problem found while listing (an image without a mask, an unknown label, a missing file) does
not stop loading: the item carries it in ``problem`` and the benchmark counts and lists it.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from forgectl.errors import InputError
from forgectl.intake import IMAGE_EXTENSIONS

MANIFEST_NAME = "MANIFEST.tsv"
#: Mask file stems tried for an image ``<stem>.<ext>`` in the folder layout, in this order.
MASK_STEM_SUFFIXES = ("", "_gt", "_mask")

_TAMPERED_WORDS = frozenset({"tampered", "forged", "fake", "manipulated", "1", "true", "yes"})
_AUTHENTIC_WORDS = frozenset(
    {"authentic", "pristine", "real", "original", "genuine", "0", "false", "no"}
)


@dataclass(frozen=True)
class Item:
    """One benchmark image.

    Attributes:
        key: the image path relative to the dataset root (POSIX form); unique in a dataset.
        image: path of the image file.
        mask: path of the ground-truth mask, or None (authentic images).
        tampered: True for a manipulated image, False for an authentic one.
        manipulation: manipulation type from the manifest (``splice``, ``copy-move``, ...), or "".
        problem: why this item cannot be evaluated (found while listing), or None.
    """

    key: str
    image: Path
    mask: Path | None
    tampered: bool
    manipulation: str = ""
    problem: str | None = None

    @property
    def label(self) -> str:
        return "tampered" if self.tampered else "authentic"


@dataclass
class Dataset:
    """Items of a benchmark dataset, in a fixed order (manifest order, or sorted by path).

    Attributes:
        root: the dataset folder.
        layout: ``"manifest"`` or ``"folders"``.
        items: the images.
        warnings: problems that are not items (for example a mask with no image).
    """

    root: Path
    layout: str
    items: list[Item]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)

    @property
    def n_tampered(self) -> int:
        return sum(it.tampered for it in self.items)

    @property
    def n_authentic(self) -> int:
        return sum(not it.tampered for it in self.items)

    def sample(self, limit: int | None, seed: int = 0) -> Dataset:
        """A deterministic subset of at most ``limit`` items, stratified by label.

        Each label keeps its share of the dataset (rounded, at least one item per label when
        ``limit`` allows); the chosen items are drawn with ``numpy.random.default_rng(seed)``
        and returned in dataset order. The same dataset, limit and seed give the same subset.
        """
        if limit is None or limit >= len(self.items):
            return self
        if limit < 1:
            raise ValueError("limit must be at least 1")
        groups = [
            [i for i, it in enumerate(self.items) if it.tampered],
            [i for i, it in enumerate(self.items) if not it.tampered],
        ]
        groups = [g for g in groups if g]
        total = len(self.items)
        quotas = [round(limit * len(g) / total) for g in groups]
        if len(groups) == 2 and limit >= 2:
            quotas = [max(1, q) for q in quotas]
        # Fix rounding so the quotas add up to the limit: adjust the largest group.
        big = int(np.argmax([len(g) for g in groups]))
        quotas[big] += limit - sum(quotas)
        rng = np.random.default_rng(seed)
        chosen: list[int] = []
        for g, q in zip(groups, quotas, strict=True):
            picks = rng.permutation(len(g))[: max(0, min(q, len(g)))]
            chosen.extend(g[int(p)] for p in picks)
        items = [self.items[i] for i in sorted(chosen)]
        return replace(self, items=items)


def _label_from_text(text: str, has_mask: bool) -> bool | None:
    word = text.strip().lower()
    if not word:
        return has_mask
    if word in _TAMPERED_WORDS:
        return True
    if word in _AUTHENTIC_WORDS:
        return False
    return None


def _resolve(root: Path, text: str) -> Path:
    p = Path(text.strip())
    return p if p.is_absolute() else root / p


def _key(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _read_manifest(manifest: Path) -> Dataset:
    root = manifest.parent
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {manifest}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    columns = set(reader.fieldnames or [])
    if "image_path" not in columns:
        raise InputError(f"{manifest}: no 'image_path' column in the header")
    if not ({"mask_path", "label"} & columns):
        raise InputError(f"{manifest}: needs a 'mask_path' or a 'label' column")
    items: list[Item] = []
    seen: set[str] = set()
    for line_no, row in enumerate(reader, start=2):
        image_text = (row.get("image_path") or "").strip()
        if not image_text:
            continue
        image = _resolve(root, image_text)
        mask_text = (row.get("mask_path") or "").strip()
        mask = _resolve(root, mask_text) if mask_text else None
        key = _key(root, image)
        tampered = _label_from_text(row.get("label") or "", mask is not None)
        problem = None
        if key in seen:
            problem = f"listed twice in {manifest.name} (line {line_no})"
        elif tampered is None:
            problem = f"unknown label {row.get('label')!r} ({manifest.name} line {line_no})"
        elif not image.is_file():
            problem = "image file not found"
        elif tampered and mask is None:
            problem = "tampered image without a mask_path"
        elif tampered and mask is not None and not mask.is_file():
            problem = f"mask file not found: {mask_text}"
        seen.add(key)
        items.append(
            Item(
                key=key,
                image=image,
                mask=mask if tampered else None,
                tampered=bool(tampered),
                manipulation=(row.get("manipulation_type") or "").strip(),
                problem=problem,
            )
        )
    return Dataset(root=root, layout="manifest", items=items)


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _read_folders(root: Path) -> Dataset:
    images_dir, masks_dir, authentic_dir = root / "images", root / "masks", root / "authentic"
    if not images_dir.is_dir() and not authentic_dir.is_dir():
        raise InputError(
            f"{root}: not a dataset (no {MANIFEST_NAME}, no images/ or authentic/ folder)"
        )
    masks_by_stem: dict[str, list[Path]] = {}
    if masks_dir.is_dir():
        for m in _images_in(masks_dir):
            masks_by_stem.setdefault(m.stem, []).append(m)
    used: set[Path] = set()
    items: list[Item] = []
    warnings: list[str] = []
    if images_dir.is_dir():
        for image in _images_in(images_dir):
            candidates: list[Path] = []
            for suffix in MASK_STEM_SUFFIXES:
                candidates = masks_by_stem.get(image.stem + suffix, [])
                if candidates:
                    break
            problem = None
            mask = None
            used.update(candidates)
            if not candidates:
                problem = "no mask with the same stem in masks/"
            elif len(candidates) > 1:
                names = ", ".join(c.name for c in candidates)
                problem = f"several masks match: {names}"
            else:
                mask = candidates[0]
            items.append(
                Item(key=_key(root, image), image=image, mask=mask, tampered=True, problem=problem)
            )
    if authentic_dir.is_dir():
        for image in _images_in(authentic_dir):
            items.append(Item(key=_key(root, image), image=image, mask=None, tampered=False))
    for paths in masks_by_stem.values():
        warnings.extend(
            f"mask {_key(root, p)} matches no image in images/" for p in paths if p not in used
        )
    return Dataset(root=root, layout="folders", items=items, warnings=warnings)


def load_dataset(path: str | Path) -> Dataset:
    """Read a dataset folder (``MANIFEST.tsv`` or ``images/`` + ``masks/`` [+ ``authentic/``]),
    or a manifest file given directly.

    Raises:
        InputError: the path is missing, is not a dataset, the manifest is malformed, or the
            dataset has no images.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such dataset: {p}")
    if p.is_file():
        dataset = _read_manifest(p)
    elif (p / MANIFEST_NAME).is_file():
        dataset = _read_manifest(p / MANIFEST_NAME)
    else:
        dataset = _read_folders(p)
    if not dataset.items:
        raise InputError(f"{p}: the dataset lists no images")
    return dataset


def load_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a ground-truth mask as (H, W) bool, ``grey > 127`` = tampered.

    Colour masks are converted to grey (ITU-R 601 luma, Pillow's ``convert("L")``); an alpha
    channel is ignored; 16-bit masks are scaled to 8 bits first; 1-bit masks are used as is.

    Args:
        path: mask file. shape: ``(H, W)`` of the image it belongs to.

    Raises:
        InputError: unreadable mask, or its size differs from ``shape`` (never resized).
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            width, height = img.size
            if (height, width) != tuple(shape):
                raise InputError(
                    f"mask {path.name} is {width}x{height} but its image is "
                    f"{shape[1]}x{shape[0]} (masks are never resized)"
                )
            if img.mode == "1":
                return np.asarray(img, dtype=bool).copy()
            if img.mode.startswith("I") or img.mode == "F":
                grey = np.asarray(img, dtype=np.float64)
                if grey.max(initial=0) > 255:
                    grey = grey / 257.0
                return grey > 127
            return np.asarray(img.convert("L")) > 127
    except InputError:
        raise
    except Exception as exc:  # Pillow raises many types for broken files
        raise InputError(f"cannot read mask {path.name}: {exc}") from exc


def file_list_sha256(items: list[Item]) -> str:
    """SHA-256 over the evaluated items: key, label and the SHA-256 of the image and mask bytes.

    Two runs with the same value saw byte-identical inputs with the same labels, in the same order.
    """
    from forgectl.weights import sha256_file

    h = hashlib.sha256()
    for it in items:
        img_sha = sha256_file(it.image) if it.image.is_file() else "-"
        mask_sha = sha256_file(it.mask) if it.mask is not None and it.mask.is_file() else "-"
        h.update(f"{it.key}\t{it.label}\t{img_sha}\t{mask_sha}\n".encode())
    return h.hexdigest()


def halves(keys: Sequence[str], strata: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """Indices of two fixed halves of a dataset: A to choose on, B to report.

    A pure function of the names, so anyone gets the same halves: within each stratum (e.g.
    label and manipulation type), items sorted by the sha256 of their key (the image path
    relative to the dataset) alternate A, B, A, ... (``benchmarks/split_halves.py`` writes them
    as folders; ``forgectl train --method auto`` chooses its thresholds on A).
    """
    if len(keys) != len(strata):
        raise ValueError("halves: one stratum per key")
    groups: dict[Hashable, list[int]] = {}
    for i, stratum in enumerate(strata):
        groups.setdefault(stratum, []).append(i)
    half_a: list[int] = []
    half_b: list[int] = []
    for stratum in sorted(groups, key=repr):
        ordered = sorted(groups[stratum],
                         key=lambda i: hashlib.sha256(keys[i].encode()).hexdigest())
        for j, i in enumerate(ordered):
            (half_a if j % 2 == 0 else half_b).append(i)
    return half_a, half_b
