"""OpenCV's own thread pool, scoped to one call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import cv2


@contextmanager
def opencv_threads(threads: int) -> Iterator[None]:
    """OpenCV's thread count set to ``threads`` (at least 1) for the block, then restored.

    OpenCV's filters and SIFT split rows between threads with the same result, so a caller
    picks the count for speed only; restoring it keeps a worker's budget (``compute_threads``)
    for the next method.
    """
    before = cv2.getNumThreads()
    cv2.setNumThreads(max(1, threads))
    try:
        yield
    finally:
        cv2.setNumThreads(before)
