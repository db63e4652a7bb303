"""The fast paths of the classical methods give what the straightforward code gives.

Each test holds the plain version (the code before it was sped up, or the library call it
replaces) and compares on small synthetic inputs: exactly where the arithmetic is the same,
to float32 rounding where the order of operations changed (grid's window sums).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import pywt
from scipy import ndimage

from forgectl.analysis import copymove as cm
from forgectl.analysis import ghost as gh
from forgectl.analysis import noise as nz
from forgectl.analysis.jpeg import blocks_to_pixels, clipped_blocks, grid_periodicity, luma
from forgectl.backends import grid as gr
from forgectl.backends.ela import error_level
from forgectl.intake import encode_jpeg

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)


def _jpeg_pixels(rgb: np.ndarray, quality: int) -> np.ndarray:
    data = np.frombuffer(encode_jpeg(rgb, quality), np.uint8)
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1])


# --------------------------------------------------------------------------- shared blocks


def test_luma_in_bands_is_the_one_product(make_image):
    rgb = make_image(600, 70, 0)  # more rows than one band
    assert np.array_equal(luma(rgb), rgb.astype(np.float32) @ LUMA_WEIGHTS)
    view = rgb[3:-2, 5:, :]
    assert np.array_equal(luma(view), view.astype(np.float32) @ LUMA_WEIGHTS)


@pytest.mark.parametrize(
    ("blocks", "size"),
    [((3, 4), (24, 32)), ((3, 4), (29, 38)), ((3, 4), (17, 20)), ((1, 1), (5, 3))],
)
def test_blocks_to_pixels_matches_gather(blocks, size):
    values = np.random.default_rng(0).random(blocks)
    height, width = size
    rows = np.minimum(np.arange(height) // 8, blocks[0] - 1)
    cols = np.minimum(np.arange(width) // 8, blocks[1] - 1)
    expected = values.astype(np.float32)[rows[:, None], cols[None, :]]
    assert np.array_equal(blocks_to_pixels(values, height, width), expected)


# --------------------------------------------------------------------------- grid


def _reference_z(plane: np.ndarray, steps: range, window: int) -> np.ndarray:
    evidence = grid_periodicity(plane, list(gr.POSITIONS), steps, window)
    centre = np.median(evidence, axis=2, keepdims=True)
    spread = 1.4826 * np.median(np.abs(evidence - centre), axis=2, keepdims=True)
    return (evidence - centre) / (spread + 1e-3)


@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize(
    ("window", "steps"), [(8, range(2, 17)), (3, range(5, 10)), (1, range(2, 5))]
)
def test_grid_z_scores_match_grid_periodicity(make_image, monkeypatch, tiled, window, steps):
    plane = luma(_jpeg_pixels(make_image(150, 190, 1), 80))
    if tiled:  # tiles of a few cells: halos, reflected borders and threads all in play
        monkeypatch.setattr(gr, "_TILE_BYTES", (7 + window) ** 2 * 64 * 4)
    fast = gr.grid_z_scores(plane, gr.POSITIONS, steps, window, threads=2 if tiled else 1)
    np.testing.assert_allclose(fast, _reference_z(plane, steps, window), rtol=1e-4, atol=2e-3)


def test_grid_medians_are_numpy_medians():
    rng = np.random.default_rng(2)
    for n in (63, 64):
        values = rng.standard_normal((5, 7, n)).astype(np.float32)
        assert np.array_equal(gr._median_last(values), np.median(values, axis=-1, keepdims=True))
    for cells in ((3, 5), (4, 5)):
        z = rng.standard_normal((*cells, 64)).astype(np.float32)
        for threads in (1, 2):
            assert np.array_equal(
                gr._origin_medians(z, threads), np.median(z.reshape(-1, 64), axis=0)
            )


@pytest.mark.parametrize("size", [(37, 45), (40, 48), (70, 61)])
def test_grid_pixel_statistics_from_cells(size):
    h, w = size
    rng = np.random.default_rng(4)
    shape = ((h - 7) // 8, (w - 7) // 8)
    pixels = gr._cell_pixels(shape, h, w)
    for cells in (
        np.clip(rng.normal(0.2, 0.4, shape), 0, 1).astype(np.float32),  # many exact zeros
        rng.random(shape).astype(np.float32),  # all distinct: numpy's interpolation path
    ):
        heat = blocks_to_pixels(cells, h, w)
        assert pixels.sum() == h * w
        assert pixels[cells >= 0.5].sum() / (h * w) == float((heat >= 0.5).mean())
        for q in (2, 50, 98, 100):
            assert gr._pixel_percentile(cells, pixels, heat, q) == float(np.percentile(heat, q))
    # Two cells of 120 and 225 pixels, the rank between them: numpy interpolates.
    cells, pixels = np.array([[0.25, 0.75]], np.float32), gr._cell_pixels((1, 2), 15, 23)
    heat = blocks_to_pixels(cells, 15, 23)
    assert pixels.tolist() == [[120, 225]]
    expected = float(np.percentile(heat, 34.75))
    assert 0.25 < expected < 0.75 and gr._pixel_percentile(cells, pixels, heat, 34.75) == expected


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8, 9])
def test_window_sums(k):
    x = np.random.default_rng(3).random((12, 11, 3)).astype(np.float32)
    for axis in (0, 1):
        sums = gr._window_sums(x, k, axis)
        moved = np.moveaxis(x, axis, 0)
        naive = np.stack([moved[i : i + k].sum(axis=0) for i in range(len(moved) - k + 1)])
        np.testing.assert_allclose(sums, np.moveaxis(naive, 0, axis), rtol=1e-6)
        assert not np.shares_memory(sums, x)  # callers update the sums in place


# --------------------------------------------------------------------------- ghost


def _reference_block_errors(rgb: np.ndarray, quality: int, phase: tuple[int, int], channels: str):
    """recompression_error as it was: one quality, luma of both sides per band."""
    dy, dx = phase
    src = np.ascontiguousarray(rgb[dy:, dx:])
    bh, bw = src.shape[0] // 8, src.shape[1] // 8
    out = np.zeros((bh, bw), np.float32)
    data = np.frombuffer(encode_jpeg(src, quality, subsampling=2), np.uint8)
    resaved = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    for y0 in range(0, bh * 8, 48):  # any band height that is a multiple of 8
        y1 = min(y0 + 48, bh * 8)
        before, after = src[y0:y1, : bw * 8], resaved[y0:y1, : bw * 8]
        if channels == "luma":
            sq = np.square(luma(before) - luma(after))
        else:
            a = before.astype(np.float32) - after
            sq = np.einsum("hwc,hwc->hw", a, a) / 3.0
        out[y0 // 8 : y1 // 8] = sq.reshape(-1, 8, bw, 8).mean(axis=(1, 3))
    return out


@pytest.mark.parametrize(
    ("phase", "channels"), [((0, 0), "luma"), ((3, 5), "luma"), ((0, 0), "rgb")]
)
def test_ghost_error_stack_on_threads_matches_one_quality_at_a_time(make_image, phase, channels):
    rgb = _jpeg_pixels(make_image(100, 132, 4), 70)
    qualities = (60, 75, 90)
    stack = gh.error_stack(rgb, qualities, 2, phase, channels, threads=2)
    for plane, quality in zip(stack, qualities, strict=True):
        np.testing.assert_array_equal(plane, _reference_block_errors(rgb, quality, phase, channels))
    single = gh.recompression_error(rgb, 75, 2, phase, channels)
    np.testing.assert_array_equal(single, stack[1])


# --------------------------------------------------------------------------- copymove


def _bf_knn(descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(descriptors, descriptors, k=k)
    idx = np.array([[m.trainIdx for m in row] for row in knn], np.int64)
    dist = np.array([[m.distance for m in row] for row in knn], np.float32)
    return idx, dist


@pytest.mark.parametrize("k", [1, 2, 13])
def test_nearest_descriptors_match_opencv_brute_force(monkeypatch, k):
    # SIFT descriptors are small integers; many exact duplicates make ties at every rank.
    rng = np.random.default_rng(5)
    distinct = rng.integers(0, 80, (40, 128)).astype(np.float32)
    descriptors = np.concatenate(
        [distinct[rng.integers(0, 40, 300)], rng.integers(0, 80, (150, 128)).astype(np.float32)]
    )
    monkeypatch.setattr(cm, "_KNN_ROWS", 128)  # several blocks, on two threads
    monkeypatch.setattr(cm, "_KNN_PAIRS", 1000)  # and exact distances in several chunks
    idx, dist = cm.nearest_descriptors(descriptors, k, threads=2)
    ref_idx, ref_dist = _bf_knn(descriptors, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


@pytest.mark.parametrize(("n", "k"), [(3, 1), (3, 3), (20, 13), (40, 13), (400, 13)])
def test_nearest_descriptors_few_points(n, k):
    # Fewer than 32 points per group for k groups: smaller groups keep the shortlist short.
    descriptors = np.random.default_rng(6).integers(0, 200, (n, 128)).astype(np.float32)
    idx, dist = cm.nearest_descriptors(descriptors, k)
    ref_idx, ref_dist = _bf_knn(descriptors, k)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(dist, ref_dist)


def test_fill_holes_matches_scipy():
    rng = np.random.default_rng(7)
    for density in (0.3, 0.55, 0.7):
        mask = rng.random((60, 80)) < density
        assert np.array_equal(cm.fill_holes(mask), ndimage.binary_fill_holes(mask))
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[8:12, 8:12] = False
    assert cm.fill_holes(ring)[8:12, 8:12].all()


@pytest.mark.parametrize(
    "matrix",
    [
        [[1.0, 0.0, 150.0], [0.0, 1.0, -40.0]],  # a plain shift: decided without a map
        [[0.98, -0.17, 20.0], [0.17, 0.98, -5.0]],  # a turn about a point inside the image
        [[1.02, 0.0, -3.0], [0.0, 1.02, -2.0]],
    ],
)
def test_barely_moved_matches_per_pixel_shift(matrix):
    m = np.array(matrix)
    h, w = 90, 120
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shift = np.hypot(m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx,
                     m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy)
    still = cm._barely_moved(m, h, w, 12.0)
    expected = shift < 12.0
    assert np.array_equal(np.zeros((h, w), bool) if still is None else still, expected)


def test_refine_on_two_threads_is_the_same(make_image):
    grey = cv2.cvtColor(make_image(160, 200, 8), cv2.COLOR_RGB2GRAY)
    grey[90:140, 120:180] = grey[10:60, 20:80]  # a copy moved by (100, 80)
    config = cm.CopyMoveConfig()
    points = np.array([[30.0, 20.0], [50.0, 40.0], [70.0, 30.0]], np.float32)
    results = []
    for threads in (1, 2):
        t = cm.CopyTransform(np.array([[1.0, 0.0, 100.0], [0.0, 1.0, 80.0]]), points,
                             points + np.float32([100, 80]))
        cm.refine(grey, t, config, threads=threads)
        results.append(t)
    assert results[0].source_mask.any() and results[0].target_mask.any()
    for name in ("source_mask", "target_mask", "strength"):
        assert np.array_equal(getattr(results[0], name), getattr(results[1], name))


# --------------------------------------------------------------------------- noise, ela, dq


@pytest.mark.parametrize(("shape", "threads"), [((64, 80), 1), ((67, 91), 2)])
def test_wavelet_hh_is_dwt2_detail(make_image, shape, threads):
    plane = luma(make_image(*shape, 9))
    h, w = shape
    pad = 2 * ((pywt.Wavelet("db8").dec_len + 1) // 2)
    padded = np.pad(plane, ((pad, pad + h % 2), (pad, pad + w % 2)), "reflect")
    hh = pywt.dwt2(padded, "db8", mode="periodization")[1][2]
    half = pad // 2
    expected = hh[half : half + (h + 1) // 2, half : half + (w + 1) // 2]
    assert np.array_equal(nz.wavelet_hh(plane, "db8", threads), expected)


@pytest.mark.parametrize(("size", "stride"), [(16, 4), (5, 2), (2, 1)])
def test_block_medians_are_numpy_medians(monkeypatch, size, stride):
    values = np.abs(np.random.default_rng(10).standard_normal((41, 57))).astype(np.float32)
    grid = nz.BlockGrid.fit(values.shape, size, stride)
    s = grid.size
    expected = np.array(
        [
            [np.median(values[r * stride : r * stride + s, c * stride : c * stride + s])
             for c in range(grid.cols)]
            for r in range(grid.rows)
        ],
        np.float32,
    )
    monkeypatch.setattr(nz, "_CHUNK_VALUES", 3 * grid.cols * grid.size**2)  # several bands
    assert np.array_equal(nz.block_medians(values, grid, threads=2), expected)


@pytest.mark.parametrize("shape", [(40, 56), (41, 57)])
def test_clipped_fraction_is_the_mean_of_clipped_pairs(shape):
    rng = np.random.default_rng(11)
    plane = rng.choice(np.array([0.0, 1.5, 100.0, 254.0], np.float32), size=shape)
    grid = nz.BlockGrid.fit(((shape[0] + 1) // 2, (shape[1] + 1) // 2), 6, 3)
    clipped = ((plane <= nz.CLIP_LOW) | (plane >= nz.CLIP_HIGH)).astype(np.float32)
    h, w = clipped.shape
    clipped = np.pad(clipped, ((0, h % 2), (0, w % 2)), "edge")
    pairs = clipped.reshape((h + 1) // 2, 2, (w + 1) // 2, 2).mean(axis=(1, 3))
    assert np.array_equal(nz.clipped_fraction(plane, grid), nz.block_means(pairs, grid))


def test_error_level_is_the_channel_maximum(make_image):
    rgb = make_image(40, 56, 12)
    data = np.frombuffer(encode_jpeg(rgb, 80, subsampling=0), np.uint8)
    resaved = cv2.imdecode(data, 1)[:, :, ::-1]
    expected = np.abs(rgb.astype(np.int16) - resaved.astype(np.int16)).max(axis=2)
    assert np.array_equal(error_level(rgb, 80), expected.astype(np.float32))


def test_dq_clipped_blocks(make_image):
    rgb = make_image(37, 45, 13)
    rgb[3, 4, 1], rgb[20, 30, 0], rgb[36, 44, 2], rgb[10, 10] = 0, 254, 1, 2
    bh, bw = 5, 6
    extreme = (rgb.min(axis=2) <= 1) | (rgb.max(axis=2) >= 254)
    padded = np.zeros((8 * bh, 8 * bw), bool)
    padded[:37, :45] = extreme
    expected = padded.reshape(bh, 8, bw, 8).any(axis=(1, 3))
    assert np.array_equal(clipped_blocks(rgb, bh, bw, margin=2), expected)
