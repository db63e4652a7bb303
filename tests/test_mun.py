"""MUN and its Noiseprint-style extractor: shapes, MMQ padding, ablations, frozen extractor,
both recipes on fake samples, contrastive learning on a fixed batch, ONNX parity.

Everything runs on small synthetic inputs with random weights (no shipped weights, no corpus).
"""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgectl.errors import WeightsError
from forgectl.intake import image_from_array
from forgectl.nets.mun import (
    MUN,
    MultiModalQuery,
    MUNTrainingModel,
    NoiseProjection,
    count_parameters,
    mun_config,
    spatial_matmul,
)
from forgectl.nets.noiseprint import (
    NoiseprintNet,
    extract_tiled,
    noiseprint_config,
    noiseprint_heatmap,
    rgb_input,
)
from forgectl.recipes.mun import MunRecipe
from forgectl.recipes.noiseprint import NoiseprintRecipe, dbl_loss, plan_histories
from forgectl.training.recipe import SynthSample
from tests.contract import BackendContract
from tests.helpers import natural_image, write_random_weights

torch.set_num_threads(1)


def _sample(height: int = 112, width: int = 144, seed: int = 0) -> SynthSample:
    """A fake splice: a noisier, re-quantized rectangle in a JPEG photo."""
    rgb = natural_image(height, width, seed).astype(np.float32)
    mask = np.zeros((height, width), np.uint8)
    mask[30:70, 40:90] = 1
    rgb[30:70, 40:90] = np.round(rgb[30:70, 40:90] / 6) * 6 + np.random.default_rng(seed).normal(
        0, 6, (40, 50, 3))
    image = image_from_array(np.clip(rgb, 0, 255).astype(np.uint8), jpeg_quality=85)
    return SynthSample(image=image, file_bytes=b"", file_ext=".jpg", mask=mask,
                       boxes=np.array([[40, 30, 90, 70]], np.float32), kind="splice")


def _tiny(name: str = "tiny") -> dict:
    cfg = mun_config(name)
    cfg["pretrained"] = False  # tests need no ImageNet weights
    return cfg


@pytest.fixture(scope="module")
def tiny_mun() -> MUN:
    torch.manual_seed(0)
    return MUN(_tiny(), pretrained=False).eval()


# ------------------------------------------------------------------ noise extractor


def test_noiseprint_configs_and_shapes() -> None:
    paper = NoiseprintNet(noiseprint_config("paper"))
    convs = [m for m in paper.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in paper.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 17 and len(bns) == 15
    assert convs[0].in_channels == 3 and convs[-1].out_channels == 1
    assert all(c.stride == (1, 1) and c.kernel_size == (3, 3) for c in convs)
    assert {c.out_channels for c in convs[:-1]} == {64}
    tiny = NoiseprintNet(noiseprint_config("tiny")).eval()
    assert count_parameters(tiny) < count_parameters(paper) / 10
    with torch.no_grad():
        out = tiny(torch.rand(2, 3, 37, 53))  # any size, no multiple needed
    assert out.shape == (2, 1, 37, 53)
    with pytest.raises(ValueError, match="unknown noiseprint config"):
        noiseprint_config("huge")


def test_tiled_extraction_equals_one_full_pass() -> None:
    torch.manual_seed(1)
    net = NoiseprintNet(noiseprint_config("tiny")).eval()
    x = torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        full = net(x)
    torch.testing.assert_close(extract_tiled(net, x, tile=32), full, atol=1e-5, rtol=1e-5)


def test_highpass_extractor_is_the_grey_residual_and_tiles_exactly() -> None:
    import cv2

    net = NoiseprintNet(noiseprint_config("highpass")).eval()
    assert count_parameters(net) == 0 and net.margin == 1
    rgb = natural_image(50, 66, seed=2)
    x = rgb_input(rgb)
    with torch.no_grad():
        out = net(x)[0, 0].numpy()
    grey = (rgb.astype(np.float64) / 256) @ np.array([0.299, 0.587, 0.114])
    expected = grey - cv2.blur(grey, (3, 3), borderType=cv2.BORDER_REPLICATE)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    torch.testing.assert_close(extract_tiled(net, x, tile=16), net(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="depth"):
        NoiseprintNet({**noiseprint_config("tiny"), "depth": 0})


def test_residual_extractor_starts_at_the_scaled_highpass_and_learns_a_correction() -> None:
    base = NoiseprintNet(noiseprint_config("highpass")).eval()
    net = NoiseprintNet(noiseprint_config("tiny-residual"))
    x = rgb_input(natural_image(48, 56, seed=3))
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), 64.0 * base(x), atol=1e-5, rtol=0)
    # The correction is trainable from its zero start (gradients reach the first layer too
    # once the last one has moved), and the tiled extraction stays exact with it.
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (net(x) - 1.0).pow(2).mean().backward()
        opt.step()
    assert float(net.layers[0].weight.grad.abs().sum()) > 0
    net.eval()
    with torch.no_grad():
        assert float((net(x) - 64.0 * base(x)).abs().max()) > 1e-3
        torch.testing.assert_close(extract_tiled(net, x, tile=24), net(x), atol=1e-5, rtol=0)


def test_heatmap_is_a_probability_map_that_finds_a_different_region() -> None:
    residual = torch.randn(1, 1, 96, 96) * 0.1
    residual[..., 32:64, 32:64] *= 10  # a region with another noise level
    heat = noiseprint_heatmap(residual, window=16)
    assert heat.shape == (1, 1, 96, 96)
    assert float(heat.min()) >= 0 and float(heat.max()) < 1
    assert float(heat[..., 40:56, 40:56].mean()) > 0.9 > 0.2 > float(heat[..., :16, :16].mean())


# ------------------------------------------------------------------ MUN


def test_spatial_matmul_pads_never_warps() -> None:
    q, v = torch.randn(2, 1, 6, 6), torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(spatial_matmul(q, v), torch.matmul(q, v))  # square: official
    for h, w in ((4, 7), (7, 4)):
        q, v = torch.randn(1, 1, h, w), torch.randn(1, 3, h, w)
        s = max(h, w)  # reference: zero-pad both to a square, multiply, crop back
        ref = torch.matmul(F.pad(q, (0, s - w, 0, s - h)), F.pad(v, (0, s - w, 0, s - h)))
        out = spatial_matmul(q, v)
        assert out.shape == (1, 3, h, w)
        torch.testing.assert_close(out, ref[..., :h, :w])


def test_mun_shapes_on_non_square_inputs(tiny_mun: MUN) -> None:
    with torch.no_grad():
        out = tiny_mun(torch.randn(2, 3, 64, 96), torch.randn(2, 1, 64, 96))
        tall = tiny_mun(torch.randn(1, 3, 128, 64), torch.randn(1, 1, 128, 64))
    assert out["mask"].shape == (2, 1, 64, 96)
    assert out["class_logits"].shape == (2, 2, 16, 24)
    assert tall["mask"].shape == (1, 1, 128, 64)
    # The forged logit is l_forged - l_pristine: sigmoid of it is the 2-class softmax.
    up = F.interpolate(out["class_logits"], size=(64, 96), mode="bilinear", align_corners=False)
    torch.testing.assert_close(torch.sigmoid(out["mask"]), torch.softmax(up, 1)[:, 1:2])


def test_convnext_config_runs_both_streams_from_scratch() -> None:
    cfg = _tiny("tiny-convnext")
    assert cfg["rgb_encoder"] == cfg["noise_encoder"] == "convnextv2_atto"
    assert not mun_config("tiny-convnext")["pretrained"]
    torch.manual_seed(0)
    with torch.no_grad():
        out = MUN(cfg, pretrained=False).eval()(torch.randn(1, 3, 64, 96),
                                                 torch.randn(1, 1, 64, 96))
    assert out["mask"].shape == (1, 1, 64, 96)
    paper = mun_config("paper")
    assert paper["rgb_encoder"] == paper["noise_encoder"] == "convnextv2_base"
    assert paper["mmq_kernels"] == [1, 5, 11, 15] and paper["decoder"]["channels"] == 128


def test_mmq_ablation_changes_the_fusion_only(tiny_mun: MUN) -> None:
    torch.manual_seed(0)
    plain = MUN(_tiny("tiny-no-mmq"), pretrained=False).eval()
    assert all(isinstance(f, MultiModalQuery) for f in tiny_mun.fusions)
    assert all(isinstance(f, NoiseProjection) for f in plain.fusions)
    assert [f.out_channels for f in plain.fusions] == [f.out_channels for f in tiny_mun.fusions]
    assert count_parameters(plain) < count_parameters(tiny_mun)
    with torch.no_grad():
        assert plain(torch.randn(1, 3, 64, 64), torch.randn(1, 1, 64, 64))["mask"].shape == (
            1, 1, 64, 64)


def test_self_correlation_starts_as_the_model_without_it(tiny_mun: MUN) -> None:
    cfg = _tiny()
    cfg["self_correlation"] = {"dim": 16, "k": 4, "exclude": 1}
    extended = MUN(cfg, pretrained=False).eval()
    missing, unexpected = extended.load_state_dict(tiny_mun.state_dict(), strict=False)
    assert not unexpected and missing
    assert all(k.startswith("self_correlation.") for k in missing)
    image, noise = torch.randn(1, 3, 64, 96), torch.randn(1, 1, 64, 96)
    with torch.no_grad():
        before = tiny_mun(image, noise)["mask"]
        torch.testing.assert_close(extended(image, noise)["mask"], before)
        extended.self_correlation.head[-1].weight.fill_(0.1)  # once trained, it moves the mask
        assert not torch.allclose(extended(image, noise)["mask"], before)


def test_frozen_extractor_loads_weights_and_never_trains(tmp_path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    source = NoiseprintNet(noiseprint_config("tiny")).eval()
    path = tmp_path / "np.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    cfg = {**_tiny(), "noiseprint_weights": str(path)}
    model = MUNTrainingModel(cfg, pretrained=False).train()
    assert count_parameters(model.noiseprint, trainable_only=True) == 0
    assert count_parameters(model, trainable_only=True) == count_parameters(model.mun)
    assert not model.noiseprint.training  # BatchNorm keeps its running statistics
    rgb256 = torch.rand(2, 3, 64, 64)
    out = model(torch.randn(2, 3, 64, 64), rgb256)
    with torch.no_grad():
        torch.testing.assert_close(out["noiseprint"], source(rgb256))
    out["mask"].mean().backward()
    assert all(p.grad is None for p in model.noiseprint.parameters())
    with pytest.raises(WeightsError, match="not found"):
        MUNTrainingModel({**cfg, "noiseprint_weights": str(tmp_path / "missing.safetensors")},
                         pretrained=False)
    # Without weights: a random extractor, still frozen (tests, smoke runs).
    random = MUNTrainingModel({**cfg, "noiseprint_weights": None}, pretrained=False)
    assert count_parameters(random.noiseprint, trainable_only=True) == 0


def test_onnx_export_with_dynamic_size_matches_torch(tiny_mun: MUN) -> None:
    ort = pytest.importorskip("onnxruntime")

    class Graph(torch.nn.Module):
        def __init__(self, net: MUN) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor, noiseprint: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(image, noiseprint)["mask"])

    graph = Graph(tiny_mun).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (torch.randn(1, 3, 64, 96), torch.randn(1, 1, 64, 96)), buf,
                          dynamo=False, opset_version=17, input_names=["image", "noiseprint"],
                          output_names=["mask"],
                          dynamic_axes={"image": {2: "height", 3: "width"},
                                        "noiseprint": {2: "height", 3: "width"},
                                        "mask": {2: "height", 3: "width"}})
    graph.eval()  # the exporter restores the mode the module had; keep the reference in eval
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for h, w in ((96, 64), (64, 64)):  # neither is the trace size
        image, noise = torch.randn(1, 3, h, w), torch.randn(1, 1, h, w)
        with torch.no_grad():
            ref = graph(image, noise).numpy()
        got = session.run(None, {"image": image.numpy(), "noiseprint": noise.numpy()})[0]
        assert got.shape == (1, 1, h, w)
        assert float(np.abs(got - ref).max()) < 1e-4


# ------------------------------------------------------------------ MUN recipe


def _mun_recipe_config(name: str = "tiny") -> dict:
    config = copy.deepcopy(MunRecipe().configs[name])
    config["model"]["pretrained"] = False
    config["model"]["noiseprint_weights"] = None
    config["crop"] = 64
    return config


def test_mun_recipe_prepare_loss_predict() -> None:
    recipe = MunRecipe()
    assert set(recipe.configs) >= {"tiny", "tiny-convnext", "paper", "tiny-no-mmq",
                                   "tiny-no-ioudce", "tiny-no-dna"}
    config = _mun_recipe_config()
    sample = _sample()
    a = recipe.prepare(sample, config, np.random.default_rng(5))
    b = recipe.prepare(sample, config, np.random.default_rng(5))
    assert a.keys() == {"image", "rgb256", "mask"}
    for key in a:
        torch.testing.assert_close(a[key], b[key])  # deterministic given the rng
    assert a["image"].shape == a["rgb256"].shape == (3, 64, 64) and a["mask"].shape == (1, 64, 64)
    assert float(a["rgb256"].max()) < 1.0

    # Without flips and DNA the crop is an unresized window of the image on the 8x8 grid.
    plain = {**config, "flip_prob": 0.0, "dna_prob": 0.0, "focus_prob": 1.0}
    item = recipe.prepare(sample, plain, np.random.default_rng(2))
    rgb = sample.image.rgb.astype(np.float32) / 256
    crop = item["rgb256"].numpy().transpose(1, 2, 0)
    hits = [(y, x) for y in range(0, 112 - 64 + 1, 8) for x in range(0, 144 - 64 + 1, 8)
            if np.array_equal(rgb[y:y + 64, x:x + 64], crop)]
    assert hits and item["mask"].sum() > 0
    # The RGB view is the same pixels normalized for the encoder (no DNA here).
    torch.testing.assert_close(item["image"], item["rgb256"] * 256 / 255 / 0.5 - 1.0)
    with_dna = recipe.prepare(sample, {**plain, "dna_prob": 1.0}, np.random.default_rng(2))
    diff = (with_dna["image"] - item["image"]) * 0.5 * 255  # grey levels
    assert 0 < float(diff[0].max()) <= 255 * 0.026 + 1e-3  # red: up to 6.6 grey levels

    torch.manual_seed(0)
    model = recipe.build_model(config)
    batch = recipe.collate([a, recipe.prepare(_sample(seed=1), config, np.random.default_rng(1))])
    loss, logs = recipe.loss(model, batch, config)
    assert torch.isfinite(loss) and "ioudce" in logs
    loss.backward()
    prob = recipe.predict(model, batch)
    assert prob.shape == (2, 1, 64, 64) and 0 <= float(prob.min()) <= float(prob.max()) <= 1
    assert model.training  # predict restores the mode

    ce = _mun_recipe_config("tiny-no-ioudce")
    _, logs = recipe.loss(model, batch, ce)
    assert set(logs) == {"bce", "loss"}
    assert _mun_recipe_config("tiny-no-dna")["dna_prob"] == 0.0


# ------------------------------------------------------------------ noiseprint recipe


def _np_recipe_config() -> dict:
    config = copy.deepcopy(NoiseprintRecipe().configs["tiny"])
    config.update({"region": 96, "histories": 3, "patches": 3, "patch": 24, "margin": 4,
                   "crop": 64, "lr": 3e-3})
    return config


def test_histories_differ_and_prepare_is_deterministic() -> None:
    config = _np_recipe_config()
    histories = plan_histories(np.random.default_rng(0), 6, config["history"])
    assert len({str(h) for h in histories}) == 6
    assert all(h[-1]["op"] in ("jpeg", "png") for h in histories)
    recipe = NoiseprintRecipe()
    sample = _sample()
    a = recipe.prepare(sample, config, np.random.default_rng(4))
    b = recipe.prepare(sample, config, np.random.default_rng(4))
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    assert a["patches"].shape == (9, 3, 32, 32)
    assert a["group"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert a["image"].shape == (3, 64, 64) and a["mask"].shape == (1, 64, 64)


def test_dbl_loss_rewards_grouped_outputs() -> None:
    groups = torch.tensor([0, 0, 1, 1])
    base = torch.randn(2, 1, 8, 8)
    grouped = torch.cat([base[:1], base[:1], base[1:], base[1:]]) * 3
    loss_good, logs = dbl_loss(grouped, groups)
    loss_bad, _ = dbl_loss(grouped[[0, 2, 1, 3]], groups)
    assert float(loss_good) < float(loss_bad) and logs["nn_acc"] == 1.0


def test_noiseprint_training_lowers_the_contrastive_loss_on_a_fixed_batch() -> None:
    recipe = NoiseprintRecipe()
    config = _np_recipe_config()
    batch = recipe.collate([recipe.prepare(_sample(seed=s), config, np.random.default_rng(s))
                            for s in range(2)])
    torch.manual_seed(0)
    model = recipe.build_model(config)
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    # Compared in train mode (batch statistics): the running statistics of a fresh DnCNN
    # need a few hundred steps to catch up with its small initial activations.
    with torch.no_grad():
        before, _ = recipe.loss(model, batch, config)
    for _ in range(25):
        loss, logs = recipe.loss(model, batch, config)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert {"dbl", "pos_dist", "neg_dist", "nn_acc"} <= set(logs)
    with torch.no_grad():
        after, _ = recipe.loss(model, batch, config)
    assert float(after) < float(before) - 0.5
    heat = recipe.predict(model, batch)
    assert heat.shape == (2, 1, 64, 64) and 0 <= float(heat.min()) <= float(heat.max()) < 1


def test_warm_start_keeps_the_extractor_the_config_names(tmp_path) -> None:
    """A ``--init`` file's copy of the frozen extractor is not loaded (the recipe's
    ``init_skip_prefixes``): the model keeps the extractor its config names, e.g. a retrained
    one, while every MUN tensor comes from the file."""
    from safetensors.torch import save_file

    from forgectl.weights import load_checked_state, write_tensors

    recipe = MunRecipe()
    config = _mun_recipe_config()
    torch.manual_seed(0)
    shipped = recipe.build_model(config)  # a MUN file with its (random) extractor copy
    init = tmp_path / "mun-tiny.safetensors"
    write_tensors(init, {k: v.contiguous() for k, v in shipped.state_dict().items()})

    torch.manual_seed(7)
    retrained = NoiseprintNet(noiseprint_config("tiny")).eval()
    path = tmp_path / "np2.safetensors"
    save_file({k: v.contiguous() for k, v in retrained.state_dict().items()}, str(path))
    torch.manual_seed(5)
    model = recipe.build_model({**config, "noiseprint_weights": str(path)})
    load_checked_state(model, init, skip_prefixes=recipe.init_skip_prefixes)
    rgb256 = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model.noiseprint(rgb256), retrained(rgb256))
    for key, value in shipped.mun.state_dict().items():
        torch.testing.assert_close(model.mun.state_dict()[key], value)
    assert count_parameters(model.noiseprint, trainable_only=True) == 0  # still frozen


# ------------------------------------------------------------------ backend


@pytest.fixture(scope="module")
def mun_weights(tmp_path_factory):
    """A random-init tiny MUN (with its extractor) saved as a shipped file would be."""
    from forgectl.nets.mun import MUNTrainingModel, mun_config

    torch.manual_seed(0)
    config = mun_config("tiny")
    config.update(pretrained=False, noiseprint_weights=None)
    model = MUNTrainingModel(config, pretrained=False)
    folder = tmp_path_factory.mktemp("mun-weights")
    return write_random_weights(model, folder / "mun-tiny.safetensors", "mun",
                                {"model": config})


class TestMunContract(BackendContract):
    method = "mun"

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, mun_weights):
        from forgectl.backends.mun import MunBackend

        return MunBackend(weights=mun_weights, tile=96, overlap=16)


def test_mun_noiseprint_is_extracted_on_the_full_image_before_tiling(mun_weights):
    """The deployment order: one full-resolution extraction, then tiles of it (a tile-wise
    extraction would differ at tile borders)."""
    from forgectl.backends.mun import MunBackend

    backend = MunBackend(weights=mun_weights, tile=64, overlap=16)
    image = image_from_array(natural_image(100, 140, seed=3), jpeg_quality=90)
    seen = []
    calls = []
    original = backend.noiseprint

    def spy(rgb):
        calls.append(rgb.shape)
        out = original(rgb)
        seen.append(out)
        return out

    backend.noiseprint = spy
    fed = []
    run = backend.tile_runner()
    with backend.running(lambda feeds: fed.append(feeds["noiseprint"]) or run(feeds)):
        result = backend.localize(image)
    assert calls == [(100, 140, 3)]  # once, on the whole image
    assert len(fed) == result.facts["tiles"] > 1
    full = seen[0]
    first = fed[0][0, 0]
    np.testing.assert_array_equal(first, full[: first.shape[0], : first.shape[1]])
    assert result.maps["noiseprint"].shape == (100, 140)


def test_backend_runs_the_extractor_its_card_names(tmp_path, monkeypatch):
    """A candidate MUN trained on another extractor (``noiseprint_weights`` naming a file) is
    run with that extractor, not with the one in the weights folder of the same name; a card
    naming an extractor the MUN was not trained with is refused in one line."""
    from forgectl.backends.mun import MunBackend

    torch.manual_seed(11)
    other = NoiseprintNet(noiseprint_config("tiny")).eval()
    extractor = write_random_weights(other, tmp_path / "runs" / "noiseprint-tiny.safetensors",
                                     "noiseprint", {"model": noiseprint_config("tiny")})
    config = {**mun_config("tiny"), "pretrained": False, "noiseprint_weights": None}
    model = MUNTrainingModel(config, pretrained=False)
    model.noiseprint.load_state_dict(other.state_dict())  # trained with `other`
    candidate = write_random_weights(model, tmp_path / "mun-tiny.safetensors", "mun",
                                     {"model": config, "noiseprint_weights": str(extractor)})
    shipped_name = tmp_path / "weights" / "noiseprint-tiny.safetensors"
    write_random_weights(NoiseprintNet(noiseprint_config("tiny")).eval(), shipped_name,
                         "noiseprint", {"model": noiseprint_config("tiny")})
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(shipped_name.parent))
    backend = MunBackend(weights=candidate, runtime="torch")
    assert backend.noiseprint_files()[0] == extractor
    rgb = natural_image(40, 48, seed=1)
    with torch.no_grad():
        expected = other(rgb_input(rgb))
    np.testing.assert_allclose(backend.noiseprint(rgb), expected[0, 0].numpy(), atol=1e-5)

    # The same MUN with a card naming only the extractor's file name: the weights folder's
    # noiseprint-tiny is another network, refused.
    wrong = write_random_weights(model, tmp_path / "wrong" / "mun-tiny.safetensors", "mun",
                                 {"model": {**config,
                                            "noiseprint_weights": "noiseprint-tiny.safetensors"}})
    with pytest.raises(WeightsError, match="another noise extractor"):
        MunBackend(weights=wrong, runtime="torch").noiseprint(rgb)


def test_mun_is_listed_untrained_and_refused_without_weights():
    from forgectl import registry
    from forgectl.errors import UsageError

    assert registry.entry("mun").status in ("untrained", "ready")
    if registry.entry("mun").status == "untrained":
        with pytest.raises(UsageError, match="not trained yet"):
            registry.load("mun")


def test_highpass_mun_needs_no_extractor_file_and_exports(tmp_path, monkeypatch):
    """``tiny-highpass``: the card names no extractor; the backend runs the fixed residual
    from the MUN file's own (parameter-free) network, on torch and as an exported twin."""
    from forgectl import export as ex
    from forgectl.backends.mun import MunBackend

    torch.manual_seed(0)
    config = {**mun_config("tiny-highpass"), "pretrained": False}
    assert config["noiseprint_weights"] is None
    model = MUNTrainingModel(config, pretrained=False)
    assert not any(k.startswith("noiseprint.") for k in model.state_dict())
    weights = write_random_weights(model, tmp_path / "mun-tiny-highpass.safetensors", "mun",
                                   {"model": config}, config_name="tiny-highpass")
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(tmp_path / "empty"))
    backend = MunBackend(weights=weights, tile=96, overlap=16, runtime="torch")
    rgb = natural_image(40, 48, seed=1)
    expected = model.noiseprint(rgb_input(rgb))
    np.testing.assert_allclose(backend.noiseprint(rgb), expected[0, 0].numpy(), atol=1e-6)
    images = ex.sample_images(((128, 160, 75),))
    report = ex.export_model(backend, "onnx", tmp_path / "mun.onnx", images=images)
    assert report.max_abs_diff <= ex.DEFAULT_TOLERANCE


def test_mun_exports_with_parity(mun_weights, tmp_path):
    from forgectl import export as ex
    from forgectl.backends.mun import MunBackend

    backend = MunBackend(weights=mun_weights, tile=96, overlap=16)
    images = ex.sample_images(((128, 160, 75),))  # tiled: two tiles of 96 per axis
    report = ex.export_model(backend, "onnx", tmp_path / "mun.onnx", images=images)
    assert report.max_abs_diff <= ex.DEFAULT_TOLERANCE
