"""Attention blocks: channel-spatial fusion of two streams, query attention, anomaly enhancement."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1,
                 groups: int = 1) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU with 'same' padding for odd kernels."""
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, groups=groups,
                  bias=False),
        nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class ChannelSpatialAttention(nn.Module):
    """Fuse two maps of the same size: concat, 1x1, channel attention, then spatial attention.

    Channel attention weighs channels from average- and max-pooled descriptors through a shared
    bottleneck MLP; spatial attention weighs positions from the channel mean and max through a
    7x7 convolution (CBAM order). The first input is added back, so the fusion starts close to
    the visual stream and learns how much frequency evidence to let in.

    Shapes: ``a (B, Ca, H, W)``, ``b (B, Cb, H, W)`` -> ``(B, out_channels, H, W)``
    (``out_channels`` must equal ``Ca``).
    """

    def __init__(self, a_channels: int, b_channels: int, out_channels: int,
                 reduction: int = 4) -> None:
        super().__init__()
        if out_channels != a_channels:
            raise ValueError("out_channels must equal the first input's channels (residual)")
        hidden = max(8, out_channels // reduction)
        self.merge = conv_bn_relu(a_channels + b_channels, out_channels, k=1)
        self.channel_mlp = nn.Sequential(
            nn.Conv2d(out_channels, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1),
        )
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.shape[-2:] != b.shape[-2:] or a.shape[0] != b.shape[0]:
            raise ValueError(f"inputs differ in size: {tuple(a.shape)} vs {tuple(b.shape)}")
        x = self.merge(torch.cat([a, b], dim=1))
        avg = F.adaptive_avg_pool2d(x, 1)
        mx = F.adaptive_max_pool2d(x, 1)
        x = x * torch.sigmoid(self.channel_mlp(avg) + self.channel_mlp(mx))
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        x = x * torch.sigmoid(self.spatial(desc))
        return a + x


class QueryAttention(nn.Module):
    """Learnable queries gather evidence from a feature map; each position then reads them back.

    Step 1 (gather): ``num_queries`` learned vectors cross-attend to the map's positions and go
    through an MLP, so each query can specialise on one kind of anomaly. Step 2 (broadcast):
    every position cross-attends to the updated queries. The result is an enhancement the caller
    adds to the map; the last projection starts at zero so the block begins as the identity.

    Shapes: ``(B, C, H, W)`` -> ``(B, C, H, W)`` (the enhancement, not the sum).
    """

    def __init__(self, channels: int, dim: int = 64, num_queries: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.inp = nn.Conv2d(channels, dim, 1)
        self.norm_tokens = nn.LayerNorm(dim)
        self.gather = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm_q2 = nn.LayerNorm(dim)
        self.broadcast = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Conv2d(dim, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.norm_tokens(self.inp(x).flatten(2).transpose(1, 2))  # (B, HW, D)
        q = self.queries.unsqueeze(0).expand(b, -1, -1)
        q = q + self.gather(q, tokens, tokens, need_weights=False)[0]
        q = q + self.mlp(self.norm_q(q))
        q = self.norm_q2(q)
        read = self.broadcast(tokens, q, q, need_weights=False)[0]  # (B, HW, D)
        return self.out(read.transpose(1, 2).reshape(b, -1, h, w))


class AnomalyEnhancement(nn.Module):
    """Query attention on two middle scales, added back to each and fused across them.

    ``fine`` is at stride s, ``coarse`` at stride 2s. Each gets its own query attention; the
    enhancement of each scale is also passed (projected, resized) to the other, so both
    outputs carry evidence from both scales.

    Shapes: ``fine (B, Cf, H, W)``, ``coarse (B, Cc, H/2, W/2)`` -> same shapes.
    """

    def __init__(self, fine_channels: int, coarse_channels: int, dim: int = 64,
                 num_queries: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.attend_fine = QueryAttention(fine_channels, dim, num_queries, heads)
        self.attend_coarse = QueryAttention(coarse_channels, dim, num_queries, heads)
        self.coarse_to_fine = nn.Conv2d(coarse_channels, fine_channels, 1)
        self.fine_to_coarse = nn.Conv2d(fine_channels, coarse_channels, 3, stride=2, padding=1)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        e_fine = self.attend_fine(fine)
        e_coarse = self.attend_coarse(coarse)
        up = F.interpolate(self.coarse_to_fine(e_coarse), size=fine.shape[-2:], mode="bilinear",
                           align_corners=False)
        down = self.fine_to_coarse(e_fine)
        return fine + e_fine + up, coarse + e_coarse + down


class SelfCorrelation(nn.Module):
    """Copy-move evidence: how well each position matches some *other* place in the same map.

    A copy-moved region is a second instance of content found elsewhere in the image, which a
    per-position network cannot see; matching can (BusterNet, Wu et al. 2018, "self-correlation
    + percentile pooling"). Features are projected to ``dim`` channels and L2-normalized, every
    position is compared with every other by cosine similarity, positions within ``exclude``
    cells (Chebyshev distance) are masked out (a smooth neighbourhood matches itself), and the
    ``k`` best similarities per position, sorted, are the evidence. A small conv head turns
    them into a residual on the input; its last conv starts at zero, so the module is the
    identity when added to trained weights and learns from there.

    The neighbourhood mask is built from cumulative sums over the input itself (no shape
    arithmetic), so a traced ONNX graph keeps it dynamic in H and W.

    Shapes: ``x`` (B, C, H, W) -> (B, C, H, W). Memory is (B, H*W, H*W) floats.
    """

    def __init__(self, channels: int, dim: int = 64, k: int = 8, exclude: int = 2,
                 hidden: int = 32) -> None:
        super().__init__()
        if k < 1 or exclude < 0:
            raise ValueError(f"need k >= 1 and exclude >= 0, got k={k}, exclude={exclude}")
        self.k, self.exclude = int(k), int(exclude)
        self.proj = nn.Conv2d(channels, dim, 1)
        self.head = nn.Sequential(conv_bn_relu(self.k, hidden, 3),
                                  nn.Conv2d(hidden, channels, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def best_matches(self, x: torch.Tensor) -> torch.Tensor:
        """The ``k`` best cosine similarities of each position outside its neighbourhood,
        descending: (B, k, H, W) in [-1, 1] (-1 where fewer than ``k`` positions remain)."""
        b, _, h, w = x.shape
        feats = F.normalize(self.proj(x).flatten(2), dim=1)  # (B, D, N)
        sim = torch.bmm(feats.transpose(1, 2), feats)  # (B, N, N)
        ones = torch.ones_like(x[:1, :1])
        ys = ones.cumsum(2).flatten()
        xs = ones.cumsum(3).flatten()
        near = ((ys[:, None] - ys[None, :]).abs() <= self.exclude) & (
            (xs[:, None] - xs[None, :]).abs() <= self.exclude)
        sim = sim.masked_fill(near, -1.0)
        # k columns of -1 so that top-k is defined on maps with fewer than k far positions.
        top = F.pad(sim, (0, self.k), value=-1.0).topk(self.k, dim=2).values  # (B, N, k)
        return top.transpose(1, 2).reshape(b, self.k, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.head(self.best_matches(x))
