"""Processing histories for synthetic samples: steps that leave the traces real images carry.

A history is an ordered list of steps, each a JSON-ready dict ``{"op": name, **params}``.
The steps after the manipulation are *replayable*: :func:`apply_step` looks the op up in
:data:`OPS` and runs it on ``(pixels, mask)`` with exactly the recorded parameters (noise carries
its seed), so a recorded history is also the recipe that made the sample.

Ops (pixels ``(H, W, 3)`` uint8, mask ``(H, W)`` bool; only ``resize`` and a JPEG
``grid_shift`` change the geometry, and the mask follows them):

* ``jpeg``: real libjpeg encode at ``quality`` with chroma ``subsampling`` and decode; with
  ``grid_shift: [dy, dx]`` the image is first cropped by ``dy`` rows and ``dx`` columns, so
  this compression's 8x8 grid is shifted against every earlier one (non-aligned double JPEG).
* ``resize``: resampling by ``scale`` with ``interpolation`` (area, linear or cubic); the mask
  uses centre-aligned nearest neighbour so it stays on the same grid.
* ``blur``: Gaussian blur with ``sigma`` pixels. ``noise``: Gaussian noise, ``sigma`` grey levels.
* ``brightness`` / ``contrast``: the ReConWave-Net disturbances ``I' = clip(I + alpha)`` and
  ``I' = clip(beta * I)`` with I in [0, 1] (the same functions the benchmark's perturbations
  use, so training and evaluation disturb images identically).

The last step of every sample is its *save*: ``jpeg`` (final file = real JPEG bytes) or
``png``. :func:`encode_final` returns those bytes.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from forgectl.analysis.disturbance import brightness, contrast, gaussian_noise
from forgectl.errors import UsageError
from forgectl.intake import encode_jpeg

Step = dict[str, Any]
#: Pillow's chroma subsampling codes by name.
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
_INTERPOLATIONS = {"area": 3, "linear": 1, "cubic": 2}  # cv2.INTER_* values, without cv2 import


@dataclass
class HistoryConfig:
    """Probabilities and ranges of the processing history (plain data; ranges are inclusive).

    Attributes:
        prior_jpeg_prob: the host is JPEG-compressed *before* the edit (background double JPEG).
        donor_jpeg_prob: a splice donor is JPEG-compressed on its own grid before pasting.
        prior_quality: quality range of those earlier compressions.
        resize_prob, resize_scale: resampling of the whole image after the edit.
        blur_prob, blur_sigma: Gaussian blur after the edit (pixels).
        noise_prob, noise_sigma: Gaussian noise after the edit (grey levels).
        mid_jpeg_prob: an extra JPEG among the post-edit steps (e.g. upload, then resize).
        final_jpeg_prob: the file is saved as JPEG (else PNG, lossless).
        final_quality: quality range of the final JPEG.
        same_quality_prob: the final JPEG reuses the previous JPEG's quality (hard case).
        grid_shift_prob: when an earlier JPEG exists, the final one is on a shifted 8x8 grid.
        subsampling: weights of chroma subsampling modes for every JPEG.
        disturb_prob: a global brightness or contrast disturbance (ReConWave-Net) is applied.
        brightness_share: share of brightness among disturbances (the rest: contrast).
        alpha_range: |alpha| range; the sign is random (paper grid: +0.5 and -0.5).
        beta_low, beta_high: contrast ranges below and above 1 (paper grid: 0.7 and 2.0),
            drawn with equal probability.
        reshare_prob: the saved file is shared again, as photos are after they are forged:
            decoded, cropped off the 8x8 grid (1-7 pixels each way), maybe downscaled
            (``reshare_scale``, probability ``reshare_resize_prob``) and saved once more as
            JPEG (``reshare_quality``, probability ``reshare_jpeg_prob``) or PNG (a
            screenshot). The forgery's JPEG traces are then misaligned or gone, so the
            DCT stream misleads and Omni's gate must learn to route to RGB.
    """

    prior_jpeg_prob: float = 0.5
    donor_jpeg_prob: float = 0.5
    prior_quality: tuple[int, int] = (50, 95)
    resize_prob: float = 0.25
    resize_scale: tuple[float, float] = (0.6, 1.4)
    blur_prob: float = 0.08
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    noise_prob: float = 0.1
    noise_sigma: tuple[float, float] = (0.5, 4.0)
    mid_jpeg_prob: float = 0.08
    final_jpeg_prob: float = 0.8
    final_quality: tuple[int, int] = (60, 100)
    same_quality_prob: float = 0.1
    grid_shift_prob: float = 0.35
    subsampling: dict[str, float] = field(
        default_factory=lambda: {"4:2:0": 0.7, "4:4:4": 0.2, "4:2:2": 0.1}
    )
    disturb_prob: float = 0.5
    brightness_share: float = 0.5
    alpha_range: tuple[float, float] = (0.1, 0.6)
    beta_low: tuple[float, float] = (0.5, 0.9)
    beta_high: tuple[float, float] = (1.25, 2.2)
    reshare_prob: float = 0.0
    reshare_resize_prob: float = 0.5
    reshare_scale: tuple[float, float] = (0.5, 0.9)
    reshare_jpeg_prob: float = 0.75
    reshare_quality: tuple[int, int] = (70, 95)

    def __post_init__(self) -> None:
        for name in ("prior_quality", "final_quality", "reshare_quality"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi <= 100:
                raise UsageError(f"{name} must satisfy 1 <= low <= high <= 100")
        unknown = set(self.subsampling) - set(SUBSAMPLING)
        if unknown or not self.subsampling or min(self.subsampling.values()) < 0:
            raise UsageError(f"subsampling weights must name {sorted(SUBSAMPLING)}")

    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))


def _plain(obj: Any) -> Any:
    """Tuples to lists, recursively (JSON-ready)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- ops


def decode_rgb(data: bytes) -> np.ndarray:
    """Decode an encoded image to (H, W, 3) uint8 RGB (pixels only; no JPEG internals)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def jpeg_roundtrip(rgb: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """(H, W, 3) uint8 -> the same pixels after a real JPEG encode and decode."""
    return decode_rgb(encode_jpeg(rgb, int(quality), subsampling=SUBSAMPLING[subsampling]))


def _shift(rgb: np.ndarray, mask: np.ndarray, grid_shift: Any) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = (int(v) for v in (grid_shift or (0, 0)))
    return rgb[dy:, dx:], mask[dy:, dx:]


def _op_jpeg(
    rgb: np.ndarray,
    mask: np.ndarray,
    quality: int,
    subsampling: str = "4:2:0",
    grid_shift: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    rgb, mask = _shift(rgb, mask, grid_shift)
    return jpeg_roundtrip(np.ascontiguousarray(rgb), quality, subsampling), mask


def resample(
    rgb: np.ndarray, mask: np.ndarray, scale: float, interpolation: str = "area"
) -> tuple[np.ndarray, np.ndarray]:
    """Resize pixels by ``scale`` and the mask to the same grid (nearest, centre-aligned).

    Args:
        rgb: (H, W, 3) uint8. mask: (H, W) bool.

    Returns:
        ``(rgb', mask')`` of size ``(round(scale*H), round(scale*W))`` (at least 8x8).
    """
    import cv2

    h, w = rgb.shape[:2]
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    out = cv2.resize(rgb, size, interpolation=_INTERPOLATIONS[interpolation])
    # INTER_NEAREST_EXACT samples at pixel centres, as the pixel resamplers do.
    out_mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST_EXACT)
    return out, out_mask.astype(bool)


def _op_blur(rgb: np.ndarray, mask: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    blurred = cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)
    return blurred, mask


def _op_offset_crop(rgb: np.ndarray, mask: np.ndarray, dy: int, dx: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    return _shift(rgb, mask, (dy, dx))


OPS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "jpeg": _op_jpeg,
    "offset_crop": _op_offset_crop,
    "resize": resample,
    "blur": _op_blur,
    "noise": lambda rgb, mask, sigma, seed: (gaussian_noise(rgb, sigma, seed), mask),
    "brightness": lambda rgb, mask, alpha: (brightness(rgb, alpha), mask),
    "contrast": lambda rgb, mask, beta: (contrast(rgb, beta), mask),
}


def apply_step(rgb: np.ndarray, mask: np.ndarray, step: Step) -> tuple[np.ndarray, np.ndarray]:
    """Run one recorded step on ``(rgb, mask)``; unknown keys other than ``op`` are params."""
    params = {k: v for k, v in step.items() if k not in ("op", "stage")}
    return OPS[step["op"]](rgb, mask, **params)


def apply_steps(
    rgb: np.ndarray, mask: np.ndarray, steps: list[Step]
) -> tuple[np.ndarray, np.ndarray]:
    for step in steps:
        rgb, mask = apply_step(rgb, mask, step)
    return rgb, mask


def encode_final(rgb: np.ndarray, mask: np.ndarray, step: Step) -> tuple[bytes, str, np.ndarray]:
    """Save step -> ``(file bytes, extension, mask on the saved grid)``.

    ``{"op": "jpeg", "quality", "subsampling", "grid_shift"}`` writes real JPEG bytes (libjpeg
    via Pillow, IJG tables); ``{"op": "png"}`` writes a lossless PNG.
    """
    from PIL import Image

    if step["op"] == "png":
        # zlib level 1: the generator runs inside training loops, and level 6 (the output
        # writers' choice) costs several times more for a few percent smaller files.
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), ".png", mask
    if step["op"] != "jpeg":
        raise ValueError(f"a save step is 'jpeg' or 'png', not {step['op']!r}")
    rgb, mask = _shift(rgb, mask, step.get("grid_shift"))
    data = encode_jpeg(
        np.ascontiguousarray(rgb),
        int(step["quality"]),
        subsampling=SUBSAMPLING[step.get("subsampling", "4:2:0")],
    )
    return data, ".jpg", mask


# --------------------------------------------------------------------------- sampling


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.asarray([weights[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float], digits: int = 3) -> float:
    return round(float(rng.uniform(bounds[0], bounds[1])), digits)


def _quality(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def plan_prior_jpeg(rng: np.random.Generator, cfg: HistoryConfig, prob: float) -> Step | None:
    """A JPEG compression before the edit, with probability ``prob`` (host or donor)."""
    if rng.random() >= prob:
        return None
    return {
        "op": "jpeg",
        "quality": _quality(rng, cfg.prior_quality),
        "subsampling": _pick(rng, cfg.subsampling),
    }


def plan_post(rng: np.random.Generator, cfg: HistoryConfig, min_scale: float = 0.0) -> list[Step]:
    """Post-edit steps (resample, blur, noise, an extra JPEG), each optional, in random order.

    Args:
        min_scale: smallest resampling scale allowed (keeps small images usable).
    """
    steps: list[Step] = []
    if rng.random() < cfg.resize_prob:
        scale = _uniform(rng, cfg.resize_scale)
        if abs(scale - 1.0) < 0.05:  # a 1 % resize is no resampling worth naming
            scale = 0.9
        scale = max(scale, round(min_scale + 0.0005, 3))
        interp = str(rng.choice(["linear", "cubic"]))
        if scale < 1 and rng.random() < 0.6:
            interp = "area"
        steps.append({"op": "resize", "scale": scale, "interpolation": interp})
    if rng.random() < cfg.blur_prob:
        steps.append({"op": "blur", "sigma": _uniform(rng, cfg.blur_sigma)})
    if rng.random() < cfg.noise_prob:
        steps.append(
            {
                "op": "noise",
                "sigma": _uniform(rng, cfg.noise_sigma),
                "seed": int(rng.integers(2**31)),
            }
        )
    if rng.random() < cfg.mid_jpeg_prob:
        steps.append(
            {
                "op": "jpeg",
                "quality": _quality(rng, cfg.prior_quality),
                "subsampling": _pick(rng, cfg.subsampling),
            }
        )
    order = rng.permutation(len(steps))
    return [steps[int(i)] for i in order]


def plan_disturbance(rng: np.random.Generator, cfg: HistoryConfig) -> dict[str, Any]:
    """``{"type": "none"|"brightness"|"contrast", "alpha": float|None, "beta": float|None}``."""
    if rng.random() >= cfg.disturb_prob:
        return {"type": "none", "alpha": None, "beta": None}
    if rng.random() < cfg.brightness_share:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return {"type": "brightness", "alpha": sign * _uniform(rng, cfg.alpha_range), "beta": None}
    bounds = cfg.beta_low if rng.random() < 0.5 else cfg.beta_high
    return {"type": "contrast", "alpha": None, "beta": _uniform(rng, bounds)}


def disturbance_step(disturbance: dict[str, Any]) -> Step | None:
    """The replayable step of a disturbance, or None for ``type == "none"``."""
    if disturbance["type"] == "brightness":
        return {"op": "brightness", "alpha": disturbance["alpha"]}
    if disturbance["type"] == "contrast":
        return {"op": "contrast", "beta": disturbance["beta"]}
    return None


def plan_save(rng: np.random.Generator, cfg: HistoryConfig, last_quality: int | None) -> Step:
    """The final save: JPEG (maybe on a shifted grid, maybe at the last quality) or PNG.

    Args:
        last_quality: quality of the latest earlier JPEG, or None when there was none.
    """
    if rng.random() >= cfg.final_jpeg_prob:
        return {"op": "png"}
    quality = _quality(rng, cfg.final_quality)
    if last_quality is not None and rng.random() < cfg.same_quality_prob:
        quality = last_quality
    shift = [0, 0]
    if last_quality is not None and rng.random() < cfg.grid_shift_prob:
        while shift == [0, 0]:
            shift = [int(v) for v in rng.integers(0, 8, 2)]
    return {
        "op": "jpeg",
        "quality": quality,
        "subsampling": _pick(rng, cfg.subsampling),
        "grid_shift": shift,
    }


def reshared(history: list[Step]) -> bool:
    """Whether a sample's file was shared again after its save (:func:`plan_reshare`).

    Its JPEG coefficients then describe the re-share, cropped off the grid of every earlier
    save (and maybe resampled): the compression traces left by the edit are scrambled, so the
    DCT stream has nothing to say about where the edit is.
    """
    return any(step.get("stage") == "reshare" for step in history)


def plan_reshare(rng: np.random.Generator, cfg: HistoryConfig, min_scale: float = 0.0
                 ) -> list[Step] | None:
    """Steps after the save when the file is shared again (``reshare_prob``), ending in its
    new save step; None when it is not. The caller decodes the saved file first.

    Args:
        min_scale: smallest resampling scale allowed (keeps small images usable).
    """
    if cfg.reshare_prob <= 0 or rng.random() >= cfg.reshare_prob:
        return None
    steps: list[Step] = [{"op": "offset_crop", "dy": int(rng.integers(1, 8)),
                          "dx": int(rng.integers(1, 8)), "stage": "reshare"}]
    if rng.random() < cfg.reshare_resize_prob:
        scale = max(_uniform(rng, cfg.reshare_scale), round(min_scale + 0.0005, 3))
        if scale < 0.97:
            steps.append({"op": "resize", "scale": scale,
                          "interpolation": str(rng.choice(["area", "linear", "cubic"])),
                          "stage": "reshare"})
    if rng.random() < cfg.reshare_jpeg_prob:
        steps.append({"op": "jpeg", "quality": _quality(rng, cfg.reshare_quality),
                      "subsampling": _pick(rng, cfg.subsampling), "grid_shift": [0, 0]})
    else:
        steps.append({"op": "png"})
    return steps
