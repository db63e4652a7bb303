"""Restoration quality as in ReConWave-Net's Table 1: PSNR and SSIM before and after restoring
brightness / contrast disturbances.

For every clean test image ``I`` and disturbance setting ``D`` (alpha = 0.5, alpha = -0.5,
beta = 0.7, beta = 2.0, the paper's grid; plus an undisturbed row that shows what a restorer
does to an image that needs nothing), the table reports the mean over images of
``PSNR(I, D(I))`` and ``SSIM(I, D(I))`` ("unrestored") and ``PSNR(I, R(D(I)))``,
``SSIM(I, R(D(I)))`` for each restorer R (the classical baseline, the learned module when its
weights are given). The disturbances are :func:`forgectl.analysis.disturbance.brightness` and
``contrast``, the functions training uses.

Metrics (both on 8-bit RGB, data range 255):

* PSNR ``10 log10(255^2 / MSE)``, MSE over all pixels and channels; identical images give
  ``inf`` (reported as such, and left out of means: no finite number is right).
* SSIM (Wang, Bovik, Sheikh, Simoncelli 2004): local statistics under an 11 x 11 Gaussian window
  with sigma 1.5, ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, covariances with the
  unbiased N / (N - 1) factor of the reference implementation; the SSIM map is averaged over
  pixels at least 5 pixels from the border (where the window is complete) and over the three
  channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forgectl.analysis.disturbance import brightness, contrast

#: The paper's grid, as (label, kind, value); "none" is this table's extra control row.
SETTINGS: tuple[tuple[str, str, float | None], ...] = (
    ("alpha=0.5", "brightness", 0.5),
    ("alpha=-0.5", "brightness", -0.5),
    ("beta=0.7", "contrast", 0.7),
    ("beta=2.0", "contrast", 2.0),
)
CONTROL = ("none", "none", None)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5

Restore = Callable[[np.ndarray], np.ndarray]


def disturb(rgb: np.ndarray, kind: str, value: float | None) -> np.ndarray:
    """(H, W, 3) uint8 -> disturbed uint8 (``kind`` brightness, contrast or none)."""
    if kind == "brightness":
        return brightness(rgb, float(value))  # type: ignore[arg-type]
    if kind == "contrast":
        return contrast(rgb, float(value))  # type: ignore[arg-type]
    if kind == "none":
        return rgb.copy()
    raise ValueError(f"unknown disturbance {kind!r}")


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C), got {a.shape}")


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images.

    Args:
        reference, test: (H, W) or (H, W, C) arrays of the same shape (any real dtype).
    """
    _check_pair(reference, test)
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian(plane: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(
        plane, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT
    )


def ssim_map(reference: np.ndarray, test: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Per-pixel SSIM of two single-channel (H, W) images (float64 map of the same size)."""
    _check_pair(reference, test)
    x = reference.astype(np.float64)
    y = test.astype(np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    n = SSIM_WINDOW * SSIM_WINDOW
    unbias = n / (n - 1.0)
    mx, my = _gaussian(x), _gaussian(y)
    vx = unbias * (_gaussian(x * x) - mx * mx)
    vy = unbias * (_gaussian(y * y) - my * my)
    cxy = unbias * (_gaussian(x * y) - mx * my)
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = 255.0) -> float:
    """Mean SSIM (Gaussian window); (H, W, C) images average their channels.

    Pixels closer than 5 to the border are left out of the mean when the image is larger than
    the window (their window is incomplete); smaller images use every pixel.
    """
    _check_pair(reference, test)
    ref = reference[..., None] if reference.ndim == 2 else reference
    tst = test[..., None] if test.ndim == 2 else test
    r = SSIM_WINDOW // 2
    values = []
    for c in range(ref.shape[2]):
        m = ssim_map(
            np.ascontiguousarray(ref[..., c]), np.ascontiguousarray(tst[..., c]), data_range
        )
        if m.shape[0] > 2 * r and m.shape[1] > 2 * r:
            m = m[r:-r, r:-r]
        values.append(float(m.mean()))
    return float(np.mean(values))


# --------------------------------------------------------------------------- test set


@dataclass
class EvalImage:
    """One clean test image: a synthetic forgery made from a held-out photo."""

    kind: str  # splice | copymove | removal
    rgb: np.ndarray  # (H, W, 3) uint8, the image before any disturbance
    name: str


def held_out_photos(corpus: Path, count: int, skip: int = 0, split: str = "test") -> list[Path]:
    """``count`` photos of the corpus's ``test`` split (never used in training), after the
    first ``skip`` (the table uses 0; other offsets give validation sets apart from it).

    ``split="all"``: every photo of the folder, for a source that training left out entirely
    (``benchmarks/restore_loso.py``)."""
    from forgectl.synth.engine import list_images, split_sources

    return split_sources(list_images(Path(corpus)), split)[skip : skip + count]


def synthetic_set(
    photos: list[Path],
    per_kind: int,
    seed: int = 2026,
    kinds: Iterable[str] = ("copymove", "splice", "removal"),
) -> list[EvalImage]:
    """``per_kind`` forgeries of each kind made from ``photos`` only (hosts and donors).

    The synthetic engine's own brightness/contrast step is switched off: the table applies the
    disturbances itself, to these clean images. The rest of the history (JPEG, resampling, ...)
    is the engine's default, so the clean images look like the ones the localizer sees.
    """
    from forgectl.synth.engine import SynthConfig, SynthesisEngine

    config = SynthConfig.from_dict({"history": {"disturb_prob": 0.0}})
    engine = SynthesisEngine(photos, seed=seed, config=config)
    out = []
    for kind in kinds:
        for i in range(per_kind):
            sample = engine.sample(i, kind=kind)
            out.append(EvalImage(kind, sample.image.rgb, sample.image.name))
    return out


# --------------------------------------------------------------------------- the table


@dataclass
class Table:
    """Mean PSNR / SSIM per setting and column, overall and per forgery kind.

    ``cells[(setting, column)] = {"psnr": mean dB, "ssim": mean, "n": images, "n_inf": images
    restored exactly (PSNR inf, left out of the PSNR mean)}``; ``by_kind[kind]`` the same per
    kind.
    """

    settings: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    by_kind: dict[str, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def plain(cells: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
            return {f"{s} | {c}": v for (s, c), v in cells.items()}

        return {
            "settings": self.settings,
            "columns": self.columns,
            "cells": plain(self.cells),
            "by_kind": {k: plain(v) for k, v in self.by_kind.items()},
            "facts": self.facts,
        }


def _summarize(values: list[tuple[float, float]]) -> dict[str, Any]:
    finite = [p for p, _ in values if math.isfinite(p)]
    return {
        "psnr": round(float(np.mean(finite)), 3) if finite else math.inf,
        "ssim": round(float(np.mean([s for _, s in values])), 4),
        "n": len(values),
        "n_inf": len(values) - len(finite),
    }


def oracle_inverse(rgb: np.ndarray, kind: str, value: float | None) -> np.ndarray:
    """The inverse formula with the *true* parameter: ``clip(I' - alpha)`` or ``clip(I' / beta)``.

    Not a restorer (it is told the disturbance): the ceiling of any formula-based restoration,
    exact where nothing was clipped, so the gap to it is what clipping destroyed. It equals the
    learned restorer before training given a perfect classifier (its residual starts at zero).
    """
    x = rgb.astype(np.float64) / 255.0
    if kind == "brightness":
        x = x - float(value)  # type: ignore[arg-type]
    elif kind == "contrast":
        x = x / float(value)  # type: ignore[arg-type]
    return np.clip(np.round(np.clip(x, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


def restoration_table(
    images: list[EvalImage],
    restorers: dict[str, Restore],
    settings: Iterable[tuple[str, str, float | None]] = (*SETTINGS, CONTROL),
    oracle: bool = True,
) -> Table:
    """PSNR / SSIM of unrestored and restored images against the clean ones.

    Args:
        images: clean test images. restorers: column name -> ``fn(rgb uint8) -> rgb uint8``
            (the disturbed image in, the restored image out, same shape).
        settings: (label, kind, value) rows; default the paper's four and the control row.
        oracle: add the ``oracle`` column (:func:`oracle_inverse`, told the true parameter).

    Returns:
        A :class:`Table` with columns ``unrestored``, the restorers in the given order, then
        ``oracle``.
    """
    settings = list(settings)
    columns = ["unrestored", *restorers] + (["oracle"] if oracle else [])
    values: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for img in images:
        for label, kind, value in settings:
            disturbed = disturb(img.rgb, kind, value)
            outputs = {"unrestored": disturbed}
            for name, fn in restorers.items():
                restored = np.asarray(fn(disturbed))
                if restored.shape != img.rgb.shape or restored.dtype != np.uint8:
                    raise ValueError(
                        f"restorer {name!r} returned {restored.shape} "
                        f"{restored.dtype} for {img.rgb.shape} uint8"
                    )
                outputs[name] = restored
            if oracle:
                outputs["oracle"] = oracle_inverse(disturbed, kind, value)
            for col, out in outputs.items():
                pair = (psnr(img.rgb, out), ssim(img.rgb, out))
                values.setdefault((label, col, "all"), []).append(pair)
                values.setdefault((label, col, img.kind), []).append(pair)
    table = Table([s[0] for s in settings], columns)
    kinds = sorted({img.kind for img in images})
    for label, *_ in settings:
        for col in columns:
            table.cells[(label, col)] = _summarize(values[(label, col, "all")])
            for k in kinds:
                table.by_kind.setdefault(k, {})[(label, col)] = _summarize(values[(label, col, k)])
    table.facts = {
        "images": len(images),
        "kinds": {k: sum(i.kind == k for i in images) for k in kinds},
    }
    return table


def format_markdown(
    table: Table, cells: dict[tuple[str, str], dict[str, Any]] | None = None
) -> str:
    """The table as Markdown: one row per setting, PSNR (dB) / SSIM pairs per column."""
    cells = table.cells if cells is None else cells
    head = "| setting | " + " | ".join(f"{c} PSNR | {c} SSIM" for c in table.columns) + " |"
    rule = "|---|" + "---:|---:|" * len(table.columns)
    rows = [head, rule]
    for s in table.settings:
        parts = []
        for c in table.columns:
            cell = cells[(s, c)]
            p = "inf" if not math.isfinite(cell["psnr"]) else f"{cell['psnr']:.2f}"
            parts.append(f"{p} | {cell['ssim']:.4f}")
        rows.append(f"| {s} | " + " | ".join(parts) + " |")
    return "\n".join(rows)
