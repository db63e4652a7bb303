"""Omni-IML: gate rule, routing, recipe (grid-aligned crops, flips, boxes, losses), backend.

The backend is tested with a randomly initialised tiny model saved to a temporary weights file
and model card (the loading path users hit), not with shipped weights.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from forgectl.analysis.network_inputs import flip_blocks
from forgectl.backends.omni import OmniBackend
from forgectl.errors import UsageError, WeightsError
from forgectl.intake import encode_jpeg, image_from_array, image_from_bytes
from forgectl.nets.frequency import coefficient_indices
from forgectl.nets.omni import (
    OMNI_CONFIGS,
    OmniIML,
    gate_labels,
    grid_profile,
    mask_iou,
    omni_config,
)
from forgectl.recipes.omni import _crop_boxes
from forgectl.recipes.omni import recipe as training_recipe
from forgectl.synth.sample import SynthSample
from tests.contract import BackendContract, check_result
from tests.helpers import natural_image

torch.set_num_threads(1)


def _tiny_recipe_config(crop: int = 64) -> dict:
    config = copy.deepcopy(training_recipe().configs["tiny"])
    config["model"]["pretrained"] = False  # tests do not need ImageNet weights
    config["crop"] = crop
    return config


def _write_weights(folder, with_box_head: bool = True, drop: str | None = None,
                   **model: object):
    torch.manual_seed(0)
    config = _tiny_recipe_config()
    config["model"].update(model)
    model = OmniIML(config["model"], with_box_head=with_box_head)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if drop:
        state = {k: v for k, v in state.items() if not k.startswith(drop)}
    from safetensors.torch import save_file

    path = folder / "omni-tiny.safetensors"
    save_file(state, str(path))
    card = {"format": "forgectl.model_card/1", "method": "omni", "config_name": "tiny",
            "config": config}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def weights_path(tmp_path_factory):
    return _write_weights(tmp_path_factory.mktemp("omni"))


# ------------------------------------------------------------------ gate


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return (mask * 2 - 1) * 10.0


def test_gate_label_rule_needs_a_margin_of_one_tenth():
    target = torch.zeros(1, 1, 10, 10)
    target[..., :, :5] = 1  # 50 pixels
    perfect = _logits(target)
    near = target.clone()
    near[..., 0, 5:8] = 1  # 3 false positives: IoU 50/53 = 0.943
    half = torch.zeros_like(target)
    half[..., :5, :5] = 1  # IoU 25/50 = 0.5
    torch.testing.assert_close(mask_iou(_logits(near), target), torch.tensor([50 / 53]))
    # RGB better by 0.057 < 0.1: fused stays; by 0.5: RGB.
    assert not bool(gate_labels(perfect, _logits(near), target)[0])
    assert bool(gate_labels(perfect, _logits(half), target)[0])
    # Fused better: never RGB. Equal: not RGB.
    assert not bool(gate_labels(_logits(half), perfect, target)[0])
    assert not bool(gate_labels(perfect, perfect, target)[0])
    # Authentic image, both empty: IoU 1 each, so the fused route is kept.
    empty = torch.zeros_like(target)
    assert mask_iou(_logits(empty), empty).item() == 1.0
    assert not bool(gate_labels(_logits(empty), _logits(empty), empty, margin=0.1)[0])
    # A custom margin is honoured.
    assert bool(gate_labels(perfect, _logits(near), target, margin=0.05)[0])


def _decoded(rgb: np.ndarray, quality: int) -> np.ndarray:
    return image_from_bytes(encode_jpeg(rgb, quality), "x.jpg").rgb


def _profile(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    return grid_profile(x)[0]


def test_grid_profile_finds_the_blocking_grid_phase():
    once = _decoded(natural_image(160, 200, seed=3), 40)
    prof = _profile(once[:160, :200])
    assert int(prof[:8].argmax()) == 7 and int(prof[8:].argmax()) == 7  # this file's grid
    # Cropped 3 columns and 5 rows off the grid: the old boundaries now sit at phases 4 and 2.
    shifted = _profile(np.ascontiguousarray(once[5:149, 3:187]))
    assert int(shifted[:8].argmax()) == 4 and int(shifted[8:].argmax()) == 2
    # Never compressed: no phase stands out as the grid does.
    plain = _profile(natural_image(160, 200, seed=3))
    assert float(plain.max()) < 0.5 * float(prof[:8].max())
    # Scale-free, and shapes checked.
    x = torch.from_numpy(once.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    torch.testing.assert_close(grid_profile(x), grid_profile(3 * x), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="8k"):
        grid_profile(torch.zeros(1, 3, 60, 64))


def test_a_gate_with_the_grid_profile_starts_as_the_gate_without_it():
    torch.manual_seed(0)
    plain = OmniIML(_tiny_recipe_config()["model"]).eval()
    cfg = _tiny_recipe_config()["model"]
    cfg["gate_grid_profile"] = True
    extended = OmniIML(cfg).eval()
    missing, unexpected = extended.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("gate.profile.") for k in missing)
    x = torch.randn(2, 3, 64, 64)
    dct = torch.randint(0, 20, (2, 64, 64))
    qt = torch.full((2, 8, 8), 5)
    has_jpeg = torch.tensor([True, True])
    with torch.no_grad():
        a = plain(x, dct, qt, has_jpeg)["gate_logit"]
        b = extended(x, dct, qt, has_jpeg)["gate_logit"]
        torch.testing.assert_close(a, b)
        extended.gate.profile[2].weight.fill_(1.0)  # once trained, the profile moves it
        c = extended(x, dct, qt, has_jpeg)["gate_logit"]
    assert not torch.allclose(a, c)


def test_a_dct_reference_gate_is_labelled_against_the_dct_only_head():
    torch.manual_seed(0)
    cfg = _tiny_recipe_config()["model"]
    cfg["gate_reference"] = "dct"
    model = OmniIML(cfg).train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 8:40, 8:40] = 1
    out = model(x, torch.randint(0, 20, (2, 64, 64)), torch.full((2, 8, 8), 5),
                torch.tensor([True, True]), mask_target=target)
    small = torch.nn.functional.adaptive_avg_pool2d(target, out["coarse_rgb"].shape[-2:])
    assert out["coarse_dct"] is not None
    assert torch.equal(out["gate_label"],
                       gate_labels(out["coarse_rgb"], out["coarse_dct"], small))
    config = _tiny_recipe_config()
    config["model"] = cfg
    batch = {"image": x, "dct": torch.randint(0, 20, (2, 64, 64)),
             "qtable": torch.full((2, 8, 8), 5), "has_jpeg": torch.tensor([True, False]),
             "mask": target, "boxes": [torch.zeros(0, 4), torch.zeros(0, 4)]}
    _, logs = training_recipe().loss(model, batch, config)
    assert "coarse_dct" in logs
    with pytest.raises(ValueError, match="gate_reference"):
        OmniIML({**cfg, "gate_reference": "depth"})


def test_self_correlation_starts_as_the_model_without_it():
    torch.manual_seed(0)
    plain = OmniIML(_tiny_recipe_config()["model"]).eval()
    cfg = _tiny_recipe_config()["model"]
    cfg["self_correlation"] = {"dim": 16, "k": 4, "exclude": 1}
    extended = OmniIML(cfg).eval()
    missing, unexpected = extended.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    assert all(k.startswith("self_correlation.") for k in missing)
    x = torch.randn(1, 3, 96, 128)
    dct = torch.randint(0, 20, (1, 96, 128))
    qt = torch.full((1, 8, 8), 5)
    has_jpeg = torch.tensor([True])
    with torch.no_grad():
        a = plain(x, dct, qt, has_jpeg)["mask"]
        torch.testing.assert_close(extended(x, dct, qt, has_jpeg)["mask"], a)
        extended.self_correlation.head[-1].weight.fill_(0.1)  # once trained, it moves the mask
        assert not torch.allclose(extended(x, dct, qt, has_jpeg)["mask"], a)


@pytest.mark.parametrize("variant", [{"gate_grid_profile": True}, {"gate_reference": "dct"},
                                     {"self_correlation": {"dim": 16, "k": 4, "exclude": 1}}])
def test_backend_runs_weights_of_the_network_variants(tmp_path, variant):
    path = _write_weights(tmp_path, **variant)
    backend = OmniBackend(weights=path)
    res = backend.localize(image_from_array(natural_image(96, 128, seed=7), jpeg_quality=90))
    assert 0.0 <= res.facts["gate_probability"] <= 1.0


def test_images_without_jpeg_data_take_the_rgb_route():
    torch.manual_seed(0)
    model = OmniIML(_tiny_recipe_config()["model"]).eval()
    x = torch.randn(2, 3, 64, 64)
    dct = torch.randint(0, 20, (2, 64, 64))
    qt = torch.full((2, 8, 8), 5)
    with torch.no_grad():
        out = model(x, dct, qt, torch.tensor([True, False]), use_rgb=torch.tensor([False, False]))
        assert out["use_rgb"].tolist() == [False, True]
        assert out["mask"].shape == (2, 1, 64, 64)
        none = model(x, dct, qt, torch.tensor([False, False]))
    assert none["gate_logit"] is None and none["coarse_fused"] is None
    assert none["use_rgb"].tolist() == [True, True]


def test_a_fixed_route_gives_the_same_mask_as_the_gate_choosing_it():
    torch.manual_seed(0)
    model = OmniIML(_tiny_recipe_config()["model"]).eval()
    x = torch.randn(2, 3, 64, 64)
    dct = torch.randint(0, 20, (2, 64, 64))
    qt = torch.full((2, 8, 8), 5)
    has_jpeg = torch.tensor([True, True])
    with torch.no_grad():
        free = model(x, dct, qt, has_jpeg)
        for route in ([True, True], [False, False], [True, False]):
            fixed = model(x, dct, qt, has_jpeg, use_rgb=torch.tensor(route))
            assert fixed["gate_logit"] is None and fixed["use_rgb"].tolist() == route
            for i, r in enumerate(route):
                if r == bool(free["use_rgb"][i]):
                    torch.testing.assert_close(fixed["mask"][i], free["mask"][i])


def test_training_route_follows_the_gate_label():
    torch.manual_seed(0)
    model = OmniIML(_tiny_recipe_config()["model"]).train()
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 8:40, 8:40] = 1
    out = model(x, torch.randint(0, 20, (2, 64, 64)), torch.full((2, 8, 8), 5),
                torch.tensor([True, True]), mask_target=target)
    assert out["gate_label"] is not None
    assert torch.equal(out["use_rgb"], out["gate_label"])


def test_a_known_rgb_label_overrides_the_iou_rule_in_training_only():
    torch.manual_seed(0)
    model = OmniIML(_tiny_recipe_config()["model"]).train()
    x = torch.randn(2, 3, 64, 64)
    dct, qtable = torch.randint(0, 20, (2, 64, 64)), torch.full((2, 8, 8), 5)
    target = torch.zeros(2, 1, 64, 64)
    target[:, :, 8:40, 8:40] = 1
    jpeg = torch.tensor([True, True])
    plain = model(x, dct, qtable, jpeg, mask_target=target)
    known = torch.tensor([True, False])
    out = model(x, dct, qtable, jpeg, mask_target=target, rgb_known_better=known)
    assert torch.equal(out["gate_label"], plain["gate_label"] | known)
    assert bool(out["use_rgb"][0])
    model.eval()
    with torch.no_grad():  # at inference the classifier decides, whatever the caller knows
        free = model(x, dct, qtable, jpeg)
    assert free["gate_label"] is None
    assert torch.equal(free["use_rgb"], free["gate_logit"] >= 0)


def test_history_gate_label_marks_reshared_files_only():
    recipe = training_recipe()
    config = {**_tiny_recipe_config(crop=64), "gate_label": "iou+history"}
    shared = _sample()
    shared.history = [{"op": "jpeg", "quality": 90}, {"op": "offset_crop", "dy": 3, "dx": 5,
                                                      "stage": "reshare"},
                      {"op": "jpeg", "quality": 80}]
    kept = _sample()
    kept.history = [{"op": "jpeg", "quality": 90}]
    rng = np.random.default_rng(0)
    assert recipe.prepare(shared, config, rng)["rgb_known_better"].item() is True
    assert recipe.prepare(kept, config, rng)["rgb_known_better"].item() is False
    paper_rule = _tiny_recipe_config(crop=64)
    assert paper_rule["gate_label"] == "iou"
    assert recipe.prepare(shared, paper_rule, rng)["rgb_known_better"].item() is False
    with pytest.raises(UsageError, match="gate_label"):
        recipe.prepare(kept, {**config, "gate_label": "history"}, rng)


def test_configs_are_data_and_paper_config_builds():
    assert set(OMNI_CONFIGS) >= {"tiny", "paper"}
    json.dumps(OMNI_CONFIGS)
    paper = omni_config("paper")
    assert paper["encoder"] == "convnext_base" and paper["input_size"] == 512
    with pytest.raises(ValueError, match="unknown omni config"):
        omni_config("huge")


# ------------------------------------------------------------------ recipe


def _sample(height=150, width=200, quality: int | None = 85, seed=0) -> SynthSample:
    rgb = natural_image(height, width, seed=seed)
    image = image_from_array(rgb, jpeg_quality=quality)
    mask = np.zeros((height, width), np.uint8)
    mask[30:70, 50:110] = 1
    mask[120:130, 10:20] = 1
    boxes = np.array([[50, 30, 110, 70], [10, 120, 20, 130]], np.float32)
    data = b"" if quality is None else b"jpeg"
    return SynthSample(image=image, file_bytes=data, file_ext=".jpg" if quality else ".png",
                       mask=mask, boxes=boxes, kind="splice")


def test_prepare_crops_on_the_jpeg_grid_and_flips_whole_blocks():
    recipe = training_recipe()
    config = _tiny_recipe_config(crop=64)
    sample = _sample()
    idx_full = coefficient_indices(sample.image.jpeg.y_coefficients(150, 200))
    from forgectl.nets.encoders import encoder_entry

    entry = encoder_entry(config["model"]["encoder"])
    for seed in range(6):
        for flip in (0.0, 1.0):
            config["flip_prob"] = flip
            item = recipe.prepare(sample, config, np.random.default_rng(seed))
            img = item["image"].numpy()
            rgb = np.round((img * np.asarray(entry.std)[:, None, None]
                            + np.asarray(entry.mean)[:, None, None]) * 255).astype(np.uint8)
            rgb = rgb.transpose(1, 2, 0)
            if flip:
                rgb = rgb[::-1, ::-1]
            found = [(y, x) for y in range(0, 150 - 63, 8) for x in range(0, 200 - 63, 8)
                     if np.array_equal(sample.image.rgb[y:y + 64, x:x + 64], rgb)]
            assert found, "crop is not on the 8x8 grid"
            y0, x0 = found[0]
            expected = idx_full[y0:y0 + 64, x0:x0 + 64]
            if flip:
                expected = flip_blocks(flip_blocks(expected, 0), 1)
            np.testing.assert_array_equal(item["dct"].numpy(), expected)
            assert item["has_jpeg"].item() is True
            np.testing.assert_array_equal(item["qtable"].numpy(), sample.image.jpeg.y_quant)
            m = item["mask"].numpy()[0] > 0
            covered = np.zeros_like(m)
            for bx0, by0, bx1, by1 in item["boxes"].numpy().astype(int):
                sub = m[by0:by1, bx0:bx1]  # tight: every side touches the mask
                assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
                covered[by0:by1, bx0:bx1] = True
            assert not (m & ~covered).any(), "a manipulated pixel outside every box"
            assert (len(item["boxes"]) > 0) == bool(m.any())


def test_prepare_pads_small_images_and_flags_non_jpeg():
    recipe = training_recipe()
    config = _tiny_recipe_config(crop=64)
    item = recipe.prepare(_sample(40, 50, quality=None), config, np.random.default_rng(0))
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
    assert item["has_jpeg"].item() is False
    assert int(item["dct"].abs().sum()) == 0
    with pytest.raises(UsageError, match="multiple of 32"):
        recipe.prepare(_sample(), {**config, "crop": 60}, np.random.default_rng(0))


def test_crop_boxes_are_tightened_and_dropped_outside():
    mask = np.zeros((32, 32), np.uint8)
    mask[4:10, 20:32] = 1  # the visible part of a component cut by the crop's right edge
    boxes = np.array([[40, 10, 60, 20], [100, 100, 120, 120], [0, 0, 1, 1]], np.float32)
    out = _crop_boxes(boxes, x0=16, y0=8, mask=mask)
    # first box maps to x 24..44 -> clipped to 24..32, y 2..12; tightened to mask pixels
    assert out.tolist() == [[24.0, 4.0, 32.0, 10.0]]


def test_loss_and_predict():
    recipe = training_recipe()
    config = _tiny_recipe_config(crop=64)
    items = [recipe.prepare(_sample(seed=i, quality=q), config, np.random.default_rng(i))
             for i, q in enumerate([85, None, 70])]
    batch = recipe.collate(items)
    assert isinstance(batch["boxes"], list) and batch["image"].shape == (3, 3, 64, 64)
    torch.manual_seed(0)
    model = recipe.build_model(config)
    model.train()
    loss, logs = recipe.loss(model, batch, config)
    assert {"bce", "dice", "decoder_coarse", "coarse_rgb", "coarse_fused", "gate",
            "det_objectness", "det_box", "loss"} <= set(logs)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["box_head.objectness.weight"] is not None
    assert grads["gate.fc.weight"] is not None
    probs = recipe.predict(model, batch)
    assert probs.shape == (3, 1, 64, 64) and model.training  # mode restored
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
    model.eval()
    with torch.no_grad():
        _, eval_logs = recipe.loss(model, batch, config)
    assert not any(k.startswith("det_") for k in eval_logs)  # no box branch at evaluation


def test_recipe_configs_hold_training_settings():
    recipe = training_recipe()
    tiny = recipe.configs["tiny"]
    assert tiny["crop"] % 32 == 0 and tiny["batch_size"] >= 1 and tiny["steps"] > 0
    assert tiny["model"]["encoder"] == "efficientnet_lite0"
    json.dumps(recipe.configs)


# ------------------------------------------------------------------ backend


class TestOmniContract(BackendContract):
    method = "omni"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, tmp_path_factory):
        return OmniBackend(weights=_write_weights(tmp_path_factory.mktemp("omni-contract")))


def test_backend_facts_for_jpeg_and_png(weights_path):
    backend = OmniBackend(weights=weights_path)
    rgb = natural_image(96, 128, seed=7)
    res = backend.localize(image_from_array(rgb, jpeg_quality=90))
    assert res.facts["frequency_stream"] == "used"
    assert res.facts["modality"] in ("rgb", "fused")
    p = res.facts["gate_probability"]
    assert 0.0 <= p <= 1.0 and (res.facts["modality"] == "rgb") == (p >= 0.5)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    png = backend.localize(image_from_bytes(buf.getvalue(), "x.png"))
    assert png.facts["modality"] == "rgb" and png.facts["gate_probability"] is None
    assert png.facts["frequency_stream"] == "not applicable: PNG"
    assert png.applicable and "PNG" in png.note
    assert "RGB stream only" in backend.reading(png)


def test_backend_tiles_large_images(weights_path):
    backend = OmniBackend(weights=weights_path, tile=64, overlap=16)
    image = image_from_array(natural_image(150, 200, seed=8), jpeg_quality=80)
    res = backend.localize(image)
    check_result(backend, image)
    assert res.facts["tiles"] > 1 and res.facts["tile_size"] == 64
    assert 0.0 <= res.facts["gate_probability"] <= 1.0
    with pytest.raises(UsageError):
        OmniBackend(weights=weights_path, tile=100)
    with pytest.raises(UsageError):
        OmniBackend(weights=weights_path, tile=64, overlap=36)


def test_backend_rejects_weights_that_do_not_match_the_card(tmp_path):
    path = _write_weights(tmp_path, drop="decoder.")
    with pytest.raises(WeightsError, match="does not match"):
        OmniBackend(weights=path).localize(image_from_array(natural_image(64, 64)))
    path.with_suffix(".json").unlink()
    with pytest.raises(WeightsError, match="model card"):
        OmniBackend(weights=path).localize(image_from_array(natural_image(64, 64)))


def test_backend_loads_weights_without_the_training_only_box_branch(tmp_path):
    path = _write_weights(tmp_path, with_box_head=False)
    res = OmniBackend(weights=path).localize(image_from_array(natural_image(64, 64),
                                                              jpeg_quality=90))
    assert res.heatmap.shape == (64, 64)


def test_flip_averages_the_mirrored_pass_over_whole_blocks(weights_path):
    plain = OmniBackend(weights=weights_path, runtime="torch", flip=False)
    flipped = OmniBackend(weights=weights_path, runtime="torch", flip=True)
    rgb = natural_image(72, 100, seed=4)  # 100 = 12 whole blocks + 4 columns
    image = image_from_array(rgb)  # pixels only: no coefficient plane to mirror
    base = plain.analyze(image).heatmap
    mirrored = plain.analyze(image_from_array(np.ascontiguousarray(rgb[:, :96][:, ::-1])))
    got = flipped.analyze(image)
    assert got.facts["flip"] is True and got.heatmap.shape == base.shape
    expected = (base[:, :96] + mirrored.heatmap[:, ::-1]) / 2
    np.testing.assert_allclose(got.heatmap[:, :96], expected, atol=1e-6)
    np.testing.assert_array_equal(got.heatmap[:, 96:], base[:, 96:])  # partial block: one pass
    # A JPEG: the mirrored pass reads the mirrored coefficient plane, on the same grid.
    jpeg = image_from_bytes(encode_jpeg(rgb, 85), name="x.jpg")
    heat = flipped.analyze(jpeg).heatmap
    assert heat.shape == (72, 100) and np.isfinite(heat).all()
    assert not np.array_equal(heat, plain.analyze(jpeg).heatmap)
