"""FOCAL: extractors (shapes, ONNX), test-time fusion, clustering (HDBSCAN vs the released
KMeans), and the recipe (prepare, InfoNCE++ loss, clustering predict).

Clustering is tested on synthetic embedding grids: Gaussian blobs around random unit vectors
in D dimensions, one blob per "source", so the expected mask is known exactly.
"""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest
import torch

from forgectl.analysis.clustering import (
    MIN_CLUSTER_FRACTION,
    STRUCTURE_FEATURES,
    calibrated_score,
    cluster_map,
    project_2d,
    structure_features,
)
from forgectl.intake import image_from_array
from forgectl.nets.focal import FocalExtractor, focal_config, fuse_features
from forgectl.recipes.focal import recipe
from forgectl.synth.sample import SynthSample
from forgectl.training.losses import info_nce_pp
from tests.contract import BackendContract
from tests.helpers import natural_image, write_random_weights

torch.set_num_threads(1)

TINY = ("tiny-hrnet", "tiny-lite0")


def _extractor(name: str, seed: int = 0) -> FocalExtractor:
    config = focal_config(name)
    config["pretrained"] = False  # shapes and export do not need ImageNet weights
    torch.manual_seed(seed)
    return FocalExtractor(config)


def _blobs(h: int, w: int, d: int = 16, two: bool = True, noise: float = 0.25,
           seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(d, h, w) features: a pristine blob everywhere, a second blob in a rectangle."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    region = np.zeros((h, w), bool)
    if two:
        region[h // 5: h // 5 + h // 3, w // 4: w // 4 + w // 3] = True
    feats = np.where(region[None], centres[1][:, None, None], centres[0][:, None, None])
    feats = feats + rng.normal(scale=noise / np.sqrt(d), size=(d, h, w))
    return feats.astype(np.float32), region


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


# ------------------------------------------------------------------ extractor


@pytest.mark.parametrize("name", TINY)
def test_extractor_gives_stride_4_embeddings_for_non_square_inputs(name: str) -> None:
    model = _extractor(name).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 64, 16, 24) and model.dim == 64 and model.stride == 4
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 64, 80))


def test_configs_and_aliases() -> None:
    assert focal_config("tiny") == focal_config("tiny-lite0")
    assert focal_config("paper") == focal_config("paper-vit")
    assert focal_config("paper-hrnet")["dim"] == 32  # official HRNet-W32 output channels
    assert focal_config("paper-vit")["dim"] == 256  # official SAM ViT-L neck
    with pytest.raises(ValueError, match="unknown focal config"):
        focal_config("huge")


@pytest.mark.parametrize("name", TINY)
def test_onnx_export_with_dynamic_size_matches_torch(name: str) -> None:
    import onnxruntime as ort

    model = _extractor(name).eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), buf, dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "b", 2: "h", 3: "w"},
                                        "features": {0: "b", 2: "fh", 3: "fw"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for shape in ((1, 3, 96, 160), (2, 3, 128, 64)):
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        out = session.run(None, {"image": x.numpy()})[0]
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() < 1e-4


# ------------------------------------------------------------------ fusion


def test_fuse_features_normalises_each_block_on_a_common_grid() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 12, 16)).astype(np.float32) * 5
    b = rng.normal(size=(4, 3, 4)).astype(np.float32)  # coarser (stride 16 vs 4)
    c = rng.normal(size=(2, 24, 32)).astype(np.float32)  # finer: area-averaged down
    fused = fuse_features([a, b, c], (12, 16))
    assert fused.shape == (14, 12, 16) and fused.dtype == np.float32
    for lo, hi in ((0, 8), (8, 12), (12, 14)):
        np.testing.assert_allclose(np.linalg.norm(fused[lo:hi], axis=0), 1.0, atol=1e-5)
    # Same grid: the block is just the normalised input.
    np.testing.assert_allclose(fused[:8], a / np.linalg.norm(a, axis=0), atol=1e-6)
    # A constant coarse map stays constant after resampling.
    flat = fuse_features([np.ones((3, 2, 2), np.float32)], (8, 8))
    np.testing.assert_allclose(flat, 1 / np.sqrt(3), atol=1e-6)


# ------------------------------------------------------------------ clustering


def test_two_blobs_mask_the_smaller_one_with_a_high_score() -> None:
    feats, region = _blobs(48, 64)
    result = cluster_map(feats)
    assert _iou(result.mask, region) > 0.9
    assert result.score > 0.7 and result.found
    assert result.labels.shape == (48, 64) and result.sizes.sum() == 48 * 64
    assert result.facts["clusters"][1]["separation"] > 5


def test_one_blob_is_nothing_found_while_kmeans_always_marks_something() -> None:
    feats, _ = _blobs(48, 64, two=False, noise=0.6)
    result = cluster_map(feats)
    assert not result.mask.any() and result.score < 0.1 and not result.found
    # The released code's 2-cluster KMeans splits one population anyway (its known flaw).
    km = cluster_map(feats, method="kmeans")
    assert 0 < km.mask.mean() <= 0.5
    assert km.score < 0.5  # the structure score still says the split is weak


def test_min_cluster_size_follows_the_papers_fraction() -> None:
    feats, region = _blobs(64, 80)
    result = cluster_map(feats, max_points=4000)
    assert result.facts["min_cluster_size"] == round(MIN_CLUSTER_FRACTION * 4000) == 12
    # An explicit size is in grid points, scaled to the subsample.
    assert cluster_map(feats, min_cluster_size=640, max_points=2000).facts[
        "min_cluster_size"] == 250
    # A region below the minimum size is not a cluster.
    assert not cluster_map(feats, min_cluster_size=2 * int(region.sum()), max_points=2000).found


def test_subsampled_clustering_agrees_with_full_clustering() -> None:
    feats, region = _blobs(96, 96, noise=0.5, seed=3)
    full = cluster_map(feats, max_points=100_000)
    sub = cluster_map(feats, max_points=1500, seed=1)
    assert full.facts["clustered_points"] == 96 * 96 and sub.facts["clustered_points"] == 1500
    assert _iou(full.mask, sub.mask) > 0.95
    assert _iou(sub.mask, region) > 0.9


def test_structure_features_and_calibration() -> None:
    feats, _ = _blobs(48, 64)
    found = structure_features(cluster_map(feats))
    none = structure_features(cluster_map(_blobs(48, 64, two=False, noise=0.6)[0]))
    assert tuple(found) == STRUCTURE_FEATURES and tuple(none) == STRUCTURE_FEATURES
    assert found["found"] == 1.0 and none["found"] == 0.0
    coef = {"bias": -3.0, "max_separation": 0.5, "found": 1.0}
    assert calibrated_score(found, coef) > 0.9 > 0.1 > calibrated_score(none, coef)
    with pytest.raises(ValueError, match="unknown features"):
        calibrated_score(found, {"nope": 1.0})


def test_project_2d_subsamples_points_and_labels() -> None:
    feats, region = _blobs(40, 50)
    pts, labels = project_2d(feats, region.astype(int), n=300)
    assert pts.shape == (300, 2) and labels.shape == (300,)
    # The two blobs separate along the first principal axis.
    assert abs(pts[labels == 1, 0].mean() - pts[labels == 0, 0].mean()) > 0.5


# ------------------------------------------------------------------ recipe


def _sample(height: int = 120, width: int = 150) -> SynthSample:
    """A photo-like image whose rectangle (a quarter to a half of each side) got strong noise."""
    rgb = natural_image(height, width, seed=1).astype(np.float32)
    y0, y1, x0, x1 = height // 4, height // 2 + 10, width // 4, width // 2 + 20
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    rgb[y0:y1, x0:x1] += np.random.default_rng(0).normal(0, 30, (y1 - y0, x1 - x0, 3))
    return SynthSample(image=image_from_array(np.clip(rgb, 0, 255).astype(np.uint8)),
                       file_bytes=b"", file_ext=".png", mask=mask,
                       boxes=np.array([[x0, y0, x1, y1]], np.float32), kind="splice")


def _config(name: str = "tiny-hrnet", crop: int = 64) -> dict:
    config = copy.deepcopy(recipe().configs[name])
    config["model"]["pretrained"] = False
    config["crop"] = crop
    return config


def test_recipe_configs() -> None:
    configs = recipe().configs
    assert {"tiny", "paper", "tiny-hrnet", "tiny-lite0", "paper-hrnet", "paper-vit"} <= set(configs)
    for config in configs.values():
        assert config["temperature"] == 0.1 and config["max_samples"] == 1000
        assert config["crop"] % 32 == 0 and "clustering" in config["model"]
    assert configs["tiny"]["pretrained"]  # ImageNet Lite0 from the local package


def test_prepare_crops_on_the_grid_and_focuses_on_forged_pixels() -> None:
    rec, config = recipe(), _config(crop=64)
    sample = _sample()
    config["flip_prob"] = 0.0
    for seed in range(5):
        item = rec.prepare(sample, config, np.random.default_rng(seed))
        assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
        assert item["valid"].all() and item["draw_seed"].dtype == torch.int64
        # Find the crop origin: it must lie on the 8x8 grid.
        mean, std = 0.5, 0.5
        rgb = sample.image.rgb.astype(np.float32) / 255
        crop = item["image"].numpy().transpose(1, 2, 0) * std + mean
        hits = [(y, x) for y in range(0, 120 - 63) for x in range(0, 150 - 63)
                if np.allclose(rgb[y:y + 64, x:x + 64], crop, atol=1e-5)]
        assert hits and all(y % 8 == 0 and x % 8 == 0 for y, x in hits)
    config["focus_prob"] = 1.0
    assert all(rec.prepare(sample, config, np.random.default_rng(s))["mask"].any()
               for s in range(5))
    # A small image is padded; the padding is marked invalid.
    item = rec.prepare(_sample(40, 50), config, np.random.default_rng(0))
    assert item["image"].shape == (3, 64, 64) and item["valid"].sum() == 40 * 50


def test_loss_and_predict_on_fake_samples() -> None:
    rec, config = recipe(), _config(crop=64)
    model = rec.build_model(config)
    items = [rec.prepare(_sample(), config, np.random.default_rng(s)) for s in range(2)]
    items.append(rec.prepare(_sample(40, 50), config, np.random.default_rng(2)))  # padded
    batch = rec.collate(items)
    loss, logs = rec.loss(model, batch, config)
    assert loss.ndim == 0 and np.isfinite(logs["loss"]) and logs["info_nce"] > 0
    assert 0 < logs["contrast_share"] <= 1 and "class_cos" in logs
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    # Same batch, same loss: the draws are seeded from the batch, not the global RNG.
    again, _ = rec.loss(model, batch, config)
    assert float(again.detach()) == pytest.approx(float(loss.detach()))
    probs = rec.predict(model, batch)
    assert probs.shape == (3, 1, 64, 64)
    assert set(np.unique(probs.numpy())) <= {0.0, 1.0}
    assert not probs[2][batch["valid"][2] == 0].any()  # padding is never forged
    assert model.training  # predict restores the mode


def test_a_few_steps_lower_info_nce_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    model = _extractor("tiny-hrnet")
    x = torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:10, 3:11] = 1
    x[:, :, 16:40, 12:44] += 1.5 * torch.randn(2, 3, 24, 32)  # the "forged" texture

    def value() -> torch.Tensor:
        return info_nce_pp(model(x), mask, generator=torch.Generator().manual_seed(0))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.no_grad():
        first = float(value())
    for _ in range(8):
        optimizer.zero_grad()
        loss = value()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert float(value()) < 0.8 * first


# ------------------------------------------------------------------ backend


@pytest.fixture(scope="module")
def focal_weights(tmp_path_factory):
    """Random-init tiny extractors saved as shipped files would be (primary + second)."""
    from forgectl.nets.focal import FocalExtractor, focal_config

    folder = tmp_path_factory.mktemp("focal-weights")
    paths = {}
    for name in ("tiny-lite0", "tiny-hrnet"):
        torch.manual_seed(0)
        config = focal_config(name)
        config["pretrained"] = False
        paths[name] = write_random_weights(FocalExtractor(config),
                                           folder / f"focal-{name}.safetensors", "focal",
                                           {"model": config}, name)
    return paths


class TestFocalContract(BackendContract):
    method = "focal"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, focal_weights):
        from forgectl.backends.focal import FocalBackend

        return FocalBackend(weights=focal_weights["tiny-lite0"], fusion=False, tile=96,
                            overlap=16)


def test_focal_fuses_two_extractors_and_kmeans_always_marks(focal_weights):
    from forgectl.backends.focal import FocalBackend

    image = image_from_array(natural_image(96, 128, seed=4), jpeg_quality=90)
    fused = FocalBackend(weights=focal_weights["tiny-lite0"],
                         second_weights=str(focal_weights["tiny-hrnet"]), tile=64, overlap=16)
    result = fused.localize(image)
    assert result.facts["fused"] and len(result.facts["extractors"]) == 2
    assert result.maps["clusters"].shape == (96, 128)
    (figure,) = result.figures.values()  # the 2-D projection explain shows
    assert figure.shape == (200, 200, 3) and figure.dtype == np.uint8 and (figure < 255).any()
    kmeans = FocalBackend(weights=focal_weights["tiny-lite0"], fusion=False, cluster="kmeans")
    assert kmeans.localize(image).mask.any()  # the released code's rule: always a region


def test_focal_exports_with_parity_on_the_features(focal_weights, tmp_path):
    from forgectl import export as ex
    from forgectl.backends.focal import FocalBackend

    backend = FocalBackend(weights=focal_weights["tiny-lite0"], fusion=False, tile=96,
                           overlap=16)
    images = ex.sample_images(((64, 96, 85), (128, 160, 75)))
    report = ex.export_model(backend, "onnx", tmp_path / "focal.onnx", images=images)
    assert report.max_abs_diff <= ex.DEFAULT_TOLERANCE


def test_focal_applies_a_calibration_only_to_its_own_setup(focal_weights, tmp_path):
    import json
    import shutil

    from forgectl.analysis.clustering import MIN_SEPARATION
    from forgectl.backends.focal import FocalBackend

    weights = tmp_path / "focal-tiny-lite0.safetensors"
    shutil.copy(focal_weights["tiny-lite0"], weights)
    card = json.loads(focal_weights["tiny-lite0"].with_suffix(".json").read_text())
    setup = {"cluster": "hdbscan", "fused": False, "min_separation": MIN_SEPARATION}
    card["calibration"] = {"coef": {"bias": 2.0}, "setup": setup}
    weights.with_suffix(".json").write_text(json.dumps(card))
    image = image_from_array(natural_image(64, 96, seed=5), jpeg_quality=90)
    same = FocalBackend(weights=weights, fusion=False).localize(image)
    assert same.facts["score_kind"] == "calibrated"
    assert same.score == pytest.approx(1 / (1 + np.exp(-2.0)), abs=1e-6)
    other = FocalBackend(weights=weights, fusion=False, cluster="kmeans").localize(image)
    assert other.facts["score_kind"].startswith("raw")
    moved = FocalBackend(weights=weights, fusion=False, min_separation=3.0).localize(image)
    assert moved.facts["score_kind"].startswith("raw")
