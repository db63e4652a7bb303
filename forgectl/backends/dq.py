"""Aligned double-JPEG (A-DJPG) analysis: where is the image *not* compressed twice?

When a JPEG is decoded, edited and saved again on the same 8x8 grid, every untouched block is
quantized twice (steps ``Q1`` then ``Q2``) and its DCT coefficient histograms get a periodic
pattern (empty or doubled bins). Content pasted from elsewhere (never compressed, or compressed
on another grid or with other tables) is quantized only once by ``Q2`` and lacks that pattern.

Following Bianchi & Piva (2012), per low-frequency AC position we model the file's histogram as a
mixture of a double-quantized and a single-quantized component, both derived from the
distribution of unquantized coefficients (estimated by *calibration*: the DCT of the decoded
image on a grid shifted by 4 pixels, which the quantization grid does not reach), estimate ``Q1``
and the mixture weight by maximum likelihood, and score every 8x8 block by the likelihood ratio
of its coefficients under "single" vs "double". The method is blind to images that show no
double compression (then it says so and returns an empty map).
"""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np

from forgectl.analysis.jpeg import (
    block_dct,
    block_plane,
    blocks_to_pixels,
    clipped_blocks,
    fit_primary_step,
    low_frequency_ac,
    luma,
    smoothed_cdf,
)
from forgectl.backends.base import Backend, MethodSpec, Result
from forgectl.backends.options import Option, require
from forgectl.intake import ForensicImage, ijg_table


class DqBackend(Backend):
    """Aligned double-JPEG block posterior map (single-compressed blocks are hot)."""

    spec = MethodSpec(
        name="dq",
        summary="Aligned double-JPEG: map blocks lacking the double-quantization pattern",
        kind="classical",
        needs_jpeg=True,
        uses_jpeg=True,
        paper=(
            "T. Bianchi, A. Piva, 'Image forgery localization via block-grained analysis of "
            "JPEG artifacts', IEEE TIFS 2012; Z. Lin et al., 'Fast, automatic and fine-grained "
            "tampered JPEG image detection via DCT coefficient analysis', Pattern Recognition 2009"
        ),
    )

    OPTIONS: ClassVar[tuple[Option, ...]] = (
        Option("frequencies", 15, "first N AC positions in zigzag order", minimum=1, maximum=63),
        Option("max_primary_step", 40, "largest first quantization step tried", minimum=2),
        Option("value_range", 80.0, "coefficient magnitude (dequantized units) covered by the "
               "histograms (above 0)", minimum=0.0),
        Option("sigma", 0.8, "decode rounding error between the two compressions, coefficient "
               "units (above 0)", minimum=0.0),
        Option("min_gain", 0.02, "nats per coefficient a frequency must gain from the double "
               "model"),
        Option("min_separation", 0.05, "total variation between single/double histograms for "
               "a frequency to be usable", minimum=0.0, maximum=1.0),
        Option("min_authentic_fraction", 0.5, "least weight of the double component (the "
               "authentic majority)", minimum=0.0, maximum=1.0),
        Option("min_frequencies", 2, "informative frequencies needed to call the image "
               "double-compressed", minimum=1),
        Option("min_total_gain", 0.1, "summed gain of those frequencies, nats per coefficient"),
        Option("cap", 3.0, "bound on one coefficient's log-likelihood ratio (outlier guard)",
               minimum=0.0),
        Option("smooth", 3, "side, in blocks, of the window averaging the log-likelihood ratio",
               minimum=1),
        Option("min_blocks", 256, "fewer 8x8 blocks give histograms too thin to fit", minimum=0),
    )

    def check_options(self) -> None:
        opt = self.options
        require(opt["sigma"] > 0 and opt["value_range"] > 0, "dq sigma/value_range must be > 0")

    def analyze(self, image: ForensicImage) -> Result:
        assert image.jpeg is not None  # localize() checked needs_jpeg
        h, w = image.height, image.width
        coefficients = image.jpeg.y_coefficients(h, w)
        table = image.jpeg.y_quant
        bh, bw = coefficients.shape[0] // 8, coefficients.shape[1] // 8
        blind = np.zeros((h, w), np.float32)
        if bh * bw < self.options["min_blocks"] or min(h, w) < 24:
            return Result.from_heatmap(
                blind,
                self.threshold,
                score=0.0,
                note="image too small for coefficient histograms; dq says nothing here",
                facts={
                    "double_compressed": False,
                    "primary_quality_estimate": None,
                    "frequencies": [],
                },
            )

        positions = low_frequency_ac(self.options["frequencies"])
        # Calibration: DCT on a grid shifted by (4, 4) sees coefficients the file's quantizer
        # never touched, an estimate of their unquantized distribution (Fridrich's trick).
        calibrated = block_dct(luma(image.rgb), (4, 4))
        sigma = self.options["sigma"]
        vmax = self.options["value_range"]
        candidates = range(1, self.options["max_primary_step"] + 1)

        # Pixels clipped to 0 or 255 by a decoder break the model (their rounding error is not
        # small), so blocks holding them (or a value next to them) neither enter the fits nor
        # get a vote.
        reliable = ~clipped_blocks(image.rgb, bh, bw, margin=2)
        log_ratio = np.zeros((bh, bw), np.float32)
        used: list[dict[str, object]] = []
        cap = self.options["cap"]
        for u, v in positions:
            step = int(table[u, v])
            half_range = max(2, int(np.ceil(vmax / step)))
            values = block_plane(coefficients, u, v)
            fit = fit_primary_step(
                values[reliable],
                smoothed_cdf(calibrated[:, :, u, v]),
                step,
                candidates,
                half_range,
                sigma=sigma,
            )
            informative = (
                fit.gain_per_coefficient >= self.options["min_gain"]
                and fit.separation >= self.options["min_separation"]
                and fit.authentic_fraction >= self.options["min_authentic_fraction"]
            )
            if not informative:
                continue
            table_lr = np.clip(fit.log_ratio, -cap, cap).astype(np.float32)
            inside = (np.abs(values) <= half_range) & reliable
            idx = np.clip(values + half_range, 0, 2 * half_range)
            log_ratio += np.where(inside, table_lr[idx], 0.0)
            used.append(
                {
                    "position": [u, v],
                    "step": step,
                    "primary_step": fit.primary_step,
                    "authentic_fraction": round(fit.authentic_fraction, 3),
                    "gain": round(float(fit.gain_per_coefficient), 4),
                    "separation": round(fit.separation, 3),
                }
            )

        facts: dict[str, object] = {
            "frequencies_tried": [list(p) for p in positions],
            "frequencies": used,
        }
        total_gain = float(sum(f["gain"] for f in used))
        facts["evidence_nats_per_coefficient"] = round(total_gain, 4)
        opt = self.options
        if len(used) < opt["min_frequencies"] or total_gain < opt["min_total_gain"]:
            facts.update(double_compressed=False, primary_quality_estimate=None)
            return Result.from_heatmap(
                blind,
                self.threshold,
                score=0.0,
                facts=facts,
                note="no aligned double JPEG compression found: dq is blind on this image",
            )

        k = self.options["smooth"]
        # Average the evidence of reliable blocks only (normalised convolution); a block with no
        # reliable neighbour has no evidence and stays cold instead of sitting at 0.5.
        weight = reliable.astype(np.float32)
        total = cv2.blur(log_ratio, (k, k), borderType=cv2.BORDER_REFLECT)
        support = cv2.blur(weight, (k, k), borderType=cv2.BORDER_REFLECT)
        smoothed = total / np.maximum(support, 1e-6)
        posterior = np.where(support > 0.5 / (k * k), _sigmoid(smoothed), 0.0)  # equal priors
        heat = blocks_to_pixels(posterior.astype(np.float32), h, w)
        raw = blocks_to_pixels(
            np.where(reliable, _sigmoid(log_ratio), 0.0).astype(np.float32), h, w
        )

        quality = _primary_quality(used)
        fraction = float((heat >= self.threshold).mean())
        # An image-level call needs a *minority* of singly compressed content: if most of the
        # image is single-compressed, the double-compressed part is the odd one out instead.
        minority = float(np.clip((1.0 - fraction) / 0.5, 0.0, 1.0))
        # 98th percentile: a region must cover about 2% of the image to carry the score.
        score = float(np.percentile(heat, 98)) * minority
        facts.update(
            double_compressed=True,
            primary_quality_estimate=quality,
            authentic_fraction=round(float(np.median([f["authentic_fraction"] for f in used])), 3),
        )
        return Result.from_heatmap(
            heat,
            self.threshold,
            score=score,
            facts=facts,
            maps={"block_posterior_unsmoothed": raw},
            note=f"double JPEG compression found (first quality about {quality})",
        )

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note
        if not result.facts.get("double_compressed"):
            return (
                "No aligned double JPEG compression is visible, so dq is blind here: it neither "
                "clears nor flags any region."
            )
        q = result.facts.get("primary_quality_estimate")
        pct = 100 * result.tampered_fraction
        if pct < 0.5:
            return (
                f"The image was JPEG-compressed twice (first at about quality {q}) and every "
                "region shows it: no singly compressed (pasted) area."
            )
        return (
            f"The image was JPEG-compressed twice (first at about quality {q}), but {pct:.1f}% "
            "of it was compressed only once, as content pasted before the last save would be."
        )


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))).astype(np.float32)


def _primary_quality(used: list[dict[str, object]]) -> int:
    """IJG quality whose luminance table best matches the estimated first steps."""
    positions = [tuple(f["position"]) for f in used]
    steps = np.array([f["primary_step"] for f in used], np.float64)
    errors = []
    for q in range(1, 101):
        t = ijg_table(q)
        predicted = np.array([t[u, v] for u, v in positions], np.float64)
        errors.append(np.abs(np.log(predicted) - np.log(steps)).sum())
    return int(np.argmin(errors)) + 1
