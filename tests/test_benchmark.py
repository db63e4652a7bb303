"""`forgectl benchmark` end to end on a tiny dataset made here, checked against an independent
computation; datasets, sampling and bad items; parity with `localize` on casia1-dev."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from forgectl import registry
from forgectl.cli import app
from forgectl.errors import InputError, UsageError
from forgectl.evaluation.datasets import file_list_sha256, load_dataset, load_mask
from forgectl.intake import encode_jpeg, jpeg_reader, load_image
from tests.helpers import weights_with_damaged_twin

THRESHOLD = 0.1  # low enough that ELA flags pixels on these small images


def forge(host: np.ndarray, donor: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Paste a donor rectangle into a twice-compressed host; returns the forged pixels."""
    import cv2

    for q in (60, 70):
        host = cv2.imdecode(np.frombuffer(encode_jpeg(host, q), np.uint8), 1)[:, :, ::-1]
    y0, y1, x0, x1 = box
    out = host.copy()
    out[y0:y1, x0:x1] = donor[y0:y1, x0:x1]
    return out


@pytest.fixture
def tiny_dataset(tmp_path, make_image) -> Path:
    """3 good tampered images (L, RGB and RGBA masks), 1 with a mask of the wrong size,
    2 authentic images."""
    root = tmp_path / "ds"
    for sub in ("images", "masks", "authentic"):
        (root / sub).mkdir(parents=True)
    boxes = [(16, 56, 24, 80), (40, 90, 10, 60), (8, 40, 60, 110)]
    modes = ["L", "RGB", "RGBA"]
    for i, (box, mode) in enumerate(zip(boxes, modes, strict=True)):
        h, w = 96, 128
        pixels = forge(make_image(h, w, seed=i), make_image(h, w, seed=50 + i), box)
        (root / "images" / f"t{i}.jpg").write_bytes(encode_jpeg(pixels, 92))
        mask = np.zeros((h, w), np.uint8)
        mask[box[0] : box[1], box[2] : box[3]] = 255
        Image.fromarray(mask).convert(mode).save(root / "masks" / f"t{i}.png")
    (root / "images" / "bad.jpg").write_bytes(encode_jpeg(make_image(64, 64, seed=9), 90))
    Image.fromarray(np.zeros((60, 64), np.uint8)).save(root / "masks" / "bad.png")
    for i in range(2):
        (root / "authentic" / f"a{i}.jpg").write_bytes(
            encode_jpeg(make_image(80, 112, seed=20 + i), 88)
        )
    return root


def independent_scores(root: Path) -> dict[str, dict[str, float]]:
    """Per-image F1 and flagged fraction from ELA's masks, computed without forgectl.evaluation."""
    ela = registry.load("ela", threshold=THRESHOLD)
    out = {}
    for path in sorted((root / "images").glob("t*.jpg")) + sorted(
        (root / "authentic").glob("*.jpg")
    ):
        result = ela.localize(load_image(path))
        rec = {"score": result.score, "flagged": float(result.mask.mean())}
        if path.parent.name == "images":
            gt = np.asarray(Image.open(root / "masks" / f"{path.stem}.png").convert("L")) > 127
            tp = np.sum(result.mask & gt)
            fp = np.sum(result.mask & ~gt)
            fn = np.sum(~result.mask & gt)
            rec["f1"] = 2 * tp / (2 * tp + fp + fn)
            rec["iou"] = tp / (tp + fp + fn)
        out[path.relative_to(root).as_posix()] = rec
    return out


def read_items(out: Path) -> list[dict[str, str]]:
    with open(out / "items.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_benchmark_cli_reports_and_numbers(tiny_dataset, tmp_path):
    out = tmp_path / "bench"
    args = [
        "benchmark",
        str(tiny_dataset),
        "--methods",
        "ela",
        "--out",
        str(out),
        "--threshold",
        str(THRESHOLD),
        "--bootstrap",
        "200",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in (
        "report.json",
        "report.csv",
        "items.csv",
        "plots/methods.png",
        "plots/f1_vs_threshold.png",
    ):
        assert (out / name).is_file(), name
    assert "Localization" in result.stdout and "ela" in result.stdout

    report = json.loads((out / "report.json").read_text())
    (row,) = report["rows"]
    assert row["counts"] == {
        "items": 6,
        "tampered": 4,
        "authentic": 2,
        "evaluated": 5,
        "errors": 1,
        "not_applicable": 0,
    }
    (error,) = row["errors"]
    assert error["key"] == "images/bad.jpg" and "never resized" in error["error"]

    expected = independent_scores(tiny_dataset)
    items = {r["key"]: r for r in read_items(out)}
    assert items["images/bad.jpg"]["status"] == "error"
    tampered = [k for k in expected if k.startswith("images/")]
    authentic = [k for k in expected if k.startswith("authentic/")]
    for key in tampered:
        assert float(items[key]["f1"]) == pytest.approx(expected[key]["f1"], abs=1e-9)
    assert any(expected[k]["f1"] > 0 for k in tampered)  # the comparison is not all zeros
    loc = row["localization"]
    assert loc["f1"] == pytest.approx(np.mean([expected[k]["f1"] for k in tampered]), abs=1e-6)
    assert loc["iou"] == pytest.approx(np.mean([expected[k]["iou"] for k in tampered]), abs=1e-6)
    assert loc["f1_ci"][0] <= loc["f1"] <= loc["f1_ci"][1]
    assert loc["oracle_f1"] >= loc["best_threshold_f1"] >= loc["f1"] - 1e-6
    # Flag-everything reference: F1 = 2g / (1 + g), g = box area / image area (96 x 128).
    g = np.array([40 * 56, 50 * 50, 32 * 50]) / (96 * 128)
    assert loc["f1_flag_everything"] == pytest.approx(np.mean(2 * g / (1 + g)), abs=1e-6)
    # Authentic images: the fraction of flagged pixels, never an F1.
    assert row["authentic"]["fpr"] == pytest.approx(
        np.mean([expected[k]["flagged"] for k in authentic]), abs=1e-6
    )
    assert items[authentic[0]]["f1"] == ""
    # The false-alarm curve: at the run's threshold it is the authentic FPR above.
    curve = row["f1_by_threshold"]
    k = curve["thresholds"].index(THRESHOLD)
    assert curve["authentic_fpr"][k] == pytest.approx(row["authentic"]["fpr"], abs=1e-6)
    assert curve["authentic_fpr"][0] >= curve["authentic_fpr"][-1]
    from sklearn.metrics import roc_auc_score

    keys = tampered + authentic
    auc = roc_auc_score([k in tampered for k in keys], [expected[k]["score"] for k in keys])
    assert row["detection"]["image_auc"] == pytest.approx(auc, abs=1e-6)

    manifest = report["manifest"]
    assert manifest["forgectl_version"] and manifest["methods"][0]["name"] == "ela"
    assert manifest["methods"][0]["threshold"] == THRESHOLD
    assert manifest["jpeg_reader"] == jpeg_reader()
    assert manifest["dataset"]["file_list_sha256"] == file_list_sha256(
        load_dataset(tiny_dataset).items
    )
    with open(out / "report.csv", newline="") as fh:
        (csv_row,) = list(csv.DictReader(fh))
    assert float(csv_row["f1"]) == pytest.approx(loc["f1"])


def test_sweep_rows_and_plots(tiny_dataset, tmp_path):
    out = tmp_path / "sweep"
    args = [
        "benchmark",
        str(tiny_dataset),
        "--methods",
        "ela",
        "--out",
        str(out),
        "--perturb",
        "jpeg:q=50,90",
        "--perturb",
        "brightness:alpha=0.5,-0.5",
        "--bootstrap",
        "0",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    settings = [r["setting"] for r in report["rows"]]
    assert settings == [
        "clean",
        "jpeg:q=50",
        "jpeg:q=90",
        "brightness:alpha=0.5",
        "brightness:alpha=-0.5",
    ]
    assert (out / "plots" / "sweep_jpeg.png").is_file()
    assert (out / "plots" / "sweep_brightness.png").is_file()
    assert all(r["localization"]["f1_ci"] is None for r in report["rows"])  # --bootstrap 0
    # The error item stays an error under every setting; nothing else fails.
    assert all(r["counts"]["errors"] == 1 for r in report["rows"])


def test_workers_give_the_same_numbers(tiny_dataset):
    from forgectl.evaluation.runner import evaluate_backend

    data = load_dataset(tiny_dataset)
    ela = registry.load("ela", threshold=THRESHOLD)
    one = evaluate_backend(ela, data, workers=1, n_boot=0)
    two = evaluate_backend(ela, data, workers=2, n_boot=0)
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip} for r in one["items"]] == [
        {k: v for k, v in r.items() if k not in strip} for r in two["items"]
    ]
    assert one["localization"] == two["localization"]
    assert two["speed"]["workers"] == 2 and two["speed"]["peak_rss_mb"] > 0


def test_manifest_layout_with_types_and_missing_files(tmp_path, make_image):
    root = tmp_path / "m"
    (root / "img").mkdir(parents=True)
    rows = ["image_path\tmask_path\tlabel\tmanipulation_type\tnotes"]
    for i, kind in enumerate(["splice", "copy-move"]):
        (root / "img" / f"f{i}.jpg").write_bytes(encode_jpeg(make_image(64, 64, seed=i), 90))
        mask = np.zeros((64, 64), np.uint8)
        mask[10:30, 10:40] = 255
        Image.fromarray(mask).save(root / "img" / f"f{i}_m.png")
        rows.append(f"img/f{i}.jpg\timg/f{i}_m.png\ttampered\t{kind}\t")
    (root / "img" / "a.jpg").write_bytes(encode_jpeg(make_image(64, 64, seed=7), 90))
    rows.append("img/a.jpg\t\tauthentic\t\t")
    rows.append("img/missing.jpg\timg/missing.png\ttampered\tsplice\t")
    rows.append("img/a.jpg\t\tweird-label\t\t")
    (root / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    data = load_dataset(root)
    assert data.layout == "manifest" and len(data) == 5
    assert [it.manipulation for it in data.items[:2]] == ["splice", "copy-move"]
    assert data.items[3].problem == "image file not found"
    assert "listed twice" in data.items[4].problem

    from forgectl.evaluation.runner import evaluate_backend

    summary = evaluate_backend(registry.load("ela"), data, n_boot=0)
    assert summary["counts"]["errors"] == 2 and summary["counts"]["evaluated"] == 3
    assert set(summary["localization"]["by_type"]) == {"splice", "copy-move"}


def test_folder_layout_pairs_by_stem_and_flags_orphans(tmp_path, make_image):
    root = tmp_path / "f"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("x", "y"):
        (root / "images" / f"{stem}.png").write_bytes(b"")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "masks" / "x_gt.tif")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "masks" / "z.png")
    data = load_dataset(root)
    x, y = data.items
    assert x.mask == root / "masks" / "x_gt.tif" and x.problem is None
    assert y.mask is None and "no mask" in y.problem
    assert data.warnings == ["mask masks/z.png matches no image in images/"]


def test_sample_is_deterministic_and_stratified(tiny_dataset):
    data = load_dataset(tiny_dataset)
    a = data.sample(3, seed=1)
    assert [it.key for it in a] == [it.key for it in data.sample(3, seed=1)]
    assert len(a) == 3 and a.n_tampered >= 1 and a.n_authentic >= 1
    assert data.sample(None) is data and len(data.sample(100)) == len(data)
    keys = [it.key for it in a]
    assert keys == [it.key for it in data if it.key in keys]  # dataset order kept


def test_load_mask_rules(tmp_path):
    grey = np.array([[0, 127, 128, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert load_mask(tmp_path / "g.png", (1, 4)).tolist() == [[False, False, True, True]]
    with pytest.raises(InputError, match="never resized"):
        load_mask(tmp_path / "g.png", (4, 1))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    with pytest.raises(InputError, match="cannot read mask"):
        load_mask(tmp_path / "broken.png", (1, 4))


def test_file_list_hash_follows_content(tiny_dataset):
    before = file_list_sha256(load_dataset(tiny_dataset).items)
    assert before == file_list_sha256(load_dataset(tiny_dataset).items)
    mask = tiny_dataset / "masks" / "t0.png"
    arr = np.asarray(Image.open(mask)).copy()
    arr[0, 0] = 255
    Image.fromarray(arr).save(mask)
    assert file_list_sha256(load_dataset(tiny_dataset).items) != before


def test_usage_errors(tiny_dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["benchmark", str(tiny_dataset), "--methods", "nope"])
    assert isinstance(result.exception, UsageError)
    result = runner.invoke(app, ["benchmark", str(tiny_dataset), "--perturb", "jpeg:q=500"])
    assert isinstance(result.exception, UsageError)
    result = runner.invoke(
        app, ["benchmark", str(tiny_dataset), "--out", str(tiny_dataset / "report")]
    )
    assert isinstance(result.exception, UsageError)
    result = runner.invoke(app, ["benchmark", str(tmp_path / "none"), "--out", str(tmp_path)])
    assert isinstance(result.exception, InputError)


@pytest.mark.shared
@pytest.mark.parametrize("threshold", ["0.5", "0.1"])
def test_parity_with_localize_on_casia(casia_dir, tmp_path, threshold):
    """Benchmark per-image F1 equals F1 computed from the masks `localize` writes."""
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            str(casia_dir),
            "--methods",
            "ela",
            "--limit",
            "20",
            "--out",
            str(out),
            "--threshold",
            threshold,
            "--bootstrap",
            "0",
            "--no-plots",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [r for r in read_items(out) if r["label"] == "tampered" and r["status"] == "ok"]
    assert len(rows) >= 8
    images = [str(casia_dir / r["key"]) for r in rows]
    loc_out = tmp_path / "loc"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "forgectl",
            "localize",
            *images,
            "--method",
            "ela",
            "--threshold",
            threshold,
            "--out",
            str(loc_out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    flagged = 0
    for r in rows:
        stem = Path(r["key"]).stem
        pred = np.asarray(Image.open(loc_out / f"{stem}.mask.png")) > 127
        gt = np.asarray(Image.open(casia_dir / "masks" / f"{stem}.png").convert("L")) > 127
        tp, fp, fn = np.sum(pred & gt), np.sum(pred & ~gt), np.sum(~pred & gt)
        f1 = 2 * tp / (2 * tp + fp + fn)
        assert float(r["f1"]) == pytest.approx(f1, abs=0.005), stem
        flagged += int(pred.any())
    if threshold == "0.1":
        assert flagged > len(rows) // 2  # at 0.1 the masks are not empty: a real comparison


def test_halves_are_fixed_stratified_and_disjoint():
    from forgectl.evaluation.datasets import halves

    keys = [f"images/{i:03d}.jpg" for i in range(40)] + [f"authentic/{i:03d}.jpg"
                                                          for i in range(21)]
    strata = [("tampered", "splice" if i % 4 else "copy-move") for i in range(40)] + [
        ("authentic", "")] * 21
    a, b = halves(keys, strata)
    assert sorted(a + b) == list(range(61)) and not set(a) & set(b)
    for stratum in set(strata):
        n_a = sum(strata[i] == stratum for i in a)
        n_b = sum(strata[i] == stratum for i in b)
        assert n_a - n_b in (0, 1)  # each stratum alternates A, B, A, ...
    # A pure function of the names: another order of the same items gives the same halves.
    order = list(reversed(range(61)))
    a2, b2 = halves([keys[i] for i in order], [strata[i] for i in order])
    assert sorted(order[i] for i in a2) == sorted(a)
    assert sorted(order[i] for i in b2) == sorted(b)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_method_that_cannot_run_stops_the_benchmark_in_one_line(tiny_dataset, tmp_path,
                                                                   workers):
    """A damaged twin is the method, not an item: one line and no report, not a report of N
    identical errors (nor, with worker processes, a traceback and a broken pool)."""
    copy = weights_with_damaged_twin(tmp_path / "weights")
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "forgectl", "benchmark", str(tiny_dataset), "-m", "omni",
         "-j", workers, "--bootstrap", "0", "--no-plots", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "FORGECTL_WEIGHTS_DIR": str(copy),
             "FORGECTL_DEBUG": ""})
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == ["forgectl: error: omni-tiny.onnx does not match its sha256 in SHA256SUMS "
                      "(truncated or modified file): reinstall forgectl, or re-export it with "
                      "`forgectl export`"], done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
