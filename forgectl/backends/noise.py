"""Local noise-level inconsistency (Mahdian & Saic 2009).

Every camera image carries sensor noise of a fairly uniform level; a pasted region from another
photo, or one touched up with added grain or blur, carries a different level. The noise level is
estimated per overlapping block from the finest diagonal wavelet sub-band (HH1) with the robust
MAD estimator, and each block is compared with the image's dominant level (the median over
blocks). The heatmap is the size of that log-ratio.

Texture also lives in HH1, so strongly textured areas read as noisier: the method is an aid
for flat-to-moderately textured scenes. Clipped areas (no noise survives clipping) and
near-noiseless flat areas (skies smoothed by JPEG) are marked unreliable and never lit.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from forgectl.analysis.jpeg import luma
from forgectl.analysis.noise import (
    BlockGrid,
    block_noise_sigma,
    clipped_fraction,
    extent_weighted_score,
    grid_to_pixels,
    wavelet_hh,
)
from forgectl.backends.base import Backend, MethodSpec, Result, compute_threads
from forgectl.backends.options import Option, require
from forgectl.intake import ForensicImage

#: Fraction of reliable blocks that must deviate for the score to reach the deviation strength:
#: a handful of outlier blocks (an edge, a texture patch) should not call a whole image forged.
_EXTENT_FOR_FULL_SCORE = 0.05


def noise_deviation(
    rgb: np.ndarray,
    wavelet: str = "db8",
    block: int = 32,
    stride: int = 8,
    flat_sigma: float = 0.25,
    flat_fraction: float = 0.3,
    max_clipped: float = 0.25,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray, BlockGrid, float]:
    """Per-block noise level and its log-ratio to the image's dominant level.

    Args:
        rgb: (H, W, 3) uint8.
        wavelet, block, stride, flat_sigma, flat_fraction, max_clipped: see ``NOISE_DEFAULTS``.
        threads: CPU threads for the wavelet transform and the block medians (same result).

    Returns:
        ``(log_ratio, sigma, grid, dominant)``: (rows, cols) float32 ``log(sigma / dominant)``
        (NaN on unreliable blocks), (rows, cols) float32 sigma in grey levels, the block grid on
        the HH plane (half resolution), and the dominant sigma (median over reliable blocks; NaN
        when no block is reliable).
    """
    plane = luma(rgb)
    hh = wavelet_hh(plane, wavelet, threads)
    grid = BlockGrid.fit(hh.shape, max(2, block // 2), max(1, stride // 2))
    sigma = block_noise_sigma(hh, grid, threads)
    unclipped = clipped_fraction(plane, grid) <= max_clipped
    # Flat areas (JPEG-smoothed skies, deep shadows) hold no measurable noise: a relative floor
    # keeps them out of both the dominant level and the map, an absolute one covers images
    # that are mostly flat.
    floor = flat_sigma
    if unclipped.any():
        floor = max(flat_sigma, flat_fraction * float(np.median(sigma[unclipped])))
    reliable = unclipped & (sigma >= floor)
    if not reliable.any():
        return np.full(sigma.shape, np.nan, np.float32), sigma, grid, float("nan")
    dominant = float(np.median(sigma[reliable]))
    log_ratio = np.where(reliable, np.log(np.maximum(sigma, 1e-6) / dominant), np.nan)
    return log_ratio.astype(np.float32), sigma, grid, dominant


#: Smallest image side the noise comparison works on.
MIN_SIDE = 8


class NoiseBackend(Backend):
    """Noise-level inconsistency map (options: see ``OPTIONS``)."""

    spec = MethodSpec(
        name="noise",
        summary="Noise-level inconsistency: wavelet (HH1) MAD noise per block vs the image's level",
        kind="classical",
        paper="B. Mahdian, S. Saic, 'Using noise inconsistencies for blind image forensics', "
        "Image and Vision Computing 27(10), 2009",
    )

    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("wavelet", "db8", "orthogonal wavelet of the HH1 sub-band (db8, haar, sym4, ...)"),
        Option("block", 32, "block side in pixels", minimum=4),
        Option("stride", 8, "step between blocks in pixels (at most block)", minimum=2),
        Option("ratio", 3.0, "noise ratio (either way) that maps to heat 1.0 (above 1)",
               minimum=1.0),
        Option("sides", "both", "both: flag noisier or quieter blocks; high: only noisier ones",
               choices=("both", "high")),
        Option("flat_sigma", 0.25, "blocks quieter than this (grey levels) are flat: unreliable",
               minimum=0.0),
        Option("flat_fraction", 0.3, "... and so are blocks quieter than this fraction of the "
               "median", minimum=0.0),
        Option("max_clipped", 0.25, "blocks with a larger fraction of clipped pixels are "
               "unreliable", minimum=0.0, maximum=1.0),
    )

    def check_options(self) -> None:
        import pywt

        opt = self.options
        wavelet = opt["wavelet"]
        require(
            wavelet in pywt.wavelist(kind="discrete") and pywt.Wavelet(wavelet).orthogonal,
            f"noise option wavelet={wavelet!r} is not an orthogonal wavelet (db8, haar, ...)",
        )
        require(opt["stride"] <= opt["block"], "noise option stride must be at most block")
        require(opt["ratio"] > 1.0, "noise option ratio must be > 1")

    def analyze(self, image: ForensicImage) -> Result:
        cfg = self.options
        if min(image.height, image.width) < MIN_SIDE:
            # The wavelet's HH1 band is half the image; two blocks of it need this much.
            return Result.not_applicable(
                image, f"noise needs at least {MIN_SIDE}x{MIN_SIDE} pixels to compare blocks; "
                f"input is {image.width}x{image.height}")
        log_ratio, sigma, grid, dominant = noise_deviation(
            image.rgb,
            wavelet=cfg["wavelet"],
            block=cfg["block"],
            stride=cfg["stride"],
            flat_sigma=cfg["flat_sigma"],
            flat_fraction=cfg["flat_fraction"],
            max_clipped=cfg["max_clipped"],
            threads=compute_threads(),
        )
        shape = (image.height, image.width)
        reliable = np.isfinite(log_ratio)
        if not reliable.any():
            return Result.from_heatmap(
                np.zeros(shape, np.float32),
                self.threshold,
                score=0.0,
                note="no block with measurable noise (flat or clipped image)",
                facts={
                    "dominant_sigma": None,
                    "deviating_fraction": 0.0,
                    "unreliable_fraction": 1.0,
                },
            )
        log_full = float(np.log(cfg["ratio"]))
        deviation = np.abs(log_ratio) if cfg["sides"] == "both" else np.maximum(log_ratio, 0.0)
        block_heat = np.where(reliable, deviation / log_full, 0.0).clip(0.0, 1.0)
        heat = grid_to_pixels(block_heat, grid, 2, shape)
        extent = float((block_heat[reliable] >= self.threshold).mean())
        score = extent_weighted_score(block_heat[reliable], self.threshold, _EXTENT_FOR_FULL_SCORE)
        # The signed map for explain: 0.5 = dominant level, 1 = ratio x noisier, 0 = x quieter.
        signed = np.where(reliable, 0.5 + 0.5 * log_ratio / log_full, 0.5).clip(0.0, 1.0)
        return Result.from_heatmap(
            heat,
            self.threshold,
            score=score,
            maps={
                "noise_sigma": grid_to_pixels(np.clip(sigma / 16.0, 0, 1), grid, 2, shape),
                "signed_deviation": grid_to_pixels(signed, grid, 2, shape),
                "unreliable": grid_to_pixels((~reliable).astype(np.float32), grid, 2, shape),
            },
            facts={
                "dominant_sigma": round(dominant, 4),
                "deviating_fraction": round(extent, 4),
                "unreliable_fraction": round(float(1.0 - reliable.mean()), 4),
            },
        )

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note or "not applicable to this input"
        sigma = result.facts.get("dominant_sigma")
        if sigma is None:
            return "no measurable noise anywhere (flat or clipped image): nothing to compare"
        frac = 100 * float(result.facts.get("deviating_fraction", 0.0))
        return (
            f"dominant noise level {sigma:.2f} grey levels; {frac:.1f}% of reliable blocks are "
            f"noisier or quieter than that by the flagged ratio (texture also reads as noise)"
        )
