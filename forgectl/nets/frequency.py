"""Frequency stream on a JPEG file's own quantized DCT coefficients and quantization table.

The design follows the Frequency Perception Head of the Document Tampering Detector (Qu et al.,
CVPR 2023), reused by Omni-IML:

1. ``|coefficient|`` clipped to ``clip`` (20) and one-hot encoded (21 classes);
2. a 3x3 convolution with dilation 8, so its taps read the *same frequency* in neighbouring
   8x8 blocks, then a 1x1 convolution to ``freq_channels``;
3. each of the 64 frequencies of a block is modulated by a learned embedding of its
   quantization step (the same table for every block of the image), and the modulated and
   plain maps are concatenated;
4. an 8x8 stride-8 convolution turns each block into one feature vector (stride 8, aligned
   with the JPEG grid), followed by a few inverted-residual blocks.

Quantization steps index an embedding of ``qt_vocab`` (64) rows; larger steps (low-quality
tables reach 255) are clamped to the last row so no table can index out of range.

Coefficient planes use :class:`forgectl.intake.JpegData`'s layout: block (i, j) at
``[8i:8i+8, 8j:8j+8]`` in natural order. The helpers at the end keep that grid intact under
flips (a mirrored block's coefficients change sign only, and the stream uses magnitudes).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DCT_CLIP = 20
QT_VOCAB = 64


def coefficient_indices(coefficients: np.ndarray, clip: int = DCT_CLIP) -> np.ndarray:
    """(H, W) integer DCT coefficients -> (H, W) uint8 ``min(|c|, clip)``."""
    return np.minimum(np.abs(np.asarray(coefficients, np.int64)), clip).astype(np.uint8)


def onehot_conv_by_lookup(idx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          dilation: int) -> torch.Tensor:
    """``conv2d(one_hot(idx), weight, bias, padding=dilation, dilation=dilation)`` by lookups.

    A convolution of a one-hot map picks, for each tap, the weight column of the class found
    under that tap; so the result is a sum of nine embedding lookups (zero padding is an extra
    class with a zero column). Exact, and about three times faster than the convolution in
    inference; training keeps the convolution, whose backward is faster.

    Shapes: ``idx (B, H, W)`` integer in ``[0, K)``, ``weight (C, K, 3, 3)`` -> ``(B, C, H, W)``.
    """
    b, h, w = idx.shape
    c, k = weight.shape[:2]
    d = dilation
    padded = F.pad(idx.long(), (d, d, d, d), value=k)
    taps = weight.permute(2, 3, 1, 0).reshape(9, k, c)
    table = torch.cat([taps, taps.new_zeros(9, 1, c)], dim=1).reshape(9 * (k + 1), c)
    out = None
    for t in range(9):
        ky, kx = divmod(t, 3)
        shifted = padded[:, ky * d : ky * d + h, kx * d : kx * d + w] + t * (k + 1)
        looked = F.embedding(shifted, table)
        out = looked if out is None else out.add_(looked)
    out = out.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last in memory
    return out if bias is None else out + bias.view(1, -1, 1, 1)


class InvertedResidual(nn.Module):
    """MobileNetV2 block at constant width: 1x1 expand, 3x3 depth-wise, 1x1 project, + input."""

    def __init__(self, channels: int, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.body = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(True),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.ReLU6(True),
            nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FrequencyHead(nn.Module):
    """DCT coefficients + Y quantization table -> block features at stride 8.

    Args:
        out_channels: channels of the output map.
        mid_channels: channels of the dilated convolution (DTD: 64).
        freq_channels: channels per frequency after the 1x1 and width of the quantization-step
            embedding (DTD: 16).
        hidden_channels: channels after the 8x8 block convolution (DTD: 256).
        blocks: inverted-residual blocks at stride 8 (DTD: 3 MBConv).
        clip: coefficient magnitude clip (DTD: 20).
        qt_vocab: rows of the quantization-step embedding (DTD: 64); larger steps are clamped.

    Shapes:
        coefficients ``(B, H, W)`` integer, H and W multiples of 8 (raw signed values or
        magnitudes; they are clipped here); qtable ``(B, 8, 8)`` integer steps;
        output ``(B, out_channels, H / 8, W / 8)``.
    """

    def __init__(
        self, out_channels: int, mid_channels: int = 64, freq_channels: int = 16,
        hidden_channels: int = 256, blocks: int = 3, clip: int = DCT_CLIP,
        qt_vocab: int = QT_VOCAB,
    ) -> None:
        super().__init__()
        self.clip = clip
        self.qt_vocab = qt_vocab
        # A dilated one-hot convolution reads the same frequency in neighbouring blocks.
        self.dilated = nn.Conv2d(clip + 1, mid_channels, 3, padding=8, dilation=8)
        self.post_dilated = nn.Sequential(nn.BatchNorm2d(mid_channels), nn.ReLU(True))
        self.squeeze = nn.Sequential(
            nn.Conv2d(mid_channels, freq_channels, 1, bias=False),
            nn.BatchNorm2d(freq_channels), nn.ReLU(True),
        )
        self.qt_embed = nn.Embedding(qt_vocab, freq_channels)
        self.block_conv = nn.Sequential(
            nn.Conv2d(2 * freq_channels, hidden_channels, 8, stride=8, bias=False),
            nn.BatchNorm2d(hidden_channels), nn.ReLU(True),
            *[InvertedResidual(hidden_channels) for _ in range(blocks)],
        )
        self.project = (
            nn.Identity() if hidden_channels == out_channels
            else nn.Sequential(nn.Conv2d(hidden_channels, out_channels, 1, bias=False),
                               nn.BatchNorm2d(out_channels))
        )
        self.out_channels = out_channels

    def quant_steps(self, qtable: torch.Tensor) -> torch.Tensor:
        """(B, 8, 8) steps -> embedding indices, clamped into ``[0, qt_vocab - 1]``."""
        return qtable.long().clamp(0, self.qt_vocab - 1)

    def forward(self, coefficients: torch.Tensor, qtable: torch.Tensor) -> torch.Tensor:
        if coefficients.ndim != 3 or coefficients.shape[1] % 8 or coefficients.shape[2] % 8:
            raise ValueError(f"coefficients must be (B, 8k, 8m), got {tuple(coefficients.shape)}")
        if qtable.shape[-2:] != (8, 8) or qtable.shape[0] != coefficients.shape[0]:
            raise ValueError(f"qtable must be (B, 8, 8), got {tuple(qtable.shape)}")
        idx = coefficients.long().abs().clamp(max=self.clip)
        conv = self.dilated
        if torch.is_grad_enabled() and conv.weight.requires_grad:
            # One-hot by scatter into a float map: much faster than F.one_hot + permute.
            onehot = torch.zeros(idx.shape[0], self.clip + 1, *idx.shape[1:], device=idx.device)
            onehot.scatter_(1, idx.unsqueeze(1), 1.0)
            x = conv(onehot)
        else:
            x = onehot_conv_by_lookup(idx, conv.weight, conv.bias, conv.dilation[0])
        x = self.squeeze(self.post_dilated(x))  # (B, F, H, W)
        b, c, h, w = x.shape
        q = self.qt_embed(self.quant_steps(qtable))  # (B, 8, 8, F)
        q = q.permute(0, 3, 1, 2).reshape(b, c, 1, 8, 1, 8)
        modulated = (x.view(b, c, h // 8, 8, w // 8, 8) * q).view(b, c, h, w)
        return self.project(self.block_conv(torch.cat([modulated, x], dim=1)))
