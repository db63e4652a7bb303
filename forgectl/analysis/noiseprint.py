"""The noiseprint extractor's numpy side: its input, tiled extraction, and the anomaly map.

The extractor itself (:class:`forgectl.nets.noiseprint.NoiseprintNet`) is a network; everything
around it is plain numpy here, so the same code runs whether the network is PyTorch or its
exported ONNX twin (MUN's ``--runtime onnx`` path must not import torch):

- :func:`noiseprint_input`: ``(H, W, 3)`` uint8 -> ``(1, 3, H, W)`` float32 ``rgb / scale``.
- :func:`extract_tiled`: the full-image noiseprint through any network call (named numpy
  feeds in, named numpy outputs out), tile by tile with receptive-field margins
  (:func:`receptive_windows`, also used by the torch helper in ``nets.noiseprint``).
- :func:`noiseprint_heatmap`: local statistics of a noiseprint against the image's median.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

#: Output window side of the tiled extraction: bounds memory by the tile, not the image (a
#: 12 MP full-frame pass of the paper-size extractor holds several GB of activations).
EXTRACTION_TILE = 1024

#: Period of the JPEG block grid: the phase of the noiseprint's 8-periodic component is a
#: local descriptor of the last compression's grid.
PERIOD = 8

#: One call of a network on named numpy inputs (the shape of ``backends.learned.TileRunner``,
#: restated here because analysis sits below backends).
Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]

Window = tuple[slice, slice]


def noiseprint_input(rgb: np.ndarray, scale: float = 256.0) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 ``rgb / scale``, the extractor's input."""
    x = np.asarray(rgb).transpose(2, 0, 1).astype(np.float32) / np.float32(scale)
    return np.ascontiguousarray(x[None])


def receptive_windows(height: int, width: int, tile: int, margin: int
                      ) -> Iterator[tuple[Window, Window, Window]]:
    """The windows of a tiled pass of a fully convolutional network with receptive radius
    ``margin``: ``(output, input, crop)`` per tile, where ``output`` is a ``tile x tile``
    window of the image, ``input`` that window grown by ``margin`` on every side inside the
    image, and ``crop`` where ``output`` lies within the network's result on ``input``.

    An input window sees the same pixels (and at image borders the same zero padding) as a
    full-frame pass does around its output window, so stitching the crops gives the
    full-frame result up to float rounding.
    """
    if tile < 1 or margin < 0:
        raise ValueError(f"tile must be >= 1 and margin >= 0 (got {tile}, {margin})")
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(height, y0 + tile), min(width, x0 + tile)
            iy0, ix0 = max(0, y0 - margin), max(0, x0 - margin)
            iy1, ix1 = min(height, y1 + margin), min(width, x1 + margin)
            yield ((slice(y0, y1), slice(x0, x1)), (slice(iy0, iy1), slice(ix0, ix1)),
                   (slice(y0 - iy0, y1 - iy0), slice(x0 - ix0, x1 - ix0)))


def extract_tiled(run: Runner, x: np.ndarray, margin: int, tile: int = EXTRACTION_TILE,
                  input_name: str = "image", output_name: str = "noiseprint") -> np.ndarray:
    """The noiseprint of an image of any size, tile by tile, equal to one full-frame pass.

    Args:
        run: the extractor on one window, ``{input_name: (1, 3, h, w)}`` ->
            ``{output_name: (1, 1, h, w)}`` (PyTorch, or the ONNX twin in onnxruntime).
        x: (1, 3, H, W) float32, :func:`noiseprint_input`.
        margin: the extractor's receptive radius (its depth; the twin's card records it).
        tile: output window side in pixels.

    Returns:
        (1, 1, H, W) float32.
    """
    _, _, h, w = x.shape
    out = np.empty((1, 1, h, w), np.float32)
    for (oy, ox), (iy, ix), (cy, cx) in receptive_windows(h, w, tile, margin):
        window = np.ascontiguousarray(x[:, :, iy, ix])
        res = np.asarray(run({input_name: window})[output_name], np.float32)
        out[:, :, oy, ox] = res[:, :, cy, cx]
    return out


# --------------------------------------------------------------------------- heat map


def _box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the ``(2 radius + 1)^2`` window around each pixel, counting only pixels
    inside the image (``avg_pool2d(..., count_include_pad=False)``), so the border does not
    look like a region of low energy. Summed-area table in float64: exact enough whatever the
    image size, and O(1) per pixel whatever the window."""
    h, w = x.shape
    table = np.zeros((h + 1, w + 1), np.float64)
    np.cumsum(np.cumsum(x, axis=0, dtype=np.float64), axis=1, out=table[1:, 1:])
    ys, xs = np.arange(h), np.arange(w)
    y0, y1 = np.clip(ys - radius, 0, h), np.clip(ys + radius + 1, 0, h)
    x0, x1 = np.clip(xs - radius, 0, w), np.clip(xs + radius + 1, 0, w)
    sums = (table[y1][:, x1] - table[y0][:, x1]) - (table[y1][:, x0] - table[y0][:, x0])
    counts = np.outer(y1 - y0, x1 - x0)
    return (sums / counts).astype(np.float32)


def local_descriptors(residual: np.ndarray, window: int = 32) -> np.ndarray:
    """Per-pixel statistics of a noiseprint in a ``window x window`` neighbourhood.

    Six channels: local mean, log local energy ``log(mean(r^2))``, and the local Fourier
    coefficients (cosine, sine) of the 8-pixel period along x and along y, which carry the
    strength and the phase of the block-grid pattern (a region compressed on another grid, or
    not compressed, differs there). Box means use only pixels inside the image; the box is
    ``2 * (window // 2) + 1`` pixels wide (an odd window keeps it centred).

    Shapes: ``residual (H, W)`` -> ``(6, H, W)`` float32.
    """
    r = np.asarray(residual, np.float32)
    h, w = r.shape
    two_pi = 2.0 * math.pi / PERIOD
    # float32 phases as the torch version computed them (its maps were float32 throughout).
    xs, ys = np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)
    cos_x, sin_x = np.cos(np.float32(two_pi) * xs), np.sin(np.float32(two_pi) * xs)
    cos_y, sin_y = np.cos(np.float32(two_pi) * ys), np.sin(np.float32(two_pi) * ys)
    radius = window // 2
    maps = (r, r * r, r * cos_x[None, :], r * sin_x[None, :], r * cos_y[:, None],
            r * sin_y[:, None])
    # One channel at a time: the summed-area tables are float64 copies of the image.
    desc = np.stack([_box_mean(m, radius) for m in maps])
    # A tiny floor: the extractor's output scale is arbitrary (a fresh one is ~1e-5).
    desc[1] = np.log(np.maximum(desc[1], np.float32(1e-30)))
    return desc


def _lower_median(x: np.ndarray) -> np.ndarray:
    """Per-row median of (C, N), the lower middle value for even N (as ``torch.median``; the
    two differ from numpy's average of the middle pair only in the last digits, but the map
    must not change with the runtime or the version)."""
    k = (x.shape[1] - 1) // 2
    return np.partition(x, k, axis=1)[:, k : k + 1]


def noiseprint_heatmap(residual: np.ndarray, window: int = 32, z_half: float = 3.0
                       ) -> np.ndarray:
    """A tamper probability map from a noiseprint: how far each pixel's local statistics are
    from the image's typical (median) statistics, in robust standard deviations.

    Each :func:`local_descriptors` channel is turned into a robust z-score (median and
    1.4826 * MAD over the image), the channels are combined as a root mean square ``z``, and
    ``p = z^2 / (z^2 + z_half^2)`` maps it into [0, 1) with p = 0.5 at ``z = z_half``. The
    untouched part is assumed to be the majority of the image (the median's premise).

    Shapes: ``residual (H, W)`` -> ``(H, W)`` float32 in [0, 1).
    """
    h, w = np.shape(residual)
    flat = local_descriptors(residual, window).reshape(6, h * w)
    med = _lower_median(flat)
    mad = _lower_median(np.abs(flat - med))
    # Floors relative to the spread keep a flat descriptor (many equal values, e.g. a constant
    # image) from dividing by zero, whatever the extractor's output scale.
    std = flat.std(axis=1, ddof=min(1, h * w - 1), keepdims=True,
                   dtype=np.float64).astype(np.float32)
    scale = np.float32(1.4826) * mad + np.float32(1e-3) * std + np.float32(1e-20)
    z2 = np.mean(np.square((flat - med) / scale), axis=0)
    prob = z2 / (z2 + np.float32(z_half ** 2))
    return prob.reshape(h, w).astype(np.float32)
