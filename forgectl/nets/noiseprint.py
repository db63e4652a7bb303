"""Noiseprint-style noise extractor (DnCNN), the camera/processing fingerprint MUN reads.

D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera model fingerprint", IEEE TIFS 2020;
Noiseprint++ as used by TruFor (Guillaro et al., CVPR 2023) and by MUN (Liu et al., AAAI 2025),
whose official code runs a 17-layer DnCNN (3x3 convolutions, 64 channels, BatchNorm in the
middle layers, ReLU, one linear output channel, no residual, no downsampling) on ``rgb / 256``.

:class:`NoiseprintNet` is that network, sized by a config (:data:`NOISEPRINT_CONFIGS`):

* ``paper``: 17 layers x 64 channels (the published Noiseprint++ shape), 0.56 M parameters.
* ``tiny``: 8 layers x 24 channels, 0.03 M parameters, for CPU training and inference.
* ``highpass``: no learned layers, the grey image minus its 3x3 mean (the baseline the
  extractor's check measures it against), for MUN's ``tiny-highpass`` config.
* ``tiny-residual``: the ``tiny`` layers *added to* that high-pass residual (times
  ``highpass_gain`` 64, which puts it at the trained ``tiny`` output's scale: median std 0.019
  against 1.07 on corpus crops), last layer zero-initialised, so training starts from the
  baseline and learns a correction to it.

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
from torch import nn

from forgectl.analysis.jpeg import LUMA_WEIGHTS
from forgectl.analysis.noiseprint import EXTRACTION_TILE, receptive_windows
from forgectl.analysis.noiseprint import local_descriptors as np_local_descriptors
from forgectl.analysis.noiseprint import noiseprint_heatmap as np_noiseprint_heatmap

NOISEPRINT_CONFIGS: dict[str, dict[str, Any]] = {
    # As published (Noiseprint++ in TruFor / MUN's npp.pth): 17 layers, 64 channels.
    "paper": {"depth": 17, "channels": 64, "batch_norm": True, "in_channels": 3,
              "out_channels": 1, "input_scale": 256.0, "bn_momentum": 0.1},
    # CPU size: see the module docstring for the measured cost.
    "tiny": {"depth": 8, "channels": 24, "batch_norm": True, "in_channels": 3,
             "out_channels": 1, "input_scale": 256.0, "bn_momentum": 0.1},
    # No learned layers: the grey image minus its 3x3 mean (the baseline its check measures
    # the extractor against), for MUN's high-pass config. Nothing to train or load.
    "highpass": {"depth": 0, "channels": 0, "batch_norm": False, "in_channels": 3,
                 "out_channels": 1, "input_scale": 256.0, "bn_momentum": 0.1,
                 "highpass": True},
    # The tiny layers learn a correction to the (scaled) high-pass residual, from zero.
    "tiny-residual": {"depth": 8, "channels": 24, "batch_norm": True, "in_channels": 3,
                      "out_channels": 1, "input_scale": 256.0, "bn_momentum": 0.1,
                      "highpass": True, "highpass_gain": 64.0},
}


def noiseprint_config(name: str) -> dict[str, Any]:
    """A deep copy of a named config (a key of :data:`NOISEPRINT_CONFIGS`).

    Keys: ``depth`` (3x3 convolutions, >= 2, or 0 with ``highpass``), ``channels`` (hidden
    width), ``batch_norm`` (BatchNorm in layers 2..depth-1), ``in_channels`` (3, RGB),
    ``out_channels`` (1), ``input_scale`` (the network reads ``rgb / input_scale``; 256 as
    Noiseprint++), ``bn_momentum``, ``highpass`` (add the fixed residual grey - 3x3 mean of
    grey; default False), ``highpass_gain`` (its factor; default 1).
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
        self.highpass = bool(cfg.get("highpass", False))
        self.highpass_gain = float(cfg.get("highpass_gain", 1.0))
        if depth < 2 and not (depth == 0 and self.highpass):
            raise ValueError("noiseprint depth must be >= 2 (or 0 for the fixed high-pass)")
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
        if self.highpass and depth:
            # Learned layers over the residual start at zero: the untrained extractor is the
            # baseline, and training can only move it away where the loss asks.
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)

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
        return max(self.depth, 1) if self.highpass else self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` rgb / 256 -> ``(B, 1, H, W)`` noiseprint."""
        if not self.highpass:
            return self.layers(x)
        wr, wg, wb = LUMA_WEIGHTS
        grey = wr * x[:, 0:1] + wg * x[:, 1:2] + wb * x[:, 2:3]
        # Replicated borders: a tile whose window reaches the image border pads as one pass.
        mean = nn.functional.avg_pool2d(
            nn.functional.pad(grey, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        residual = (grey - mean) * self.highpass_gain
        return residual if self.depth == 0 else self.layers(x) + residual


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def rgb_input(rgb: Any, scale: float = 256.0) -> torch.Tensor:
    """(H, W, 3) uint8 (numpy or tensor) -> (1, 3, H, W) float32 ``rgb / scale``."""
    # A copy when the array is read-only (decoded images are): torch needs writable memory.
    t = rgb if isinstance(rgb, torch.Tensor) else torch.from_numpy(np.array(rgb, copy=True))
    return (t.permute(2, 0, 1).float() / scale).unsqueeze(0).contiguous()


@torch.no_grad()
def extract_tiled(net: NoiseprintNet, x: torch.Tensor, tile: int = EXTRACTION_TILE
                  ) -> torch.Tensor:
    """The noiseprint of a large image, tile by tile, identical to one full-frame pass.

    Each ``tile x tile`` output window is computed from an input window grown by the network's
    receptive radius (``net.margin``) on every side that is inside the image
    (:func:`forgectl.analysis.noiseprint.receptive_windows`, the windows the backend's
    runtime-agnostic numpy loop uses too), so it sees the same pixels (and, at image borders,
    the same zero padding) as a full-frame pass: the result equals ``net(x)`` in eval mode up
    to float rounding, with memory bounded by the tile size instead of the image size (a
    12 MP full-frame pass of the paper config holds several GB of 64-channel activations).

    Args:
        net: the extractor, in eval mode (BatchNorm on running statistics).
        x: (B, 3, H, W) ``rgb / 256``. tile: output window side in pixels.

    Returns:
        (B, 1, H, W) float32.
    """
    if net.training:
        raise ValueError("extract_tiled needs the network in eval mode")
    b, _, h, w = x.shape
    out = x.new_empty((b, 1, h, w))
    for (oy, ox), (iy, ix), (cy, cx) in receptive_windows(h, w, tile, net.margin):
        out[:, :, oy, ox] = net(x[:, :, iy, ix])[:, :, cy, cx]
    return out


# --------------------------------------------------------------------------- heat map
# The formulas live in numpy (forgectl.analysis.noiseprint), where the torch-free inference
# path can use them; these wrappers keep the tensor interface of the training recipe's
# validation and the benchmarks, so every caller computes the very same map.


def local_descriptors(residual: torch.Tensor, window: int = 32) -> torch.Tensor:
    """:func:`forgectl.analysis.noiseprint.local_descriptors` per sample: six channels of
    local statistics (mean, log energy, 8-periodic Fourier terms along x and y).

    Shapes: ``residual (B, 1, H, W)`` -> ``(B, 6, H, W)``.
    """
    r = residual.detach().float().cpu().numpy()
    out = np.stack([np_local_descriptors(r[i, 0], window) for i in range(r.shape[0])])
    return torch.from_numpy(out).to(residual.device)


def noiseprint_heatmap(residual: torch.Tensor, window: int = 32, z_half: float = 3.0
                       ) -> torch.Tensor:
    """:func:`forgectl.analysis.noiseprint.noiseprint_heatmap` per sample: a tamper
    probability map from a noiseprint (robust z-scores of local statistics against the
    image's median, ``p = z^2 / (z^2 + z_half^2)``).

    Shapes: ``residual (B, 1, H, W)`` -> ``(B, 1, H, W)`` in [0, 1).
    """
    r = residual.detach().float().cpu().numpy()
    out = np.stack([np_noiseprint_heatmap(r[i, 0], window, z_half) for i in range(r.shape[0])])
    return torch.from_numpy(out[:, None]).to(residual.device)
