"""Region shapes for synthetic forgeries: main objects of a photo and random shapes.

Real forgeries move *objects* (a person, an animal, a sign), so the engine first tries to cut
the main object of a photo: a spectral-residual saliency map (Hou & Zhang, CVPR 2007) weighted
by a centre prior seeds OpenCV's GrabCut on a small copy of the photo; a central rectangle is the
second try. When no plausible object comes out, a random shape stands in: an organic blob, a
rectangle, an ellipse or a polygon (CASIA v1 also has rectangles, circles and triangles).

Every function here is deterministic: GrabCut's k-means initialisation draws from OpenCV's
global RNG, which is reseeded right before each call.
"""

from __future__ import annotations

import numpy as np

#: Shapes :func:`random_shape` draws; ``"object"`` (a GrabCut object) is handled by the caller.
SHAPES = ("blob", "rect", "ellipse", "polygon")

# OpenCV's RNG seed before GrabCut: a constant, so an object depends only on the photo.
_GRABCUT_RNG_SEED = 0x5EED


def spectral_residual_saliency(rgb: np.ndarray, size: int = 64) -> np.ndarray:
    """Spectral-residual saliency (Hou & Zhang 2007) of an image.

    The log amplitude spectrum minus its local (3x3) mean keeps what is unexpected in the image;
    transforming back with the original phase and squaring gives the saliency.

    Args:
        rgb: (H, W, 3) uint8.
        size: side of the square working copy (64 in the paper).

    Returns:
        (H, W) float32 in [0, 1].
    """
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64)
    spectrum = np.fft.fft2(small)
    log_amp = np.log(np.abs(spectrum) + 1e-8)
    phase = np.angle(spectrum)
    residual = log_amp - cv2.blur(log_amp, (3, 3), borderType=cv2.BORDER_REFLECT)
    sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    sal = cv2.GaussianBlur(sal, (0, 0), sigmaX=size / 24.0)
    sal = (sal - sal.min()) / max(float(sal.max() - sal.min()), 1e-12)
    h, w = rgb.shape[:2]
    return cv2.resize(sal.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _centre_prior(h: int, w: int, sigma: float = 0.33) -> np.ndarray:
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h - 0.5
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w - 0.5
    return np.exp(-(yy**2 + xx**2) / (2 * sigma**2))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """(H, W) uint8 {0,1} with enclosed background holes filled."""
    import cv2

    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 1)
    holes = (flood == 0).astype(np.uint8)
    return (padded | holes)[1:-1, 1:-1]


def _grabcut(small_bgr: np.ndarray, init: np.ndarray, iterations: int) -> np.ndarray:
    import cv2

    mask = init.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(_GRABCUT_RNG_SEED)
    try:
        cv2.grabCut(small_bgr, mask, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a flat image has no colour model to fit
        return np.zeros(mask.shape, np.uint8)
    return ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)


def _components(fg: np.ndarray, min_fraction: float, max_fraction: float) -> list[np.ndarray]:
    import cv2

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    total = fg.size
    found = []
    for lab in range(1, count):
        area = stats[lab, cv2.CC_STAT_AREA]
        if min_fraction * total <= area <= max_fraction * total:
            found.append((int(area), _fill_holes((labels == lab).astype(np.uint8))))
    found.sort(key=lambda t: -t[0])
    return [m for _, m in found]


def main_objects(
    rgb: np.ndarray,
    max_side: int = 160,
    iterations: int = 3,
    min_fraction: float = 0.01,
    max_fraction: float = 0.6,
    limit: int = 3,
) -> list[np.ndarray]:
    """Cut the main object(s) of a photo with saliency-seeded GrabCut, on a small copy.

    Seeds: the border band is sure background; the most salient 15 % (saliency times a centre
    prior) is probable foreground, its top 3 % sure foreground. If that yields no object of a
    plausible size, GrabCut runs again from a central rectangle.

    Args:
        rgb: (H, W, 3) uint8 photo.
        max_side: long side of the working copy (GrabCut is slow; objects need no detail).
        min_fraction, max_fraction: accepted object area as a fraction of the photo.
        limit: at most this many objects, largest first.

    Returns:
        Masks (h, w) uint8 {0, 1} on the *small* grid (``h, w`` = the photo scaled to
        ``max_side``); scale them up with :func:`upscale_mask`. Empty when nothing plausible.
    """
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    small_bgr = np.ascontiguousarray(small[:, :, ::-1])
    band = max(2, round(0.04 * min(sh, sw)))

    saliency = spectral_residual_saliency(small) * _centre_prior(sh, sw)
    init = np.full((sh, sw), cv2.GC_PR_BGD, np.uint8)
    init[saliency >= np.quantile(saliency, 0.85)] = cv2.GC_PR_FGD
    init[saliency >= np.quantile(saliency, 0.97)] = cv2.GC_FGD
    init[:band, :] = init[-band:, :] = cv2.GC_BGD
    init[:, :band] = init[:, -band:] = cv2.GC_BGD
    objects = _components(_grabcut(small_bgr, init, iterations), min_fraction, max_fraction)
    if objects:
        return objects[:limit]

    rect = np.full((sh, sw), cv2.GC_BGD, np.uint8)
    my, mx = round(0.12 * sh), round(0.12 * sw)
    rect[my : sh - my, mx : sw - mx] = cv2.GC_PR_FGD
    return _components(_grabcut(small_bgr, rect, iterations), min_fraction, max_fraction)[:limit]


def upscale_mask(small: np.ndarray, height: int, width: int) -> np.ndarray:
    """A small {0,1} mask resized to (height, width) with smooth edges: (H, W) uint8 {0, 1}.

    Bilinear interpolation then a 0.5 threshold gives diagonal rather than staircase contours.
    """
    import cv2

    up = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return (up >= 0.5).astype(np.uint8)


def _blob_polygon(rng: np.random.Generator, points: int = 72) -> np.ndarray:
    """Unit-box polygon of an organic blob: a radius made of a few random harmonics."""
    theta = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, 7):
        radius += rng.uniform(0.0, 0.28 / k**0.7) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.maximum(radius, 0.25)
    xy = np.stack([radius * np.cos(theta), radius * np.sin(theta)], axis=1)
    xy -= xy.min(axis=0)
    return xy / np.maximum(xy.max(axis=0), 1e-6)


def random_shape(rng: np.random.Generator, shape: str, height: int, width: int) -> np.ndarray:
    """A random region filling a (height, width) box: (H, W) uint8 {0, 1}.

    Args:
        shape: one of :data:`SHAPES`.
    """
    import cv2

    h, w = max(2, int(height)), max(2, int(width))
    out = np.zeros((h, w), np.uint8)
    box = np.array([w - 1, h - 1], np.float64)
    if shape == "rect":
        out[:, :] = 1
    elif shape == "ellipse":
        cv2.ellipse(out, (((w - 1) / 2, (h - 1) / 2), (float(w), float(h)), 0.0), 1, -1)
    elif shape == "polygon":
        count = int(rng.integers(3, 7))
        theta = np.sort(rng.uniform(0, 2 * np.pi, count))
        xy = np.stack([np.cos(theta), np.sin(theta)], axis=1) * rng.uniform(0.6, 1.0, (count, 1))
        xy -= xy.min(axis=0)
        xy /= np.maximum(xy.max(axis=0), 1e-6)
        cv2.fillPoly(out, [np.round(xy * box).astype(np.int32)], 1)
    elif shape == "blob":
        cv2.fillPoly(out, [np.round(_blob_polygon(rng) * box).astype(np.int32)], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    if out.sum() < 4:  # degenerate polygon (collinear points): fall back to the ellipse
        return random_shape(rng, "ellipse", h, w)
    return out


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Boxes of a mask's 8-connected components.

    Args:
        mask: (H, W) bool or {0, 1}.

    Returns:
        (N, 4) float32 ``x0, y0, x1, y1`` in pixels, exclusive end; (0, 4) for an empty mask.
    """
    import cv2

    count, _, stats, _ = cv2.connectedComponentsWithStats(
        (np.asarray(mask) > 0).astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return np.zeros((0, 4), np.float32)
    x, y = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
    bw, bh = stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]
    return np.stack([x, y, x + bw, y + bh], axis=1).astype(np.float32)
