"""What the fusion reads from its members, as numbers (numpy only: no torch at inference).

Per member ``m`` and pixel, :data:`PIXEL_FEATURES`: the member's heatmap ``value``; its
``context`` (a box mean over about 4 % of the image's long side: members are noisy pixel by
pixel and a forgery is a region); ``relative`` (value over the image's own 99th percentile:
learned members are far less confident on real forgeries than on synthetic ones, so where a map
peaks matters more than how high); the member's image ``score``; and ``applicable`` (0 with all
other features 0 when the member cannot read this input, e.g. a DCT method on a PNG).

Per member and image, :data:`IMAGE_FEATURES` for the verdict: score, applicable, the heatmap's
99th percentile, its mean, the fraction of pixels at or above 0.5, and its ``peak``: the
highest box mean over a ``context``-sized window (a region that lights up, not one pixel; the
same window relative to the image at any size).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

PIXEL_FEATURES = ("value", "context", "relative", "score", "applicable")
IMAGE_FEATURES = ("score", "applicable", "p99", "mean", "flagged", "peak")
#: Box side of the ``context`` feature, as a fraction of the image's long side.
CONTEXT_FRACTION = 0.04
#: Added to the 99th percentile before dividing (a flat near-zero map is not "peaked").
RELATIVE_FLOOR = 0.05


@dataclass
class MemberOutput:
    """What one member said about one image (the fusion's input).

    Attributes:
        name: member method name.
        heatmap: (H, W) float32 in [0, 1].
        score: the member's image score in [0, 1].
        applicable: False when the member could not read the input (its heatmap is zeros).
        seconds: the member's analysis time.
        result: the member's full Result (kept for ``explain``), when run here.
        note: why the member is blind, when it failed.
    """

    name: str
    heatmap: np.ndarray
    score: float
    applicable: bool
    seconds: float = 0.0
    result: Any = None
    note: str = ""
    stats: MemberStats | None = None

    def drop_map(self) -> None:
        """Free the (H, W) heatmap, keeping the summaries the verdict reads (once the fusion
        has taken the map's share of its pixel map: 190 MB a member at 48 MP)."""
        self.stats = member_stats(self)
        self.heatmap = np.zeros((0, 0), np.float32)

    @classmethod
    def blind(cls, name: str, shape: tuple[int, int], seconds: float = 0.0,
              note: str = "") -> MemberOutput:
        return cls(name=name, heatmap=np.zeros(shape, np.float32), score=0.0,
                   applicable=False, seconds=seconds, note=note)


@dataclass
class MemberStats:
    """Per-image summaries of a member's heatmap (computed once, used by both models)."""

    p99: float = 0.0
    mean: float = 0.0
    flagged: float = 0.0
    peak: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def member_stats(out: MemberOutput) -> MemberStats:
    if out.stats is not None:  # its map was dropped
        return out.stats
    if not out.applicable or out.heatmap.size == 0:
        return MemberStats()
    hm = out.heatmap
    # Every statistic but the mean and the flagged fraction reads a subsample of at most about
    # 512 x 512 (a 12 MP map costs what a CASIA one does); its box keeps the same share of the
    # long side, so the peak means the same at any size.
    sample = hm[:: max(1, hm.shape[0] // 512), :: max(1, hm.shape[1] // 512)]
    side = context_side(sample.shape)
    peak = cv2.blur(sample.astype(np.float32, copy=False), (side, side),
                    borderType=cv2.BORDER_REFLECT).max()
    return MemberStats(p99=float(np.percentile(sample, 99)), mean=float(hm.mean()),
                       flagged=float((hm >= 0.5).mean()), peak=float(peak))


def context_side(shape: tuple[int, int]) -> int:
    """Odd box side for the ``context`` feature of an image of ``shape``."""
    side = max(3, int(round(CONTEXT_FRACTION * max(shape))))
    return side | 1


def image_features(outputs: list[MemberOutput]) -> np.ndarray:
    """(len(outputs) * len(IMAGE_FEATURES),) float32, members in the order given."""
    rows = []
    for out in outputs:
        st = member_stats(out)
        a = 1.0 if out.applicable else 0.0
        rows.extend([out.score * a, a, st.p99, st.mean, st.flagged, st.peak])
    return np.asarray(rows, np.float32)


def pixel_columns(outputs: list[MemberOutput]) -> Iterator[np.ndarray]:
    """The columns of :func:`pixel_features` for every pixel, one (H * W,) float32 array at a
    time (a linear map sums them without holding the whole (H * W, F) matrix: 1.4 GB at
    12 MP)."""
    shape = outputs[0].heatmap.shape
    for out in outputs:
        yield from member_columns(out, shape)


def member_columns(out: MemberOutput, shape: tuple[int, int]) -> Iterator[np.ndarray]:
    """One member's :data:`PIXEL_FEATURES` columns, each (H * W,) float32, for an image of
    ``shape`` (all zeros when the member is not applicable)."""
    n = shape[0] * shape[1]
    if not out.applicable:
        for _ in PIXEL_FEATURES:
            yield np.zeros(n, np.float32)
        return
    hm = out.heatmap.astype(np.float32, copy=False)
    value = hm.reshape(-1)
    yield value
    side = context_side(shape)
    yield cv2.blur(hm, (side, side), borderType=cv2.BORDER_REFLECT).reshape(-1)
    scale = np.float32(1.0 / (member_stats(out).p99 + RELATIVE_FLOOR))
    yield np.minimum(value * scale, np.float32(2.0))
    yield np.full(n, out.score, np.float32)
    yield np.ones(n, np.float32)


def pixel_features(outputs: list[MemberOutput], rows: np.ndarray | None = None,
                   cols: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel features, (N, len(outputs) * len(PIXEL_FEATURES)) float32.

    With ``rows``/``cols`` (index arrays of equal length N) only those pixels are returned (the
    fitting samples); without, every pixel in row-major order (N = H * W).
    """
    if rows is None:
        return np.stack(list(pixel_columns(outputs)), axis=1)
    flat = rows * outputs[0].heatmap.shape[1] + cols
    return np.stack([col[flat] for col in pixel_columns(outputs)], axis=1)
