"""Crops and tiles that keep the JPEG 8x8 grid, padding instead of resizing, overlap blending.

Compression traces live on the 8x8 block grid anchored at the image origin, and resampling
destroys them; so every crop and tile here starts at a multiple of 8, images are padded (never
resized) up to the size a network needs, and large images are cut into overlapping tiles whose
predictions are blended with weights that fall off towards tile edges (where the network sees
less context).

Pure numpy: used by training recipes (random crops) and by backends (tiled inference).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GRID = 8


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def pad_to(array: np.ndarray, height: int, width: int, value: float = 0) -> np.ndarray:
    """Pad the first two axes at the bottom/right to (height, width) with a constant.

    Never shrinks: (height, width) must be at least the array's size.
    """
    h, w = array.shape[:2]
    if height < h or width < w:
        raise ValueError(f"cannot pad {array.shape[:2]} to smaller {(height, width)}")
    if (h, w) == (height, width):
        return array
    widths = [(0, height - h), (0, width - w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="constant", constant_values=value)


def random_grid_origin(size: int, crop: int, rng: np.random.Generator,
                       focus: int | None = None) -> int:
    """A crop start on the 8-pixel grid along one axis.

    Uniform over grid positions with ``start + crop <= size`` (0 when ``size <= crop``). With
    ``focus`` (a pixel coordinate) the crop is placed so it contains that pixel, at a random
    offset, when possible.
    """
    last = (size - crop) // GRID if size > crop else 0
    if focus is None or last == 0:
        return GRID * int(rng.integers(0, last + 1))
    lo = max(0, -(-(focus - crop + 1) // GRID))  # smallest grid start that keeps focus inside
    hi = min(last, focus // GRID)
    if lo > hi:
        return GRID * int(rng.integers(0, last + 1))
    return GRID * int(rng.integers(lo, hi + 1))


def focused_crop_origin(mask: np.ndarray, crop: int, rng: np.random.Generator,
                        focus_prob: float) -> tuple[int, int]:
    """A training crop's start ``(y0, x0)`` on the 8-pixel grid of an image with this mask.

    With probability ``focus_prob`` (when the mask marks any pixel) the crop contains a
    manipulated pixel drawn at random, so small regions are seen; otherwise it is uniform.

    Args:
        mask: (H, W), non-zero = manipulated. crop: crop side in pixels.
    """
    focus_y = focus_x = None
    if mask.any() and rng.random() < focus_prob:
        ys, xs = np.nonzero(mask)
        pick = int(rng.integers(len(ys)))
        focus_y, focus_x = int(ys[pick]), int(xs[pick])
    return (random_grid_origin(mask.shape[0], crop, rng, focus_y),
            random_grid_origin(mask.shape[1], crop, rng, focus_x))


def tile_origins(size: int, tile: int, overlap: int, align: int = GRID) -> list[int]:
    """Tile starts along one axis covering ``[0, size)``; ``size`` must be >= ``tile``.

    Starts are multiples of ``align``; consecutive tiles overlap by at least ``overlap``; the
    last tile ends at ``size`` when ``size - tile`` is a multiple of ``align`` (pad first).
    """
    if tile % align or overlap % align or overlap >= tile:
        raise ValueError("tile and overlap must be multiples of the grid, overlap < tile")
    if size <= tile:
        return [0]
    last = (size - tile) // align * align
    step = tile - overlap
    n = -(-last // step) + 1
    starts = sorted({int(round(i * last / (n - 1) / align)) * align for i in range(n)})
    return starts


def blend_window(tile_h: int, tile_w: int, ramp: int) -> np.ndarray:
    """(tile_h, tile_w) float32 weights: 1 inside, linear ramp to 1/(ramp+1) at the edges."""

    def axis(n: int) -> np.ndarray:
        idx = np.arange(n, dtype=np.float32)
        edge = np.minimum(idx, n - 1 - idx)
        return np.minimum(1.0, (edge + 1.0) / (ramp + 1.0)) if ramp > 0 else np.ones(n, np.float32)

    return np.outer(axis(tile_h), axis(tile_w)).astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """One tile: pixel window ``[y0:y0+height, x0:x0+width]`` of the padded image."""

    y0: int
    x0: int
    height: int
    width: int


@dataclass(frozen=True)
class TilePlan:
    """How an image is padded and cut.

    Attributes:
        height, width: the image's size.
        padded_height, padded_width: size after padding (multiples of ``multiple``, at least one
            tile when tiling).
        tiles: the windows, all ``tile x tile`` (or one window of the padded size).
        ramp: blend ramp in pixels (half the overlap).
    """

    height: int
    width: int
    padded_height: int
    padded_width: int
    tiles: tuple[Tile, ...]
    ramp: int

    @property
    def single(self) -> bool:
        return len(self.tiles) == 1


def plan_tiles(height: int, width: int, tile: int = 512, overlap: int = 64,
               multiple: int = 32) -> TilePlan:
    """Pad to multiples of ``multiple`` (a multiple of 8); one window if it fits in ``tile``.

    Images larger than ``tile`` on either axis are cut into ``tile x tile`` windows on the grid
    with at least ``overlap`` pixels of overlap.
    """
    if multiple % GRID or tile % multiple:
        raise ValueError("multiple must be a multiple of 8 and tile a multiple of multiple")
    ph, pw = round_up(height, multiple), round_up(width, multiple)
    if ph <= tile and pw <= tile:
        return TilePlan(height, width, ph, pw, (Tile(0, 0, ph, pw),), 0)
    ph, pw = max(ph, tile), max(pw, tile)
    ys = tile_origins(ph, tile, overlap, GRID)
    xs = tile_origins(pw, tile, overlap, GRID)
    tiles = tuple(Tile(y, x, tile, tile) for y in ys for x in xs)
    return TilePlan(height, width, ph, pw, tiles, overlap // 2)


class BlendAccumulator:
    """Weighted average of overlapping tile predictions on the padded canvas (float32).

    Predictions are ``(h, w)`` maps or ``(C, h, w)`` stacks (feature maps) at ``stride``: a
    tile's prediction covers its window divided by the stride (tile origins are on the 8-pixel
    grid, so any stride dividing 8 keeps them whole).
    """

    def __init__(self, plan: TilePlan, channels: int | None = None, stride: int = 1) -> None:
        if GRID % stride:
            raise ValueError(f"stride must divide {GRID}, got {stride}")
        self.plan = plan
        self.stride = stride
        size = (plan.padded_height // stride, plan.padded_width // stride)
        self.total = np.zeros(size if channels is None else (channels, *size), np.float32)
        self.weight = np.zeros(size, np.float32)
        self._window: np.ndarray | None = None

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Accumulate a tile's prediction: (tile.height, tile.width) / stride, with a leading
        channel axis when the accumulator has one."""
        s = self.stride
        shape = (tile.height // s, tile.width // s)
        if values.shape[-2:] != shape or values.ndim != self.total.ndim:
            raise ValueError(f"tile prediction {values.shape} does not fit {shape}")
        if self.plan.single:
            window = np.ones(shape, dtype=np.float32)
        else:
            if self._window is None or self._window.shape != shape:
                self._window = blend_window(*shape, self.plan.ramp // s)
            window = self._window
        sl = (slice(tile.y0 // s, tile.y0 // s + shape[0]),
              slice(tile.x0 // s, tile.x0 // s + shape[1]))
        self.total[(..., *sl)] += values * window
        self.weight[sl] += window

    def result(self) -> np.ndarray:
        """The blended map(s), cropped back to the image (``ceil(size / stride)``).

        Divides in place (the accumulator is spent afterwards): at 12 MP fresh temporaries
        would cost about a second, first touched as huge pages.
        """
        np.maximum(self.weight, 1e-12, out=self.weight)
        out = np.divide(self.total, self.weight, out=self.total)
        s = self.stride
        return out[..., : -(-self.plan.height // s), : -(-self.plan.width // s)]


def blend_tiles(
    plan: TilePlan,
    predict: Callable[[Tile], np.ndarray | None],
    channels: int | None = None,
    stride: int = 1,
) -> np.ndarray:
    """Run ``predict`` on every tile of ``plan`` and blend: the one tiling loop.

    Args:
        plan: from :func:`plan_tiles`.
        predict: a tile -> its (h, w) (or (C, h, w)) prediction at ``stride``, or None to
            skip a tile whose output the caller will not use (its pixels stay 0).
        channels: C for stacked predictions, None for single maps.
        stride: output stride of the predictions.

    Returns:
        (H', W') or (C, H', W') float32 with ``H' = ceil(height / stride)``.
    """
    acc = BlendAccumulator(plan, channels, stride)
    for tile in plan.tiles:
        values = predict(tile)
        if values is not None:
            acc.add(tile, values)
    return acc.result()
