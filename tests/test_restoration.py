"""ReConWave-Net: disturbance formulas, restoration nets, wavelet U-Net, classical baseline,
PSNR / SSIM, training recipes, the front end and the (unregistered) backend's contract.

Learned parts are tested with randomly initialized tiny models (tiny tensors, one thread);
no trained weights exist yet.
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import pytest
import torch

from forgectl import registry
from forgectl.analysis.disturbance import brightness, clipped_values, contrast
from forgectl.analysis.restoration import (
    BLACK_LEVEL_MAX,
    EXTREME_SPIKE_MIN,
    GAIN_SWITCH_MIN_CORRELATION,
    QUANTILE_LEVELS,
    REFERENCE_QUANTILES,
    classical_restore,
    exact_inverse,
    fit_contrast_gain,
    low_gain_fingerprint,
    refine_decision,
    weak_gain_fingerprint,
)
from forgectl.backends.restorer import Restorer
from forgectl.evaluation import restoration_table as rt
from forgectl.intake import image_from_array
from forgectl.nets.restoration import (
    DISTURBANCE_CLASSES,
    RestorationNet,
    SwinBlock,
    SwinRestorer,
    WindowAttention,
    condition_from_truth,
    global_stats,
    guided_inverse,
    restoration_config,
    stats_dim,
)
from forgectl.nets.wavelet_unet import WaveletUNet, wavelet_unet_config
from forgectl.recipes.reconwave import (
    LocalizerRecipe,
    ReConWaveRecipe,
    RestorationRecipe,
    apply_disturbance,
    draw_disturbance,
    edge_band,
    forensic_bce,
    load_encoder_init,
)
from forgectl.recipes.reconwave import recipe as training_recipe
from forgectl.restore import write_restoration
from forgectl.synth import histories
from forgectl.synth.sample import SynthSample
from tests.contract import BackendContract, check_result
from tests.helpers import natural_image

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Loaded models set FORGECTL_THREADS threads (default 2): keep these tests on one."""
    old = os.environ.get("FORGECTL_THREADS")
    os.environ["FORGECTL_THREADS"] = "1"
    yield
    if old is None:
        os.environ.pop("FORGECTL_THREADS", None)
    else:
        os.environ["FORGECTL_THREADS"] = old
    torch.set_num_threads(1)


# ------------------------------------------------------------------ disturbances


def test_disturbance_formulas_by_hand():
    px = np.array([[[0, 100, 200]]], np.uint8)
    # I' = clip(I + alpha), I in [0, 1]: +0.2 = +51 grey levels, -0.4 = -102.
    assert brightness(px, 0.2).tolist() == [[[51, 151, 251]]]
    assert brightness(px, -0.4).tolist() == [[[0, 0, 98]]]
    # The paper's +-0.5 is +-127.5 grey levels: every result is a rounding tie, so +-1.
    up, down = brightness(px, 0.5).astype(int), brightness(px, -0.5).astype(int)
    assert np.abs(up - [[[127.5, 227.5, 255]]]).max() <= 0.5
    assert np.abs(down - [[[0, 0, 72.5]]]).max() <= 0.5
    # I' = clip(beta * I): 0.7 and 2.0 (the paper's grid).
    assert contrast(px, 0.7).tolist() == [[[0, 70, 140]]]
    assert contrast(px, 2.0).tolist() == [[[0, 200, 255]]]


def test_training_histories_and_recipe_use_the_same_formulas():
    rgb = natural_image(20, 24, seed=1)
    mask = np.zeros((20, 24), bool)
    out, _ = histories.apply_step(rgb, mask, {"op": "brightness", "alpha": -0.31})
    np.testing.assert_array_equal(out, brightness(rgb, -0.31))
    out, _ = histories.apply_step(rgb, mask, {"op": "contrast", "beta": 1.7})
    np.testing.assert_array_equal(out, contrast(rgb, 1.7))
    np.testing.assert_array_equal(
        apply_disturbance(rgb, {"type": "contrast", "beta": 1.7}), contrast(rgb, 1.7)
    )
    np.testing.assert_array_equal(
        apply_disturbance(rgb, {"type": "brightness", "alpha": 0.4}), brightness(rgb, 0.4)
    )
    np.testing.assert_array_equal(apply_disturbance(rgb, {"type": "none"}), rgb)


def test_drawn_disturbances_cover_the_configured_ranges():
    spec = RestorationRecipe().configs["restore-tiny"]["disturb"]
    rng = np.random.default_rng(0)
    draws = [draw_disturbance(rng, spec) for _ in range(2000)]
    kinds = [d["type"] for d in draws]
    assert 0.15 < kinds.count("none") / len(draws) < 0.25
    alphas = np.array([d["alpha"] for d in draws if d["type"] == "brightness"])
    betas = np.array([d["beta"] for d in draws if d["type"] == "contrast"])
    assert (np.abs(alphas) >= 0.2).all() and (np.abs(alphas) <= 0.6).all()
    assert (alphas > 0).mean() == pytest.approx(0.5, abs=0.08)
    low, high = betas[betas < 1], betas[betas > 1]
    assert low.min() >= 0.6 and low.max() <= 0.8 and high.min() >= 1.5 and high.max() <= 2.2
    assert len(low) == pytest.approx(len(high), rel=0.2)
    # The paper's grid lies inside the training ranges.
    assert 0.5 <= max(alphas) and -0.5 >= min(alphas) and low.min() < 0.7 < low.max()
    assert high.min() < 2.0 < high.max()


# ------------------------------------------------------------------ restoration nets


def _tiny_restoration() -> RestorationNet:
    torch.manual_seed(0)
    return RestorationNet(restoration_config("tiny")).eval()


def test_restoration_net_shapes_on_odd_sizes():
    net = _tiny_restoration()
    x = torch.rand(2, 3, 37, 53)
    thumb, stats = net.classifier.features(x)
    assert thumb.shape == (2, 3, 96, 96) and stats.shape == (2, stats_dim(32))
    out = net(x, thumb, stats)
    assert out["logits"].shape == (2, 3) and out["condition"].shape == (2, 5)
    assert out["restored"].shape == x.shape
    assert ((out["alpha"] >= -0.6) & (out["alpha"] <= 0.6)).all()
    assert ((out["beta"] >= 0.5) & (out["beta"] <= 2.5)).all()
    for size in [(1, 1), (8, 8), (9, 17)]:
        y = net.restorer(torch.rand(1, 3, *size), out["condition"][:1])
        assert y.shape == (1, 3, *size)


def test_untrained_restorer_is_the_guided_inverse_and_that_inverts_unclipped_pixels():
    net = _tiny_restoration()
    clean = torch.rand(1, 3, 24, 40) * 0.4 + 0.05  # nothing clips at alpha 0.3 or beta 2.0
    for kind, alpha, beta, disturbed in [
        (1, 0.3, 1.0, (clean + 0.3).clamp(0, 1)),
        (2, 0.0, 2.0, (clean * 2.0).clamp(0, 1)),
        (0, 0.0, 1.0, clean),
    ]:
        cond = condition_from_truth(
            torch.tensor([kind]), torch.tensor([alpha]), torch.tensor([beta])
        )
        torch.testing.assert_close(guided_inverse(disturbed, cond), clean, atol=1e-6, rtol=0)
        # The residual's last conv starts at zero: the restorer begins as the guide.
        torch.testing.assert_close(net.restorer(disturbed, cond), clean, atol=1e-6, rtol=0)


def test_shifted_windows_do_not_mix_pixels_wrapped_around_the_border():
    torch.manual_seed(0)
    block = SwinBlock(dim=8, heads=2, window=4, shift=2, mlp_ratio=2.0).eval()
    cond = torch.zeros(1, 8)
    x = torch.rand(1, 8, 8, 8)
    base = block(x, cond)
    y = x.clone()
    # Top-left pixel (not a constant shift of all channels: LayerNorm would remove it); after
    # the cyclic shift it shares a window with (7, 7), but not a region.
    y[0, 0, 0] += torch.linspace(-3, 3, 8)
    moved = block(y, cond)
    torch.testing.assert_close(moved[0, 7, 7], base[0, 7, 7])  # masked: no influence
    assert not torch.allclose(moved[0, 1, 1], base[0, 1, 1])  # same region: influence
    unmasked = SwinBlock(dim=8, heads=2, window=4, shift=0, mlp_ratio=2.0)
    assert unmasked.shift == 0


def test_window_attention_equals_plain_attention_with_each_window_mask():
    """The fast path (shared-bias call, then only the masked windows again) is plain softmax
    attention with bias + that window's mask, window by window."""
    from forgectl.nets.restoration import shifted_window_mask

    torch.manual_seed(3)
    attn = WindowAttention(dim=8, heads=2, window=4).eval()
    x = torch.rand(2, 16, 16, 8)  # 2 images, 4 x 4 windows of 16 tokens
    mask = shifted_window_mask(16, 16, 4, 2, x.device)
    b, nw, n = 2, 16, 16
    qkv = attn.qkv(x).view(b, nw, n, 3, 2, 4).permute(3, 0, 1, 4, 2, 5)
    q, k, v = qkv.unbind(0)
    bias = attn.bias_table[attn.bias_index].permute(2, 0, 1)
    for m in (None, mask):
        scores = q @ k.transpose(-1, -2) / 2.0 + bias  # d = 4: scale 1 / sqrt(4)
        if m is not None:
            scores = scores + m[None, :, None]
        expect = attn.proj((scores.softmax(-1) @ v).transpose(2, 3).reshape(b, nw, n, 8))
        torch.testing.assert_close(attn(x, m), expect, atol=1e-5, rtol=1e-5)


def test_global_stats_see_clipping_and_empty_levels():
    rgb = natural_image(64, 80, seed=3)

    def stats(a):
        x = torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None] / 255
        return global_stats(x, 32)[0]

    k = len((0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99))
    clean, bright, gain = stats(rgb), stats(brightness(rgb, 0.5)), stats(contrast(rgb, 2.0))
    high = slice(k + 9, k + 12)
    empty = slice(k + 12, k + 15)
    assert float(bright[high].mean()) > float(clean[high].mean()) + 0.2
    assert float(gain[empty].mean()) > 0.4 > float(clean[empty].mean())  # odd levels skipped
    assert stats_dim(32) == clean.numel()


def test_classifier_and_restorer_configs_are_data():
    tiny, paper = restoration_config("tiny"), restoration_config("paper")
    n_tiny = sum(p.numel() for p in RestorationNet(tiny).parameters())
    assert 300_000 <= n_tiny <= 1_000_000
    assert paper["restorer"]["dim"] > tiny["restorer"]["dim"]
    json.dumps([tiny, paper])
    with pytest.raises(ValueError, match="unknown restoration config"):
        restoration_config("huge")
    with pytest.raises(ValueError, match="multiple of heads"):
        SwinRestorer(dim=30, heads=4)


# ------------------------------------------------------------------ wavelet U-Net


@pytest.mark.parametrize("wavelet", ["haar", "sym4", "bior4.4"])
def test_wavelet_unet_shapes_on_odd_sizes(wavelet):
    torch.manual_seed(0)
    net = WaveletUNet(wavelet_unet_config("tiny", wavelet), pretrained=False).eval()
    out = net(torch.rand(1, 3, 37, 53))
    assert out["mask"].shape == (1, 1, 37, 53)
    assert out["embedding"].shape == (1, 32, 10, 14)
    assert net.dwt.wavelet == wavelet


def test_wavelet_unet_conv_encoder_and_gradients():
    config = wavelet_unet_config("paper")
    config.update(
        conv_channels=[8, 8, 16, 16, 16],
        enhance_channels=8,
        decoder_channels=[16, 8, 8, 8],
        embed_dim=8,
    )
    torch.manual_seed(0)
    net = WaveletUNet(config)
    x = torch.rand(2, 3, 40, 56, requires_grad=True)
    out = net(x)
    assert out["mask"].shape == (2, 1, 40, 56) and out["embedding"].shape == (2, 8, 10, 14)
    out["mask"].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # The wavelet branch is in the graph (its zero-initialized output conv gets a gradient).
    grad = net.enhance["4"].out.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="wavelet_scales"):
        WaveletUNet({**config, "wavelet_scales": [3]})



def test_wavelet_unet_self_correlation_starts_as_the_network_without_it():
    torch.manual_seed(0)
    plain = WaveletUNet(wavelet_unet_config("tiny"), pretrained=False).eval()
    extended = WaveletUNet({**wavelet_unet_config("tiny"),
                            "self_correlation": {"dim": 16, "k": 4, "exclude": 1}},
                           pretrained=False).eval()
    missing, unexpected = extended.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    assert all(k.startswith("self_correlation.") for k in missing)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        before = plain(x)["mask"]
        torch.testing.assert_close(extended(x)["mask"], before)
        extended.self_correlation.head[-1].weight.fill_(0.1)  # once trained, it moves the mask
        assert not torch.allclose(extended(x)["mask"], before)

# ------------------------------------------------------------------ classical baseline


def _reference_like_image(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth image whose value distribution follows REFERENCE_QUANTILES."""
    yy, xx = np.mgrid[0:h, 0:w]
    field = np.sin(xx / 9.0) * np.cos(yy / 13.0) + 0.3 * np.sin((xx + yy) / 5.0)
    ranks = (field.argsort(axis=None).argsort().reshape(h, w) + 0.5) / (h * w)
    grey = np.interp(ranks, [0.0, *QUANTILE_LEVELS, 1.0], [0.0, *REFERENCE_QUANTILES, 1.0])
    rgb = np.stack([grey, 0.95 * grey + 0.02, grey], axis=-1)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "kind,value,gain,offset",
    [
        ("brightness", 0.3, 1.0, 0.3),
        ("brightness", -0.3, 1.0, -0.3),
        ("contrast", 0.7, 0.7, 0.0),
        ("contrast", 1.5, 1.5, 0.0),
    ],
)
def test_classical_baseline_undoes_a_global_shift(kind, value, gain, offset):
    clean = _reference_like_image()
    disturbed = rt.disturb(clean, kind, value)
    restored, facts = classical_restore(disturbed)
    assert facts["gain"] == pytest.approx(gain, abs=0.03)
    assert facts["offset"] == pytest.approx(offset, abs=0.02)
    assert rt.psnr(clean, restored) > rt.psnr(clean, disturbed) + 8
    if kind == "contrast" and value < 1:  # nothing clipped: nearly exact
        assert rt.psnr(clean, restored) > 40
    assert restored.shape == clean.shape and restored.dtype == np.uint8


def test_classical_baseline_leaves_saturated_images_alone():
    white = np.full((20, 30, 3), 255, np.uint8)
    restored, facts = classical_restore(white)
    np.testing.assert_array_equal(restored, white)
    assert facts["fit_levels"] == 0 and facts["restored"] is False


# ------------------------------------------------------------------ metrics


def test_psnr_by_hand():
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.ones((4, 4, 3), np.uint8)  # MSE 1
    assert rt.psnr(a, b) == pytest.approx(20 * math.log10(255))
    c = a.copy()
    c[0, 0, 0] = 12  # MSE 144 / 48 = 3
    assert rt.psnr(a, c) == pytest.approx(10 * math.log10(255**2 / 3))
    assert rt.psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="shape"):
        rt.psnr(a, a[:2])


def test_ssim_by_hand():
    x = natural_image(48, 64, seed=2)
    assert rt.ssim(x, x) == pytest.approx(1.0)
    # Constant images: no variance, SSIM is the luminance term (2 m1 m2 + C1) / (m1^2 + m2^2 +
    # C1).
    c1 = (0.01 * 255) ** 2
    a, b = np.full((32, 32), 100.0), np.full((32, 32), 120.0)
    assert rt.ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1))
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 20, x.shape), 0, 255)
    worse = np.clip(x + np.random.default_rng(0).normal(0, 60, x.shape), 0, 255)
    assert 1 > rt.ssim(x, noisy) > rt.ssim(x, worse) > 0
    assert rt.ssim(x, noisy) == pytest.approx(rt.ssim(noisy, x))


def test_restoration_table_layout():
    images = [rt.EvalImage("splice", natural_image(40, 56, seed=i), f"i{i}") for i in range(2)]
    table = rt.restoration_table(images, {"classical": lambda rgb: classical_restore(rgb)[0]})
    assert table.settings == ["alpha=0.5", "alpha=-0.5", "beta=0.7", "beta=2.0", "none"]
    assert table.columns == ["unrestored", "classical", "oracle"]
    assert table.cells[("none", "oracle")]["psnr"] == math.inf
    assert table.cells[("none", "unrestored")]["psnr"] == math.inf
    assert table.cells[("none", "unrestored")]["ssim"] == 1.0
    assert table.cells[("alpha=0.5", "unrestored")]["n"] == 2
    text = rt.format_markdown(table)
    assert text.count("\n") == 6 and "| alpha=-0.5 |" in text
    json.dumps(table.to_dict(), default=float)
    # The oracle inverse is exact where nothing clipped (contrast 0.7 only loses rounding).
    dark = (natural_image(40, 56, seed=3) // 2).astype(np.uint8)
    undone = rt.oracle_inverse(contrast(dark, 0.7), "contrast", 0.7)
    assert np.abs(undone.astype(int) - dark).max() <= 1


# ------------------------------------------------------------------ recipes


def _sample(h: int = 72, w: int = 104, seed: int = 0) -> SynthSample:
    rgb = natural_image(h, w, seed=seed)
    mask = np.zeros((h, w), np.uint8)
    mask[20:50, 30:70] = 1
    return SynthSample(
        image=image_from_array(rgb),
        file_bytes=b"",
        file_ext=".png",
        mask=mask,
        boxes=np.zeros((0, 4), np.float32),
        kind="splice",
        seed=seed,
    )


def _tiny_config(recipe, name: str, **changes):
    config = copy.deepcopy(recipe.configs[name])
    config.update(changes)
    if config["stage"] == "localize":
        config["model"]["pretrained"] = False
        config.pop("encoder_init", None)  # tests do not depend on the shipped omni weights
    return config


def _check_loss(recipe, config) -> dict:
    torch.manual_seed(0)
    model = recipe.build_model(config).train()
    items = [recipe.prepare(_sample(seed=i), config, np.random.default_rng(i)) for i in range(2)]
    batch = recipe.collate(items)
    loss, logs = recipe.loss(model, batch, config)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    probs = recipe.predict(model, batch)
    assert probs.shape == batch["mask"].shape and model.training
    return {"batch": batch, "logs": logs, "model": model, "probs": probs}


def test_restoration_recipe_prepare_and_loss():
    recipe = RestorationRecipe()
    config = _tiny_config(recipe, "restore-tiny", crop=32, teacher_prob=0.5)
    item = recipe.prepare(_sample(), config, np.random.default_rng(5))
    assert item["image"].shape == item["clean"].shape == (3, 32, 32)
    assert item["thumb"].shape == (3, 96, 96) and item["stats"].shape == (stats_dim(32),)
    assert item["mask"].shape == item["valid"].shape == (1, 32, 32)
    assert 0 <= int(item["kind"]) < len(DISTURBANCE_CLASSES)
    out = _check_loss(recipe, config)
    assert {"l1", "cls", "strength", "psnr", "accuracy", "loss"} <= set(out["logs"])
    assert float(out["probs"].abs().sum()) == 0  # no tamper map from the restoration stage


def _pair(item: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """A prepared restoration item -> (its disturbance, the lossless disturbance of its clean
    crop, its input image), images as (H, W, 3) uint8."""
    kind = DISTURBANCE_CLASSES[int(item["kind"])]
    clean = np.round(item["clean"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    dist = {"type": kind, "alpha": float(item["alpha"]), "beta": float(item["beta"])}
    got = np.round(item["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
    return dist, apply_disturbance(clean, dist), got


def test_restoration_recipe_pairs_are_exact_disturbances_of_the_clean_crop():
    recipe = RestorationRecipe()
    config = _tiny_config(recipe, "restore-tiny", crop=32, flip_prob=0.0)
    for seed in range(6):
        _, expect, got = _pair(recipe.prepare(_sample(), config, np.random.default_rng(seed)))
        np.testing.assert_array_equal(got, expect)


def test_restoration_recipe_can_resave_the_disturbed_image_as_jpeg():
    recipe = RestorationRecipe()
    plain = _tiny_config(recipe, "restore-tiny", crop=32, flip_prob=0.0)
    assert plain["disturb"]["resave_jpeg_prob"] == 0.0  # the shipped modules' recipe
    resaved = copy.deepcopy(plain)
    resaved["disturb"].update(none_prob=0.0, resave_jpeg_prob=1.0)
    for seed in range(4):
        item = recipe.prepare(_sample(), resaved, np.random.default_rng(seed))
        dist, exact, got = _pair(item)
        assert not np.array_equal(got, exact)  # JPEG-decoded, not the lossless disturbance
        assert np.abs(got.astype(int) - exact).mean() < 4
        # The clipped values are those the disturbance destroyed, not what the JPEG left.
        lost = clipped_values(exact, dist["type"], dist["alpha"], dist["beta"])
        np.testing.assert_array_equal(item["lost"].numpy().transpose(1, 2, 0) > 0, lost)


def test_restoration_recipe_marks_the_clipped_values_and_weighs_them_alone():
    recipe = RestorationRecipe()
    config = _tiny_config(recipe, "restore-tiny", crop=32, flip_prob=0.0)
    seen = set()
    for seed in range(10):
        item = recipe.prepare(_sample(), config, np.random.default_rng(seed))
        kind = DISTURBANCE_CLASSES[int(item["kind"])]
        image = np.round(item["image"].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        lost = clipped_values(image, kind, float(item["alpha"]), float(item["beta"]))
        assert item["lost"].shape == (3, 32, 32)
        np.testing.assert_array_equal(item["lost"].numpy().transpose(1, 2, 0) > 0, lost)
        seen.add(bool(lost.any()))
    assert seen == {True, False}
    # Stage 2 (fine-tuning, the shipped restorer) weighs the clipped values on their own.
    ft = RestorationRecipe().configs["restore-tiny-ft"]
    assert ft["loss_weights"]["lost_mse"] > 0 and ft["init_weights"]
    assert config["loss_weights"]["lost_mse"] == 0  # stage 1's recipe, as it was trained
    out = _check_loss(recipe, config)
    assert "lost_mse" in out["logs"]


def test_clipped_values_follow_the_disturbance():
    rgb = natural_image(48, 64, seed=25)
    assert not clipped_values(rgb, "none", None, None).any()
    assert not clipped_values(contrast(rgb, 0.7), "contrast", None, 0.7).any()
    np.testing.assert_array_equal(
        clipped_values(brightness(rgb, -0.3), "brightness", -0.3, None),
        brightness(rgb, -0.3) == 0,
    )
    up = contrast(rgb, 1.8)
    np.testing.assert_array_equal(clipped_values(up, "contrast", None, 1.8), up == 255)


def test_localizer_recipe_prepare_and_loss():
    recipe = LocalizerRecipe()
    config = _tiny_config(recipe, "tiny", crop=64)
    item = recipe.prepare(_sample(), config, np.random.default_rng(0))
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
    out = _check_loss(recipe, config)
    assert {"forensic_bce", "dice", "contrast"} <= set(out["logs"])
    assert out["logs"]["contrast"] > 0  # both classes present in the crops: a real term
    with pytest.raises(Exception, match="multiple of 32"):
        recipe.prepare(_sample(), {**config, "crop": 48}, np.random.default_rng(0))


def test_forensic_bce_weights_tampered_pixels_and_edges():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    band = edge_band(mask, 1)
    assert int(band.sum()) == 8 * 8 - 6 * 6 + 10 * 10 - 8 * 8  # one ring inside, one outside
    logits = torch.zeros_like(mask)
    # Every pixel has the same BCE at logit 0, so the weighted mean is that value.
    assert float(forensic_bce(logits, mask)) == pytest.approx(math.log(2))
    wrong_edge = logits.clone()
    wrong_edge[band.bool()] = -3.0 * (mask[band.bool()] * 2 - 1)  # confidently wrong on edges
    wrong_far = logits.clone()
    far = (~band.bool()) & (mask < 0.5)
    idx = far.nonzero()[: int(band.sum())]
    wrong_far[tuple(idx.t())] = 3.0
    assert float(forensic_bce(wrong_edge, mask)) > float(forensic_bce(wrong_far, mask))


def test_one_recipe_serves_both_stages():
    recipe = training_recipe()
    assert isinstance(recipe, ReConWaveRecipe) and recipe.name == "reconwave"
    assert {"tiny", "paper", "tiny-sym4", "tiny-bior4.4", "restore-tiny", "restore-paper"} <= set(
        recipe.configs
    )
    for config in recipe.configs.values():
        json.dumps(config)
        assert config["stage"] in ("restore", "localize")
    assert recipe.configs["tiny-sym4"]["model"]["wavelet"] == "sym4"
    config = _tiny_config(recipe, "restore-tiny", crop=32)
    _check_loss(recipe, config)


def test_smoke_training_with_the_shared_trainer(tmp_path):
    from forgectl.training.trainer import RunOptions, TrainData, Trainer

    class Source:
        def sample(self, index: int) -> SynthSample:
            return _sample(72, 104, seed=index % 3)

    recipe = training_recipe()
    for name, changes in [("restore-tiny", {"crop": 32}), ("tiny", {"crop": 64})]:
        config = _tiny_config(recipe, name, steps=2, batch_size=2, **changes)
        options = RunOptions(
            run_dir=tmp_path / name,
            out_dir=tmp_path / "w",
            threads=1,
            progress=False,
            val_samples=2,
            val_every=0,
            ckpt_every=0,
            best_metric="val_loss",
        )
        card = Trainer(recipe, name, config, TrainData(Source(), Source()), options).run()
        assert card["weights"]["file"] == f"reconwave-{name}.safetensors"
        assert card["metrics"]["final"]["val_loss"] is not None


# ------------------------------------------------------------------ front end and backend


def _save(folder, stem: str, model: torch.nn.Module, config: dict) -> object:
    from safetensors.torch import save_file

    path = folder / f"{stem}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    card = {"format": "forgectl.model_card/1", "method": "reconwave", "config": config}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reconwave")
    recipe = training_recipe()
    restore_cfg = _tiny_config(recipe, "restore-tiny")
    local_cfg = _tiny_config(recipe, "tiny")
    torch.manual_seed(0)
    restore = _save(folder, "reconwave-restore-tiny", recipe.build_model(restore_cfg), restore_cfg)
    torch.manual_seed(1)
    local = _save(folder, "reconwave-tiny", recipe.build_model(local_cfg), local_cfg)
    return {"restore": restore, "localize": local}


def test_restorer_front_end_on_odd_sizes(weight_files):
    restorer = Restorer(weight_files["restore"], tile=32, overlap=8, min_confidence=0.0)
    rgb = natural_image(37, 53, seed=7)
    before = rgb.copy()
    out, facts = restorer.restore(rgb)
    np.testing.assert_array_equal(rgb, before)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert facts["type"] in DISTURBANCE_CLASSES and 0 <= facts["confidence"] <= 1
    assert set(facts["probabilities"]) == set(DISTURBANCE_CLASSES)
    json.dumps(facts)
    if facts["type"] == "brightness":
        assert facts["alpha"] is not None and facts["beta"] is None
    strict = Restorer(weight_files["restore"], min_confidence=1.0)
    same, f2 = strict.restore(rgb)
    np.testing.assert_array_equal(same, rgb)
    assert f2["restored"] is False


def test_write_restoration_never_touches_the_input(tmp_path, weight_files):
    from forgectl.outputs import png_bytes

    src = tmp_path / "in.png"
    src.write_bytes(png_bytes(contrast(natural_image(40, 56, seed=8), 0.7)))
    data, mtime = src.read_bytes(), src.stat().st_mtime_ns
    for restorer in (None, Restorer(weight_files["restore"], tile=32, overlap=8)):
        record = write_restoration(src, tmp_path / "out", restorer)
        assert src.read_bytes() == data and src.stat().st_mtime_ns == mtime
        written = json.loads((tmp_path / "out" / "in.restore.json").read_text())
        assert written == json.loads(json.dumps(record))
        assert written["restoration"]["method"] in ("classical", "learned")
        from PIL import Image

        with Image.open(tmp_path / "out" / "in.restored.png") as im:
            assert im.size == (56, 40) and im.mode == "RGB"


def test_encoder_init_copies_the_encoder_and_refuses_a_misfit(tmp_path):
    from safetensors.torch import save_file

    from forgectl.errors import UsageError

    torch.manual_seed(3)
    donor = WaveletUNet(wavelet_unet_config("tiny"), pretrained=False)
    state = {f"encoder.{k}": v.contiguous() for k, v in donor.encoder.state_dict().items()}
    state["decoder.other"] = torch.zeros(2)  # tensors outside the encoder are ignored
    good = tmp_path / "donor.safetensors"
    save_file(state, str(good))
    torch.manual_seed(4)
    model = WaveletUNet(wavelet_unet_config("tiny"), pretrained=False)
    load_encoder_init(model, str(good))  # an absolute path overrides the weights folder
    for k, v in donor.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[k], v)
    bad = tmp_path / "bad.safetensors"
    save_file({"encoder.stages.0.0.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(UsageError, match="do not fit"):
        load_encoder_init(model, str(bad))
    with pytest.raises(UsageError, match="not found"):
        load_encoder_init(model, str(tmp_path / "missing.safetensors"))


def test_shipped_tiny_config_starts_from_the_omni_encoder():
    config = training_recipe().configs["tiny"]
    assert config["encoder_init"] == registry.get_spec("omni").weights
    assert "omni-tiny" in config["pretrained"]
    assert "encoder_init" not in training_recipe().configs["tiny-imagenet"]


def test_cli_restore_batch_goes_past_a_bad_file(tmp_path, weight_files):
    import subprocess
    import sys

    from forgectl.outputs import png_bytes

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "dim.png").write_bytes(png_bytes(brightness(natural_image(48, 64, seed=11), -0.3)))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    out = tmp_path / "out"
    env = dict(os.environ, FORGECTL_DEBUG="")

    def restore(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "forgectl", "restore", *args, "--out", str(out)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    proc = restore(str(folder), "--weights", str(weight_files["restore"]))
    assert proc.returncode == 1, proc.stderr
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    record = json.loads((out / "dim.restore.json").read_text())
    assert record["schema"] == "forgectl.restore/1"
    assert record["restoration"]["type"] in DISTURBANCE_CLASSES
    assert (out / "dim.restored.png").is_file() and not (out / "broken.restored.png").exists()
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and sum("error" in x for x in lines) == 1
    classical = restore(str(folder / "dim.png"), "--mode", "classical")
    assert classical.returncode == 0, classical.stderr
    written = json.loads((out / "dim.restore.json").read_text())
    assert written["restoration"]["method"] == "classical"
    usage = restore(str(folder / "dim.png"), "--mode", "magic")
    assert usage.returncode == 2 and "--mode" in usage.stderr


class TestReConWaveContract(BackendContract):
    """The generic contract with random weights (the shipped ones: TestShippedReConWave)."""

    method = "reconwave"
    flip_test_options = {"restore": "off"}

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, weight_files):
        from forgectl.backends.reconwave import ReConWaveBackend

        return ReConWaveBackend(
            weights=weight_files["localize"],
            restore_weights=weight_files["restore"],
            min_confidence=0.0,
        )

    def test_facts_record_the_restoration(self, backend):
        result = backend.localize(image_from_array(natural_image(40, 56, seed=9)))
        r = result.facts["restoration"]
        assert r["method"] == "learned" and r["type"] in DISTURBANCE_CLASSES
        assert result.facts["wavelet"] == "haar"

    def test_other_restore_modes(self, weight_files):
        from forgectl.backends.reconwave import ReConWaveBackend

        image = image_from_array(natural_image(40, 56, seed=10))
        for mode in ("off", "classical"):
            b = ReConWaveBackend(weights=weight_files["localize"], restore=mode)
            check_result(b, image)
            assert b.localize(image).facts["restoration"]["method"] == mode
        with pytest.raises(Exception, match="restore="):
            ReConWaveBackend(weights=weight_files["localize"], restore="magic")


class TestShippedReConWave(BackendContract):
    """The registered method with its shipped weights."""

    method = "reconwave"
    flip_test_options = {"restore": "off"}

    def test_shipped_cards_record_both_modules(self, backend):
        card = backend.model_card()
        assert card["config"]["stage"] == "localize"
        restore_card = backend.restorer().card
        assert restore_card["config"]["stage"] == "restore"
        for c in (card, restore_card):
            assert c["weights"]["sha256"] and c["training"]["steps"] > 0


@pytest.mark.parametrize("beta", [0.62, 0.7, 0.85, 1.3, 2.0])
def test_gain_fingerprint_recovers_a_lossless_gain(beta):
    rgb = natural_image(160, 200, seed=21)
    fitted, corr = fit_contrast_gain(contrast(rgb, beta), beta + 0.06)
    assert fitted is not None and corr >= 0.6
    # Gains that map every occupied level alike cannot be told apart: within one level at 255.
    assert abs(fitted - beta) * 255 <= 1.0


def test_gain_fingerprint_refuses_images_without_one():
    from forgectl.intake import encode_jpeg, image_from_bytes

    rgb = natural_image(160, 200, seed=22)
    recompressed = image_from_bytes(encode_jpeg(contrast(rgb, 0.7), 90)).rgb
    for pixels, guess in ((rgb, 1.0), (brightness(rgb, 0.2), 1.0), (recompressed, 0.72)):
        fitted, corr = fit_contrast_gain(pixels, guess)
        assert fitted is None and corr < 0.6
    flat = np.full((32, 32, 3), 128, np.uint8)  # too few levels to read anything
    assert fit_contrast_gain(flat, 1.0) == (None, 0.0)


def test_restorer_conditions_on_its_decision_not_the_soft_mixture():
    facts = {"type": "contrast", "alpha": None, "beta": 0.7}
    cond = Restorer._decided_condition(facts)
    np.testing.assert_array_equal(cond[0, :3], [0.0, 0.0, 1.0])
    assert math.isclose(float(cond[0, 4]), math.log(0.7), rel_tol=1e-6)


def _full_range(seed: int) -> np.ndarray:
    """A natural-looking image stretched to reach both black and white, as photos do."""
    rgb = natural_image(96, 128, seed=seed).astype(np.float64)
    rgb = (rgb - rgb.min()) / (rgb.max() - rgb.min()) * 255
    return np.round(rgb).astype(np.uint8)


def test_decision_checks_read_the_shift_from_the_extremes_and_veto_impossible_ones():
    rgb = _full_range(23)
    up = refine_decision(brightness(rgb, 0.4), "brightness", 0.45, None)
    assert up["source"] == "darkest" and abs(up["alpha"] - 0.4) <= 1 / 255 and not up["veto"]
    down = refine_decision(brightness(rgb, -0.4), "brightness", -0.36, None)
    assert down["source"] == "brightest" and abs(down["alpha"] + 0.4) <= 1 / 255
    for alpha in (0.3, -0.3):  # an undisturbed image still reaches black and white
        vetoed = refine_decision(rgb, "brightness", alpha, None)
        assert vetoed["veto"] and vetoed["type"] == "none" and vetoed["alpha"] is None
    photo = natural_image(160, 200, seed=21)  # unstretched: a stretch leaves gaps of its own
    gain = refine_decision(contrast(photo, 0.7), "contrast", None, 0.75)
    assert gain["source"] == "gain_fit" and abs(gain["beta"] - 0.7) <= 1 / 255
    assert gain["beta_classifier"] == 0.75
    assert refine_decision(photo, "contrast", None, 1.6)["veto"]  # no gaps, nothing clipped
    assert refine_decision(rgb, "none", None, None) == {
        "type": "none", "alpha": None, "beta": None, "source": "classifier", "veto": None
    }


@pytest.mark.parametrize("alpha", [0.5, -0.5])
def test_decision_reads_a_large_shift_from_a_clipped_extreme_the_classifier_reads_short(alpha):
    # Seen on held-out photos: shifts of +-0.5 read 0.1-0.15 short of the extreme value's,
    # in photos whose shadows or highlights were clipped at black or white before the shift.
    sign = 1 if alpha > 0 else -1
    black_or_white = np.full((1, 1, 3), 0 if alpha > 0 else 255, np.uint8)
    level = int(brightness(black_or_white, alpha)[0, 0, 0])
    stretched = _full_range(26).astype(np.float64)
    clipped = np.clip((stretched - 127.5) * 1.2 + 127.5, 0, 255).round().astype(np.uint8)
    shifted = brightness(clipped, alpha)
    assert (shifted == level).mean() >= EXTREME_SPIKE_MIN
    short = refine_decision(shifted, "brightness", alpha - sign * 0.13, None)
    assert short["source"] in ("darkest", "brightest") and abs(short["alpha"] - alpha) <= 1 / 255
    far = refine_decision(shifted, "brightness", alpha - sign * 0.25, None)  # too far: keep it
    assert far["source"] == "classifier" and far["alpha"] == alpha - sign * 0.25
    # A single extreme value may be a dim photo's own end, not black or white: the window is
    # half as wide there.
    inner = np.round(16 + stretched * (223 / 255)).astype(np.uint8)  # 16..239
    inner[0, 0, 0], inner[-1, -1, 2] = 0, 255
    single = brightness(inner, alpha)
    assert (single == level).mean() < EXTREME_SPIKE_MIN
    kept = refine_decision(single, "brightness", alpha - sign * 0.13, None)
    assert kept["source"] == "classifier" and kept["alpha"] == alpha - sign * 0.13


def test_decision_turns_a_darkening_shift_into_the_gain_the_histogram_shows():
    photo = natural_image(160, 200, seed=21)
    dim = contrast(photo, 0.7)
    switched = refine_decision(dim, "brightness", -0.3, None)
    assert switched["type"] == "contrast" and abs(switched["beta"] - 0.7) <= 1 / 255
    assert switched["alpha"] is None and switched["source"] == "gain_fit"
    assert switched["switched_from"] == {"type": "brightness", "alpha": -0.3}
    # A real shift keeps its type: moving 8-bit levels leaves no gain fingerprint.
    shifted = refine_decision(brightness(_full_range(23), -0.4), "brightness", -0.36, None)
    assert shifted["type"] == "brightness" and "switched_from" not in shifted



def test_decision_turns_a_gain_that_lifted_black_into_a_brightening_shift():
    # Seen on held-out photos: shifts of +0.3 read as gains of about 1.5 (both brighten and
    # clip highlights); a gain keeps black near black, a shift lifts it to alpha.
    rgb = _full_range(23)
    switched = refine_decision(brightness(rgb, 0.3), "contrast", None, 1.5)
    assert switched["type"] == "brightness" and switched["source"] == "darkest"
    assert abs(switched["alpha"] - 0.3) <= 1 / 255 and switched["beta"] is None
    assert switched["switched_from"] == {"type": "contrast", "beta": 1.5}
    # A gain keeps its type: the darkest value stays within beta * BLACK_LEVEL_MAX.
    gained = contrast(rgb, 1.5)
    assert gained.min() / 255 <= 1.5 * BLACK_LEVEL_MAX
    kept = refine_decision(gained, "contrast", None, 1.5)
    assert kept["type"] == "contrast" and "switched_from" not in kept


def test_decision_finds_a_low_gain_the_classifier_read_far_off():
    # Seen on held-out photos: a gain of 0.70 read as 0.89, outside the search around the
    # classifier's value; the low-gain fingerprint (which no undisturbed photo reaches) decides.
    photo = natural_image(160, 200, seed=21)
    far = refine_decision(contrast(photo, 0.7), "contrast", None, 0.89)
    assert far["source"] == "gain_fit" and abs(far["beta"] - 0.7) <= 1 / 255
    assert far["beta_classifier"] == 0.89 and not far["veto"]
    # Without a fingerprint the classifier's reading stands (or is vetoed) as before.
    assert refine_decision(photo, "contrast", None, 1.6)["veto"]

def test_decision_reads_a_gain_from_a_weak_fingerprint_of_a_rough_histogram():
    # Seen on held-out photos: a photo whose own histogram is irregular holds a gain of 0.70
    # at a correlation of 0.33 (below both thresholds), yet no other gain fits it as well.
    photo = natural_image(160, 200, seed=22)
    jitter = np.random.default_rng(22).integers(-1, 2, 256)
    rough = np.clip(np.arange(256) + jitter, 0, 255).astype(np.uint8)[photo]
    dim = contrast(rough, 0.7)
    assert fit_contrast_gain(dim, 0.85)[0] is None and low_gain_fingerprint(dim) is None
    weak = weak_gain_fingerprint(dim)
    assert weak is not None and weak["correlation"] < GAIN_SWITCH_MIN_CORRELATION
    decided = refine_decision(dim, "contrast", None, 0.85)
    assert decided["source"] == "gain_fit" and abs(decided["beta"] - 0.7) <= 1 / 255
    assert weak_gain_fingerprint(rough) is None  # nothing merged levels there
    # It sets the strength of a decision that stands, never lifts a veto: pixels brighter
    # than the classifier's gain allows still refuse it.
    assert dim.max() / 255 > 0.4 + 0.1
    assert refine_decision(dim, "contrast", None, 0.4)["veto"]


def test_low_gain_fingerprint_is_found_only_where_a_gain_merged_levels():
    photo = natural_image(160, 200, seed=21)
    gain = low_gain_fingerprint(contrast(photo, 0.7))
    assert gain is not None and abs(gain["beta"] - 0.7) <= 1 / 255
    assert gain["correlation"] >= GAIN_SWITCH_MIN_CORRELATION
    assert low_gain_fingerprint(photo) is None
    assert low_gain_fingerprint(brightness(_full_range(23), -0.4)) is None
    assert low_gain_fingerprint(contrast(photo, 1.6)) is None  # gaps, not merged levels


def test_gain_fingerprint_decides_where_the_classifier_is_unsure(weight_files):
    # min_confidence=1.0: the classifier never decides, so only the pixels can.
    unsure = Restorer(weight_files["restore"], tile=32, overlap=8, min_confidence=1.0)
    dim = contrast(natural_image(160, 200, seed=21), 0.7)
    out, facts = unsure.restore(dim)
    assert facts["restored"] and facts["type"] == "contrast" and facts["source"] == "gain_fit"
    assert abs(facts["beta"] - 0.7) <= 1 / 255 and facts["alpha"] is None
    assert facts["overruled"]["type"] in DISTURBANCE_CLASSES
    assert facts["clipped_fraction"] == 0.0
    assert out.mean() > dim.mean() * 1.3  # undone: values / 0.7
    same, plain = unsure.restore(natural_image(160, 200, seed=21))
    assert not plain["restored"] and "overruled" not in plain


def test_restorer_runs_only_the_tiles_that_hold_needed_pixels(weight_files):
    restorer = Restorer(weight_files["restore"], tile=32, overlap=8)
    rgb = natural_image(40, 88, seed=27)
    cond = Restorer._decided_condition({"type": "brightness", "alpha": -0.3, "beta": None})
    full = restorer._run_tiles(rgb, cond)
    needed = np.zeros(rgb.shape[:2], bool)
    needed[5:9, 3:6] = True  # inside the two tiles at x = 0 of the plan's 2 x 4
    calls = []
    forward = restorer.net.restorer.forward
    restorer.net.restorer.forward = lambda *a: calls.append(1) or forward(*a)
    part = restorer._run_tiles(rgb, cond, needed)
    assert len(calls) == 2
    np.testing.assert_array_equal(part[needed], full[needed])


def test_dev_evaluation_judges_the_localizer_without_restoration(weight_files):
    from forgectl.backends.reconwave import ReConWaveBackend
    from forgectl.training.recipe import Recipe

    recipe = training_recipe()
    options = recipe.dev_backend_options(recipe.configs["tiny"])
    assert options == {"restore": "off"} and Recipe.dev_backend_options(recipe, {}) == {}
    # The trainer's dev run must work before any restoration weights exist.
    backend = ReConWaveBackend(
        weights=weight_files["localize"], restore_weights="/nonexistent.safetensors", **options
    )
    check_result(backend, image_from_array(natural_image(40, 56, seed=12)))


def test_exact_inverse_is_exact_where_nothing_clipped_and_marks_the_rest():
    rgb = natural_image(64, 80, seed=24)
    for kind, a, b, disturbed in (
        ("brightness", 0.3, None, brightness(rgb, 0.3)),
        ("brightness", -0.3, None, brightness(rgb, -0.3)),
        ("contrast", None, 0.7, contrast(rgb, 0.7)),
        ("contrast", None, 1.8, contrast(rgb, 1.8)),
    ):
        inv, lost = exact_inverse(disturbed, kind, a, b)
        assert inv.shape == rgb.shape and inv.dtype == np.uint8 and lost.shape == rgb.shape
        err = np.abs(inv.astype(int) - rgb.astype(int))[~lost]
        assert err.max() <= 1  # 8-bit rounding of a gain below 1 merges neighbouring levels
        if kind == "contrast" and b < 1:
            assert not lost.any()
        else:
            assert lost.any()
    same, none_lost = exact_inverse(rgb, "none", None, None)
    np.testing.assert_array_equal(same, rgb)
    assert not none_lost.any()
