"""Post-processing applied to an image before a method sees it (robustness sweeps).

A sweep is written ``KIND:PARAM=V1,V2,...`` (``jpeg:q=50,70,90``, ``brightness:alpha=0.5,-0.5``);
``KIND:V1,V2`` uses the kind's parameter. Each value is one setting, one benchmark row.

What the method receives:

* ``jpeg``: the pixels really JPEG-encoded at quality ``q`` (libjpeg IJG tables, 4:2:0) and
  decoded with :func:`forgectl.intake.image_from_bytes`, so JPEG methods read true DCT
  coefficients and quantization tables.
* every other kind: a lossless pixel image (encoded as PNG and decoded again) with **no JPEG
  data**, whatever the original format: after resampling or filtering, the file's DCT
  coefficients no longer describe the pixels. JPEG-only methods then report "not applicable".

Formulas (pixels ``I`` in [0, 1] where stated, else grey levels 0..255; results are rounded to
8 bits):

* ``resize:scale=s``: size ``round(s * W) x round(s * H)``; pixel area averaging when
  shrinking, bilinear when enlarging. The mask is resized to the same size with
  centre-aligned nearest neighbour, so it stays aligned with the pixels.
* ``blur:k=k``: Gaussian blur with a ``k x k`` kernel (odd k), sigma from k as OpenCV does
  (``0.3 * ((k - 1) / 2 - 1) + 0.8``).
* ``noise:sigma=s``: additive Gaussian noise with standard deviation ``s`` grey levels, seeded
  by the image's SHA-256 and ``s`` (the same image gets the same noise in every run).
* ``brightness:alpha=a``: ``I' = clip(I + a, 0, 1)``; ``contrast:beta=b``: ``I' = clip(b * I,
  0, 1)``; as in ReConWave-Net (alpha 0.5 and -0.5, beta 0.7 and 2.0).

Only ``resize`` changes the geometry; the other kinds leave the mask as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forgectl.analysis.disturbance import (
    brightness,
    contrast,
    gaussian_blur,
    gaussian_noise,
    resize_pair,
)
from forgectl.errors import UsageError
from forgectl.intake import ForensicImage, encode_jpeg, image_from_bytes


@dataclass(frozen=True)
class Kind:
    """A perturbation kind: its parameter, accepted aliases, a validity check and a description."""

    name: str
    param: str
    aliases: tuple[str, ...]
    check: Callable[[float], str | None]
    axis_label: str


def _check_quality(v: float) -> str | None:
    return None if float(v).is_integer() and 1 <= v <= 100 else "q must be an integer in 1..100"


def _check_scale(v: float) -> str | None:
    return None if 0.01 <= v <= 8 else "scale must be in [0.01, 8]"


def _check_kernel(v: float) -> str | None:
    ok = float(v).is_integer() and v >= 1 and int(v) % 2 == 1
    return None if ok else "k must be an odd integer >= 1"


def _check_sigma(v: float) -> str | None:
    return None if 0 <= v <= 255 else "sigma must be in [0, 255] grey levels"


def _check_alpha(v: float) -> str | None:
    return None if -1 <= v <= 1 else "alpha must be in [-1, 1]"


def _check_beta(v: float) -> str | None:
    return None if 0 <= v <= 16 else "beta must be in [0, 16]"


#: The perturbation kinds, as data: name -> parameter, aliases, check, plot axis label.
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("jpeg", "q", ("quality",), _check_quality, "JPEG quality q"),
        Kind("resize", "scale", ("s",), _check_scale, "resize scale"),
        Kind("blur", "k", ("kernel", "ksize"), _check_kernel, "Gaussian blur kernel k"),
        Kind("noise", "sigma", ("std",), _check_sigma, "noise sigma (grey levels)"),
        Kind("brightness", "alpha", ("a",), _check_alpha, "brightness alpha (I + alpha)"),
        Kind("contrast", "beta", ("b",), _check_beta, "contrast beta (beta * I)"),
    )
}


@dataclass(frozen=True)
class Perturbation:
    """One setting of a sweep, e.g. ``jpeg`` with ``q = 70``."""

    kind: str
    value: float

    @property
    def param(self) -> str:
        return KINDS[self.kind].param

    @property
    def label(self) -> str:
        """``jpeg:q=70`` (integers without a decimal point)."""
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{self.kind}:{self.param}={v}"

    def apply(
        self, image: ForensicImage, mask: np.ndarray | None = None
    ) -> tuple[ForensicImage, np.ndarray | None]:
        """Apply to an image and keep its mask aligned.

        Args:
            image: the input. mask: (H, W) bool ground truth, or None.

        Returns:
            ``(image', mask')``: for ``jpeg`` a real JPEG (DCT data present), otherwise a
            decoded PNG with no JPEG data; ``mask'`` is None when ``mask`` is None.
        """
        from forgectl.outputs import png_bytes

        if mask is not None and mask.shape != (image.height, image.width):
            raise ValueError(f"mask {mask.shape} does not match image {image.rgb.shape[:2]}")
        rgb = image.rgb
        v = self.value
        if self.kind == "jpeg":
            return image_from_bytes(encode_jpeg(rgb, int(v)), name=image.name), mask
        if self.kind == "resize":
            rgb, mask = resize_pair(rgb, mask, v)
        elif self.kind == "blur":
            rgb = gaussian_blur(rgb, int(v))
        elif self.kind == "noise":
            rgb = gaussian_noise(rgb, v, self.seed_for(image))
        elif self.kind == "brightness":
            rgb = brightness(rgb, v)
        elif self.kind == "contrast":
            rgb = contrast(rgb, v)
        else:  # pragma: no cover - parse_spec only builds known kinds
            raise UsageError(f"unknown perturbation {self.kind!r}")
        return image_from_bytes(png_bytes(np.ascontiguousarray(rgb)), name=image.name), mask

    def seed_for(self, image: ForensicImage) -> int:
        """A seed fixed by the image content and this setting (not by run order or worker)."""
        digest = image.sha256 or ""
        base = int(digest[:15], 16) if digest else int(image.rgb[::7, ::7].sum())
        return (base ^ int(round(self.value * 1000))) & 0x7FFFFFFF


def parse_spec(spec: str) -> list[Perturbation]:
    """``"jpeg:q=50,70,90"`` -> three :class:`Perturbation` settings.

    Raises:
        UsageError: unknown kind or parameter, a value that is not a number, or out of range.
    """
    kind_name, sep, rest = spec.strip().partition(":")
    kind_name = kind_name.strip().lower()
    known = ", ".join(KINDS)
    if kind_name not in KINDS:
        raise UsageError(f"--perturb: unknown kind {kind_name!r} (known: {known})")
    kind = KINDS[kind_name]
    if not sep or not rest.strip():
        raise UsageError(f"--perturb {spec!r}: give values, e.g. {kind.name}:{kind.param}=...")
    param, eq, values_text = rest.partition("=")
    if eq:
        param = param.strip().lower()
        if param != kind.param and param not in kind.aliases:
            raise UsageError(
                f"--perturb {spec!r}: {kind.name} takes {kind.param}=..., not {param}="
            )
    else:
        values_text = rest
    settings: list[Perturbation] = []
    for raw in values_text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"--perturb {spec!r}: {raw!r} is not a number") from None
        problem = kind.check(value)
        if problem:
            raise UsageError(f"--perturb {spec!r}: {problem}")
        p = Perturbation(kind.name, value)
        if p not in settings:
            settings.append(p)
    if not settings:
        raise UsageError(f"--perturb {spec!r}: no values")
    return settings
