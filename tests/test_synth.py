"""Synthetic forgery engine: determinism, masks and boxes, real JPEG data, kinds, disturbances,
splits, the dataset writer and `forgectl synth`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from forgectl.errors import InputError, UsageError
from forgectl.evaluation.datasets import load_dataset, load_mask
from forgectl.intake import encode_jpeg, ijg_table
from forgectl.synth import histories, regions
from forgectl.synth.engine import (
    KINDS,
    SynthConfig,
    SynthesisEngine,
    list_images,
    read_labels,
    split_sources,
    write_dataset,
)
from forgectl.synth.histories import HistoryConfig

REPO = Path(__file__).resolve().parent.parent
SMALL = {"size_range": (96, 160), "cache_size": 8}

#: No processing after the edit and a lossless save: the file shows the manipulation alone.
PLAIN_HISTORY = HistoryConfig(
    prior_jpeg_prob=0.0,
    donor_jpeg_prob=0.0,
    resize_prob=0.0,
    blur_prob=0.0,
    noise_prob=0.0,
    mid_jpeg_prob=0.0,
    final_jpeg_prob=0.0,
    disturb_prob=0.0,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> list[Path]:
    """Six small photo-like sources: JPEG and PNG, landscape and portrait, in sub-folders."""
    from tests.helpers import natural_image

    root = tmp_path_factory.mktemp("corpus")
    (root / "a").mkdir()
    (root / "b").mkdir()
    shapes = [(150, 200), (200, 150), (180, 240), (160, 160), (140, 220), (210, 170)]
    for i, (h, w) in enumerate(shapes):
        rgb = natural_image(h, w, seed=10 + i)
        if i % 2 == 0:
            (root / "a" / f"photo{i}.jpg").write_bytes(encode_jpeg(rgb, 80 + i))
        else:
            Image.fromarray(rgb).save(root / "b" / f"photo{i}.png")
    (root / "notes.txt").write_text("not an image")
    return list_images(root)


def engine_for(sources: list[Path], seed: int = 0, **overrides) -> SynthesisEngine:
    return SynthesisEngine(sources, seed=seed, config=SynthConfig(**{**SMALL, **overrides}))


# --------------------------------------------------------------------------- determinism


def test_same_seed_and_index_give_identical_bytes_regardless_of_call_order(sources):
    first, second = engine_for(sources, seed=7), engine_for(sources, seed=7)
    a = [first.sample(i) for i in (0, 1, 2, 3)]
    b = {i: second.sample(i) for i in (3, 1, 0, 2)}
    for i, sample in enumerate(a):
        assert sample.file_bytes == b[i].file_bytes
        assert np.array_equal(sample.mask, b[i].mask)
        assert sample.history == b[i].history and sample.seed == b[i].seed


def test_different_index_or_seed_gives_different_samples(sources):
    engine = engine_for(sources, seed=7)
    files = {engine.sample(i).file_bytes for i in range(4)}
    assert len(files) == 4
    assert engine_for(sources, seed=8).sample(0).file_bytes != engine.sample(0).file_bytes


def test_write_dataset_is_byte_identical_and_benchmark_readable(sources, tmp_path):
    outs = [tmp_path / "one", tmp_path / "two"]
    for out in outs:
        write_dataset(engine_for(sources, seed=3), out, 6)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"MANIFEST.tsv", "labels.jsonl", "synth.json"}
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    assert not list(outs[0].rglob(".*.tmp"))

    dataset = load_dataset(outs[0])
    assert len(dataset) == 6 and not any(it.problem for it in dataset)
    labels = {rec["image"]: rec for rec in read_labels(outs[0])}
    for item in dataset:
        rec = labels[item.key]
        assert item.tampered == (rec["kind"] != "authentic")
        image = Image.open(item.image)
        assert image.format == ("JPEG" if rec["history"][-1]["op"] == "jpeg" else "PNG")
        if item.tampered:
            mask = load_mask(item.mask, (image.height, image.width))
            assert mask.any()
            assert np.array_equal(regions.mask_boxes(mask).astype(int), np.array(rec["boxes"]))


def test_write_dataset_refuses_a_non_empty_folder(sources, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        write_dataset(engine_for(sources), tmp_path, 1)
    assert (tmp_path / "keep.txt").read_text() == "x"


# --------------------------------------------------------------------------- labels


def test_masks_and_boxes_agree_with_the_image(sources):
    engine = engine_for(sources, seed=1)
    for i in range(8):
        s = engine.sample(i)
        assert s.mask.shape == s.image.rgb.shape[:2] and s.mask.dtype == np.uint8
        assert set(np.unique(s.mask)) <= {0, 1}
        assert s.boxes.dtype == np.float32 and s.boxes.shape[1] == 4
        covered = np.zeros_like(s.mask)
        for x0, y0, x1, y1 in s.boxes.astype(int):
            assert 0 <= x0 < x1 <= s.mask.shape[1] and 0 <= y0 < y1 <= s.mask.shape[0]
            box = s.mask[y0:y1, x0:x1]
            # A component's box is tight: mask pixels touch all four sides.
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            covered[y0:y1, x0:x1] = 1
        assert not (s.mask & (1 - covered)).any()
        assert (len(s.boxes) == 0) == (not s.mask.any())


def test_mask_boxes_of_two_components():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:5, 3:9] = 1
    mask[10:18, 20:21] = 1
    boxes = sorted(regions.mask_boxes(mask).tolist())
    assert boxes == [[3, 2, 9, 5], [20, 10, 21, 18]]
    assert regions.mask_boxes(np.zeros((4, 4))).shape == (0, 4)


def test_jpeg_ending_samples_carry_the_real_quantization_table(sources):
    engine = engine_for(sources, seed=2, history=HistoryConfig(final_jpeg_prob=1.0))
    for i in range(4):
        s = engine.sample(i)
        save = s.history[-1]
        assert save["op"] == "jpeg" and s.file_ext == ".jpg"
        assert s.file_bytes[:3] == b"\xff\xd8\xff"
        assert s.image.jpeg is not None and s.image.format == "JPEG"
        assert np.array_equal(s.image.jpeg.y_quant, ijg_table(save["quality"]))
        assert s.image.jpeg.subsampling == save["subsampling"]
    png = engine_for(sources, history=HistoryConfig(final_jpeg_prob=0.0)).sample(0)
    assert png.file_ext == ".png" and png.image.format == "PNG" and png.image.jpeg is None


def test_final_grid_shift_crops_pixels_and_mask_together():
    rgb = np.full((64, 80, 3), 120, np.uint8)
    mask = np.zeros((64, 80), bool)
    mask[20:30, 40:50] = True
    step = {"op": "jpeg", "quality": 90, "subsampling": "4:4:4", "grid_shift": [3, 5]}
    data, ext, shifted = histories.encode_final(rgb, mask, step)
    assert ext == ".jpg" and shifted.shape == (61, 75)
    assert Image.open(__import__("io").BytesIO(data)).size == (75, 61)
    assert np.array_equal(np.argwhere(shifted).min(axis=0), [17, 35])


def test_resampling_keeps_the_mask_on_the_pixels():
    rgb = np.zeros((100, 120, 3), np.uint8)
    rgb[30:70, 40:90] = 255
    mask = rgb[:, :, 0] > 0
    for scale, interp in ((0.5, "area"), (1.3, "cubic"), (0.77, "linear")):
        out, out_mask = histories.resample(rgb, mask, scale, interp)
        assert out.shape[:2] == out_mask.shape
        bright = out[:, :, 0] > 127
        iou = (bright & out_mask).sum() / (bright | out_mask).sum()
        assert iou > 0.9, (scale, iou)


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize("kind", ["splice", "copymove", "removal"])
def test_each_kind_changes_pixels_inside_its_mask_only(sources, kind):
    """With no history, the same index made as "authentic" is the untouched host: a forgery
    differs from it inside its mask and nowhere else."""
    import cv2

    # Hard (antialiased) edges: a forgery may only touch pixels within 2 px of its mask.
    engine = engine_for(sources, seed=5, history=PLAIN_HISTORY, feather_prob=0.0)
    for index in range(3):
        host = engine.sample(index, kind="authentic")
        forged = engine.sample(index, kind=kind)
        assert host.mask.sum() == 0 and len(host.boxes) == 0
        assert forged.kind == kind and forged.mask.mean() >= engine.config.min_mask_fraction
        diff = np.abs(forged.image.rgb.astype(int) - host.image.rgb.astype(int)).max(axis=2) > 0
        near = cv2.dilate(forged.mask, np.ones((5, 5), np.uint8)).astype(bool)
        assert not (diff & ~near).any(), f"{kind} {index}: pixels changed outside the mask"
        assert diff[forged.mask > 0].mean() > 0.3, f"{kind} {index}: mask barely changed"
        edit = next(step for step in forged.history if step["op"] == kind)
        assert edit["shape"] in ("object", *regions.SHAPES)
        if kind == "splice":
            assert len(forged.source) == 2 and forged.source[0] != forged.source[1]


def test_kind_weights_are_respected(sources):
    engine = engine_for(sources, kinds={"removal": 1.0})
    assert {engine.sample(i).kind for i in range(3)} == {"removal"}
    config = SynthConfig().with_kinds(["copy-move", "authentic"])
    assert set(config.kinds) == {"copymove", "authentic"}
    with pytest.raises(UsageError, match="unknown kind"):
        SynthConfig().with_kinds(["splice", "morph"])
    with pytest.raises(UsageError):
        SynthConfig(kinds={"splice": 0.0})


def test_config_round_trips_through_plain_data():
    config = SynthConfig(size_range=(128, 256), history=HistoryConfig(final_quality=(70, 90)))
    data = config.to_dict()
    assert data["size_range"] == [128, 256] and data["history"]["final_quality"] == [70, 90]
    again = SynthConfig.from_dict(data)
    assert again == config and set(again.kinds) <= set(KINDS)
    with pytest.raises(UsageError, match="unknown synth config"):
        SynthConfig.from_dict({"sizes": 3})


# --------------------------------------------------------------------------- disturbances


def test_disturbance_formulas_match_reconwave():
    grey = np.array([[[0, 51, 255], [128, 204, 10]]], np.uint8)
    unit = grey / 255.0
    mask = np.zeros(grey.shape[:2], bool)
    for alpha in (0.5, -0.5, 0.23):
        out, _ = histories.apply_step(grey, mask, {"op": "brightness", "alpha": alpha})
        assert np.array_equal(out, np.round(np.clip(unit + alpha, 0, 1) * 255).astype(np.uint8))
    for beta in (0.7, 2.0, 1.4):
        out, _ = histories.apply_step(grey, mask, {"op": "contrast", "beta": beta})
        assert np.array_equal(out, np.round(np.clip(unit * beta, 0, 1) * 255).astype(np.uint8))


def test_disturbed_samples_keep_the_clean_image_and_record_alpha_beta(sources):
    history = HistoryConfig(final_jpeg_prob=0.0, disturb_prob=1.0, prior_jpeg_prob=0.0)
    engine = engine_for(sources, seed=4, history=history)
    seen = set()
    for i in range(8):
        s = engine.sample(i)
        d = s.disturbance
        seen.add(d["type"])
        assert s.clean_rgb is not None and s.clean_rgb.shape == s.image.rgb.shape
        step = histories.disturbance_step(d)
        expected, _ = histories.apply_step(s.clean_rgb, s.mask.astype(bool), step)
        assert np.array_equal(s.image.rgb, expected)  # lossless save: exactly the formula
        if d["type"] == "brightness":
            assert 0.1 <= abs(d["alpha"]) <= 0.6 and d["beta"] is None
        else:
            assert d["type"] == "contrast" and d["alpha"] is None
            assert 0.5 <= d["beta"] <= 0.9 or 1.25 <= d["beta"] <= 2.2
    assert seen == {"brightness", "contrast"}
    plain = engine_for(sources, history=PLAIN_HISTORY).sample(0)
    assert plain.disturbance["type"] == "none" and plain.clean_rgb is None


def test_disturbance_plan_covers_both_signs_and_sides():
    rng = np.random.default_rng(0)
    cfg = HistoryConfig(disturb_prob=1.0)
    plans = [histories.plan_disturbance(rng, cfg) for _ in range(200)]
    alphas = [p["alpha"] for p in plans if p["type"] == "brightness"]
    betas = [p["beta"] for p in plans if p["type"] == "contrast"]
    assert min(alphas) < -0.4 and max(alphas) > 0.4
    assert min(betas) < 0.75 and max(betas) > 1.9


# --------------------------------------------------------------------------- sources


def test_list_images_is_recursive_sorted_and_skips_other_files(sources, tmp_path):
    assert len(sources) == 6 and sources == sorted(sources)
    assert {p.suffix for p in sources} == {".jpg", ".png"}
    with pytest.raises(InputError):
        list_images(tmp_path / "missing")


def test_splits_are_deterministic_disjoint_and_by_file_name():
    paths = [Path(f"folder{i % 3}") / f"img_{i:04d}.jpg" for i in range(2000)]
    parts = {s: split_sources(paths, s) for s in ("train", "val", "test")}
    assert sum(len(p) for p in parts.values()) == len(paths)
    assert set().union(*map(set, parts.values())) == set(paths)
    assert not set(parts["train"]) & set(parts["test"])
    assert not set(parts["val"]) & (set(parts["train"]) | set(parts["test"]))
    assert split_sources(list(reversed(paths)), "test") == list(reversed(parts["test"]))
    assert 0.07 < len(parts["test"]) / len(paths) < 0.13
    moved = [Path("elsewhere") / p.name for p in parts["val"]]
    assert split_sources(moved, "val") == moved  # the folder does not matter
    assert split_sources(paths, "all") == paths
    with pytest.raises(UsageError):
        split_sources(paths, "dev")


def test_unreadable_sources_are_skipped(sources, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    engine = engine_for([broken, *sources[:2]], seed=0)
    assert engine.sample(0).image.rgb.size > 0
    with pytest.raises(InputError):
        engine_for([broken]).sample(0)


# --------------------------------------------------------------------------- command


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FORGECTL_DEBUG="")
    return subprocess.run(
        [sys.executable, "-m", "forgectl", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_cli_writes_a_dataset_and_reports_bad_options(sources, tmp_path):
    root = sources[0].parent.parent
    out = tmp_path / "out"
    proc = run_cli(
        "synth",
        "--images",
        str(root),
        "--out",
        str(out),
        "--n",
        "3",
        "--kinds",
        "splice,authentic",
        "--seed",
        "2",
        "--size",
        "96,128",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 3 samples" in proc.stderr
    kinds = {rec["kind"] for rec in read_labels(out)}
    assert kinds <= {"splice", "authentic"} and len(load_dataset(out)) == 3

    bad = run_cli("synth", "--images", str(root), "--out", str(tmp_path / "x"), "--kinds", "blur")
    assert bad.returncode == 2 and "unknown kind" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    again = run_cli("synth", "--images", str(root), "--out", str(out), "--n", "1")
    assert again.returncode == 2 and "not empty" in again.stderr
    missing = run_cli("synth", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "y"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr


# --------------------------------------------------------------------------- corpus


@pytest.mark.shared
def test_corpus_samples_of_every_kind(corpus_dir):
    paths = split_sources(list_images(corpus_dir), "test")[:6]
    engine = SynthesisEngine(paths, seed=0, config=SynthConfig(size_range=(256, 320)))
    for index, kind in enumerate(KINDS):
        s = engine.sample(index, kind=kind)
        assert s.kind == kind and s.mask.shape == s.image.rgb.shape[:2]
        assert (s.mask.sum() > 0) == (kind != "authentic")
        assert all(not Path(name).is_absolute() for name in s.source)


def test_reshared_files_are_recropped_off_grid_and_keep_mask_and_clean_image_aligned(sources):
    base = dict(final_jpeg_prob=1.0, disturb_prob=1.0, prior_jpeg_prob=0.0)
    plain = engine_for(sources, seed=5, history=HistoryConfig(**base))
    shared = engine_for(sources, seed=5, history=HistoryConfig(**base, reshare_prob=1.0))
    for i in range(6):
        a, b = plain.sample(i), shared.sample(i)
        ops = [s["op"] for s in b.history]
        crop = ops.index("offset_crop")
        assert ops[crop - 1] == "jpeg" and ops[-1] in ("jpeg", "png")  # after the first save
        assert b.history[:crop] == a.history  # the same sample up to the save
        assert histories.reshared(b.history) and not histories.reshared(a.history)
        step = b.history[crop]
        assert 1 <= step["dy"] <= 7 and 1 <= step["dx"] <= 7
        assert b.mask.shape == b.image.rgb.shape[:2] == b.clean_rgb.shape[:2]
        assert (b.file_ext == ".jpg") == (b.history[-1]["op"] == "jpeg")
        if "resize" not in ops[crop:]:  # a pure crop: the mask moved with the pixels
            dy, dx = step["dy"], step["dx"]
            assert np.array_equal(b.mask, a.mask[dy:, dx:])
    # reshare_prob 0 (the default) draws nothing: samples stay byte-identical to before.
    again = engine_for(sources, seed=5, history=HistoryConfig(**base, reshare_prob=0.0))
    assert again.sample(0).file_bytes == plain.sample(0).file_bytes


def test_unknown_history_keys_are_usage_errors():
    with pytest.raises(UsageError, match="history key"):
        SynthConfig.from_dict({"history": {"reshare_porb": 0.2}})
