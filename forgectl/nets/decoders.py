"""Decoders: pyramid pooling + FPN, and Omni-IML's Dynamic Weight Decoder.

Every decoder takes a list of encoder maps ``[(B, C_i, H / s_i, W / s_i)]`` ordered from fine
to coarse (strides ``s_i`` doubling) and returns logits at the finest stride; callers upsample.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from forgectl.nets.attention import conv_bn_relu


def resize_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to ``ref``'s spatial size."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling: average-pool to ``bins`` grids, project, upsample, concat, fuse.

    Shapes: ``(B, C, H, W)`` -> ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6)
                 ) -> None:
        super().__init__()
        self.bins = tuple(bins)
        # No BatchNorm after 1x1 pooling: a (B, C, 1, 1) map gives BN one value per channel.
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))
            for _ in self.bins
        )
        self.fuse = conv_bn_relu(in_channels + len(self.bins) * out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [resize_to(branch(F.adaptive_avg_pool2d(x, b)), x)
                  for b, branch in zip(self.bins, self.branches, strict=True)]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class FeaturePyramid(nn.Module):
    """UPerNet-style FPN: pyramid pooling on the coarsest map, lateral 1x1s, top-down sum, 3x3s.

    Shapes: ``[(B, C_i, H / s_i, W / s_i)]`` (fine to coarse) -> ``[(B, D, H / s_i, W / s_i)]``.
    """

    def __init__(self, in_channels: list[int], channels: int,
                 ppm_bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels, ppm_bins)
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        top = self.ppm(feats[-1])
        outs = [top]
        for i in range(len(feats) - 2, -1, -1):
            top = self.lateral[i](feats[i]) + resize_to(top, feats[i])
            outs.insert(0, self.smooth[i](top))
        return outs


class DynamicWeightFilter(nn.Module):
    """Depth-wise filters whose weights are mixed per sample from ``num_basis`` learned bases.

    ``alpha = sigmoid(FC([mean(x), g]))`` (B, num_basis) mixes the basis kernels (and biases)
    into one depth-wise kernel per sample; the mixed dilated convolution is followed by a 1x1,
    BatchNorm and ReLU, and added to the input. Mixing kernels rather than outputs costs one
    depth-wise convolution instead of ``num_basis`` (the result is the same, by linearity).

    Shapes: ``x (B, C, H, W)``, ``g (B, G)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, global_dim: int, dilation: int, num_basis: int = 4,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.dilation = dilation
        self.kernel_size = kernel_size
        basis = torch.empty(num_basis, channels, 1, kernel_size, kernel_size)
        for k in range(num_basis):
            nn.init.kaiming_uniform_(basis[k], a=5 ** 0.5)
        self.basis = nn.Parameter(basis)
        self.basis_bias = nn.Parameter(torch.zeros(num_basis, channels))
        self.mixer = nn.Linear(channels + global_dim, num_basis)
        self.pointwise = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def mixing(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(B, num_basis) mixing coefficients in (0, 1)."""
        return torch.sigmoid(self.mixer(torch.cat([x.mean(dim=(2, 3)), g], dim=1)))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        alpha = self.mixing(x, g)
        kernel = torch.einsum("bn,nckij->bckij", alpha, self.basis)
        kernel = kernel.reshape(b * c, 1, self.kernel_size, self.kernel_size)
        bias = (alpha @ self.basis_bias).reshape(b * c)
        pad = self.dilation * (self.kernel_size // 2)
        # One grouped convolution over the batch folded into channels: per-sample kernels.
        y = F.conv2d(x.reshape(1, b * c, h, w), kernel, bias, padding=pad,
                     dilation=self.dilation, groups=b * c).view(b, c, h, w)
        return x + self.pointwise(y)


class DynamicWeightDecoder(nn.Module):
    """Omni-IML's decoder: FPN maps F1..F4, a coarse mask refined by dynamic-weight filters.

    1. ``F1..F4 = FPN(PPM)`` over the encoder maps (D channels each).
    2. ``g = FC(mean(F4))``: a global vector describing the whole image.
    3. A coarse mask is predicted from F1; its probability map goes through a small CNN and is
       added to the fusion of F1..F4 (all at F1's stride).
    4. Dynamic-weight filters at dilations 2, 3 and 6 refine the result; a 1x1 gives logits.

    Shapes: encoder maps fine to coarse -> ``{"mask": (B, 1, H1, W1), "coarse": (B, 1, H1, W1)}``
    logits at the finest input's stride.
    """

    def __init__(self, in_channels: list[int], channels: int = 64,
                 ppm_bins: tuple[int, ...] = (1, 2, 3, 6), dilations: tuple[int, ...] = (2, 3, 6),
                 num_basis: int = 4, global_dim: int | None = None) -> None:
        super().__init__()
        global_dim = global_dim or channels
        self.fpn = FeaturePyramid(in_channels, channels, ppm_bins)
        self.global_fc = nn.Sequential(nn.Linear(channels, global_dim), nn.ReLU(inplace=True))
        self.fuse = conv_bn_relu(channels * len(in_channels), channels, 1)
        self.coarse_head = nn.Sequential(conv_bn_relu(channels, channels, 3),
                                         nn.Conv2d(channels, 1, 1))
        mask_mid = max(8, channels // 4)
        self.mask_embed = nn.Sequential(
            conv_bn_relu(1, mask_mid, 3), conv_bn_relu(mask_mid, channels, 3),
        )
        self.filters = nn.ModuleList(
            DynamicWeightFilter(channels, global_dim, d, num_basis) for d in dilations
        )
        self.classifier = nn.Conv2d(channels, 1, 1)

    def forward(self, feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        pyramid = self.fpn(feats)
        f1 = pyramid[0]
        g = self.global_fc(pyramid[-1].mean(dim=(2, 3)))
        coarse = self.coarse_head(f1)
        x = self.fuse(torch.cat([f1, *[resize_to(p, f1) for p in pyramid[1:]]], dim=1))
        x = x + self.mask_embed(torch.sigmoid(coarse))
        for layer in self.filters:
            x = layer(x, g)
        return {"mask": self.classifier(x), "coarse": coarse}
