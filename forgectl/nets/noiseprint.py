"""Noiseprint-style noise extractor (DnCNN), the camera/processing fingerprint MUN reads.

D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera model fingerprint", IEEE TIFS 2020;
Noiseprint++ as used by TruFor (Guillaro et al., CVPR 2023) and by MUN (Liu et al., AAAI 2025),
whose official code runs a 17-layer DnCNN (3x3 convolutions, 64 channels, BatchNorm in the
middle layers, ReLU, one linear output channel, no residual, no downsampling) on ``rgb / 256``.

:class:`NoiseprintNet` is that network, sized by a config (:data:`NOISEPRINT_CONFIGS`):

* ``paper``: 17 layers x 64 channels (the published Noiseprint++ shape), 0.56 M parameters.
* ``tiny``: 8 layers x 24 channels, 0.03 M parameters, for CPU training and inference.

It is fully convolutional with a receptive field of ``2 * depth + 1`` pixels, so any H, W
works, and in eval mode (BatchNorm on running statistics) an output pixel depends only on the
input pixels within ``depth`` of it: :func:`extract_tiled` computes the full-image noiseprint
tile by tile with ``depth``-pixel margins and gets exactly the full-frame result.

Cost (forward, eval, float32, ``torch.set_num_threads(2)``, 2-core machine shared with other
jobs at load 4-5, so indicative only; wall / CPU seconds, peak RSS from ``/usr/bin/time -v``)::

    config  params  1 MP (1024 x 1024, one pass)     12 MP (4000 x 3000)
    tiny    32 k    5 s / 4 CPU-s, RSS 0.9 GB        tiles of 1024: 70 s / 50 CPU-s, RSS 1.1 GB
                                                     one full pass: 71 s / 49 CPU-s, RSS 4.8 GB
    paper   557 k   32 s / 23 CPU-s, RSS 1.3 GB      not run; ~12 x the 1 MP cost (~4.5 CPU-min),
                                                     tiles of 1024: RSS ~1.5 GB (one tile's
                                                     activations + the 12 MP input and output)

The tiny size was chosen by this measure, in CPU seconds per megapixel on one thread: 8 x 24
costs 2.9 s, 10 x 24 4.5 s, 8 x 32 4.4 s, 10 x 32 6.0 s; 8 layers still see 17 x 17 pixels,
more than one 8 x 8 JPEG block, which is what the grid-phase traces need. Large images should
go through :func:`extract_tiled`: the same result in a quarter of the memory.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

NOISEPRINT_CONFIGS: dict[str, dict[str, Any]] = {
    # As published (Noiseprint++ in TruFor / MUN's npp.pth): 17 layers, 64 channels.
    "paper": {"depth": 17, "channels": 64, "batch_norm": True, "in_channels": 3,
              "out_channels": 1, "input_scale": 256.0, "bn_momentum": 0.1},
    # CPU size: see the module docstring for the measured cost.
    "tiny": {"depth": 8, "channels": 24, "batch_norm": True, "in_channels": 3,
             "out_channels": 1, "input_scale": 256.0, "bn_momentum": 0.1},
}


def noiseprint_config(name: str) -> dict[str, Any]:
    """A deep copy of a named config (``"paper"`` or ``"tiny"``).

    Keys: ``depth`` (3x3 convolutions, >= 2), ``channels`` (hidden width), ``batch_norm``
    (BatchNorm in layers 2..depth-1), ``in_channels`` (3, RGB), ``out_channels`` (1),
    ``input_scale`` (the network reads ``rgb / input_scale``; 256 as Noiseprint++),
    ``bn_momentum``.
    """
    try:
        return copy.deepcopy(NOISEPRINT_CONFIGS[name])
    except KeyError:
        raise ValueError(f"unknown noiseprint config {name!r} "
                         f"(known: {', '.join(NOISEPRINT_CONFIGS)})") from None


class NoiseprintNet(nn.Module):
    """DnCNN noise extractor: ``depth`` 3x3 convolutions, ReLU between, linear output.

    Layer 1: conv (bias) + ReLU; layers 2..depth-1: conv (no bias) + BatchNorm + ReLU; layer
    ``depth``: conv (bias) to ``out_channels``. Zero ("same") padding keeps the size.
    Initialization follows DnCNN (He-normal convolutions, BatchNorm weights drawn the same way).

    Args:
        config: a :func:`noiseprint_config` dict (missing keys take the ``tiny`` values).

    Shapes:
        ``x (B, 3, H, W)`` float, ``rgb / 256`` (values in [0, 1)) -> ``(B, 1, H, W)``.
    """

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        cfg = {**NOISEPRINT_CONFIGS["tiny"], **(config or {})}
        depth, width = int(cfg["depth"]), int(cfg["channels"])
        if depth < 2:
            raise ValueError("noiseprint depth must be >= 2")
        self.depth = depth
        self.input_scale = float(cfg["input_scale"])
        bn = bool(cfg["batch_norm"])
        layers: list[nn.Module] = []
        cin = int(cfg["in_channels"])
        for i in range(depth):
            last = i == depth - 1
            cout = int(cfg["out_channels"]) if last else width
            use_bn = bn and 0 < i < depth - 1
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm2d(cout, momentum=float(cfg["bn_momentum"])))
            if not last:
                layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.layers = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        # DnCNN's initialization (as in the official Noiseprint++ code): N(0, 2 / (k*k*C_out))
        # for convolutions and BatchNorm scales, zero biases.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (9 * m.num_features)))
                nn.init.zeros_(m.bias)

    @property
    def margin(self) -> int:
        """Pixels of context one output pixel needs on each side (the receptive radius)."""
        return self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` rgb / 256 -> ``(B, 1, H, W)`` noiseprint."""
        return self.layers(x)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def rgb_input(rgb: Any, scale: float = 256.0) -> torch.Tensor:
    """(H, W, 3) uint8 (numpy or tensor) -> (1, 3, H, W) float32 ``rgb / scale``."""
    # A copy when the array is read-only (decoded images are): torch needs writable memory.
    t = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(np.array(rgb, copy=True))
    return (t.permute(2, 0, 1).float() / scale).unsqueeze(0).contiguous()


@torch.no_grad()
def extract_tiled(net: NoiseprintNet, x: torch.Tensor, tile: int = 1024) -> torch.Tensor:
    """The noiseprint of a large image, tile by tile, identical to one full-frame pass.

    Each ``tile x tile`` output window is computed from an input window grown by the network's
    receptive radius (``net.margin``) on every side that is inside the image, so it sees the
    same pixels (and, at image borders, the same zero padding) as a full-frame pass: the
    result equals ``net(x)`` in eval mode up to float rounding, with memory bounded by the
    tile size instead of the image size (a 12 MP full-frame pass of the paper config holds
    several GB of 64-channel activations).

    Args:
        net: the extractor, in eval mode (BatchNorm on running statistics).
        x: (B, 3, H, W) ``rgb / 256``. tile: output window side in pixels.

    Returns:
        (B, 1, H, W) float32.
    """
    if net.training:
        raise ValueError("extract_tiled needs the network in eval mode")
    b, _, h, w = x.shape
    m = net.margin
    out = x.new_empty((b, 1, h, w))
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            iy0, ix0 = max(0, y0 - m), max(0, x0 - m)
            iy1, ix1 = min(h, y1 + m), min(w, x1 + m)
            res = net(x[:, :, iy0:iy1, ix0:ix1])
            out[:, :, y0:y1, x0:x1] = res[:, :, y0 - iy0:y1 - iy0, x0 - ix0:x1 - ix0]
    return out


# --------------------------------------------------------------------------- heat map

#: Period of the JPEG block grid: the phase of the noiseprint's 8-periodic component is a
#: local descriptor of the last compression's grid.
_PERIOD = 8


def local_descriptors(residual: torch.Tensor, window: int = 32) -> torch.Tensor:
    """Per-pixel statistics of a noiseprint in a ``window x window`` neighbourhood.

    Six channels: local mean, log local energy ``log(mean(r^2))``, and the local Fourier
    coefficients (cosine, sine) of the 8-pixel period along x and along y, which carry the
    strength and the phase of the block-grid pattern (a region compressed on another grid, or
    not compressed, differs there). Box means use only pixels inside the image.

    Shapes: ``residual (B, 1, H, W)`` -> ``(B, 6, H, W)``.
    """
    b, _, h, w = residual.shape
    r = residual.float()
    ys = torch.arange(h, device=r.device, dtype=r.dtype).view(1, 1, h, 1)
    xs = torch.arange(w, device=r.device, dtype=r.dtype).view(1, 1, 1, w)
    two_pi = 2.0 * math.pi / _PERIOD
    maps = torch.cat([
        r, r * r,
        r * torch.cos(two_pi * xs), r * torch.sin(two_pi * xs),
        r * torch.cos(two_pi * ys), r * torch.sin(two_pi * ys),
    ], dim=1)
    pad = window // 2
    # count_include_pad=False: border pixels average over the pixels that exist, so the image
    # border does not look like a region of low energy.
    pooled = F.avg_pool2d(maps, window + 1 - window % 2, stride=1, padding=pad,
                          count_include_pad=False)
    # A tiny floor: the extractor's output scale is arbitrary (a fresh one is ~1e-5).
    energy = torch.log(pooled[:, 1:2].clamp_min(1e-30))
    return torch.cat([pooled[:, :1], energy, pooled[:, 2:]], dim=1)


def noiseprint_heatmap(residual: torch.Tensor, window: int = 32, z_half: float = 3.0
                       ) -> torch.Tensor:
    """A tamper probability map from a noiseprint: how far each pixel's local statistics are
    from the image's typical (median) statistics, in robust standard deviations.

    Each :func:`local_descriptors` channel is turned into a robust z-score (median and
    1.4826 * MAD over the image), the channels are combined as a root mean square ``z``, and
    ``p = z^2 / (z^2 + z_half^2)`` maps it into [0, 1) with p = 0.5 at ``z = z_half``. The
    untouched part is assumed to be the majority of the image (the median's premise).

    Shapes: ``residual (B, 1, H, W)`` -> ``(B, 1, H, W)`` in [0, 1).
    """
    desc = local_descriptors(residual, window)
    flat = desc.flatten(2)
    med = flat.median(dim=2, keepdim=True).values
    mad = (flat - med).abs().median(dim=2, keepdim=True).values
    # Floors relative to the spread keep a flat descriptor (many equal values, e.g. a constant
    # image) from dividing by zero, whatever the extractor's output scale.
    scale = 1.4826 * mad + 1e-3 * flat.std(dim=2, keepdim=True) + 1e-20
    z2 = (((flat - med) / scale) ** 2).mean(dim=1, keepdim=True)
    prob = z2 / (z2 + z_half ** 2)
    return prob.view(residual.shape[0], 1, *residual.shape[-2:])
