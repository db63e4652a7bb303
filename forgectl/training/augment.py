"""DNA (Deviation Noise Augmentation, MUN, AAAI 2025), run in ``Recipe.prepare`` on numpy
pixels before tensors.

One uniform U(0, 1) field per pixel, shared by the three channels, times a per-channel
deviation: the ImageNet RGB mean minus the mean of MUN's training data, ``(0.485 - 0.459,
0.456 - 0.448, 0.406 - 0.409)``. The official code draws separate fields for forged and
pristine pixels with the same factors, which is the same distribution as one field. It adds
the noise to images on the 0-255 scale, so the largest change is 0.026 grey levels:
negligible. ``scale`` exposes this: ``scale=1`` reproduces the official code, ``scale=255``
applies the deviations as they would act on [0, 1] images.

Resampling, blur and re-compression are not augmentations here: the synthetic histories
(:mod:`forgectl.synth.histories`) already apply them to every sample.
"""

from __future__ import annotations

import numpy as np

#: Per-channel RGB deviation of DNA on the [0, 1] scale (ImageNet mean - MUN's data mean).
DNA_DEVIATION: tuple[float, float, float] = (0.485 - 0.459, 0.456 - 0.448, 0.406 - 0.409)


def dna(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: float = 1.0,
    deviation: tuple[float, float, float] = DNA_DEVIATION,
) -> np.ndarray:
    """Deviation Noise Augmentation: ``image + scale * U(0, 1) * deviation`` per channel.

    Args:
        image: (H, W, 3) pixels on the 0-255 scale (any real dtype; uint8 is promoted).
        rng: source of the uniform field (one value per pixel, shared by the channels).
        scale: 1 as in the official code (negligible on 0-255), 255 for the [0, 1]-scale effect.
        deviation: per-channel factors (default :data:`DNA_DEVIATION`).

    Returns:
        (H, W, 3) float32, not clipped (the official code does not clip either).
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"dna: image must be (H, W, 3), got {arr.shape}")
    field = rng.random((arr.shape[0], arr.shape[1], 1), dtype=np.float32)
    factors = np.asarray(deviation, np.float32) * np.float32(scale)
    return arr.astype(np.float32) + field * factors
