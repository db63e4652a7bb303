"""ReConWave-Net's restoration module: classify the global disturbance, then undo it.

The disturbances (ReConWave-Net, J. Comput. Appl. 2026, 46(6)) act on I in [0, 1]:
brightness ``I' = clip(I + alpha)`` and contrast ``I' = clip(beta * I)``
(:func:`forgectl.analysis.disturbance.brightness` / ``contrast``). Data flow::

    image x (B,3,H,W) in [0,1] --disturbance_features--> thumb (B,3,S,S), stats (B,K)
    DisturbanceClassifier(thumb, stats) -> logits (B,3) [none, brightness, contrast],
                                           alpha (B,) in [-0.6, 0.6], beta (B,) in [0.5, 2.5]
    condition = [softmax(logits), alpha, log beta]                        (B, 5)
    guide = p_none * x + p_bright * clip(x - alpha) + p_contrast * clip(x / beta)
    SwinRestorer(x, guide, condition) -> restored = guide + residual      (B,3,H,W)

Why a guide: where nothing was clipped the inverse formula is exact, so the network only has to
learn what the formula cannot give back (saturated highlights or shadows, 8-bit rounding) and
the classifier's errors; the residual's last convolution starts at zero, so an untrained
restorer *is* the classification-guided inverse.

The classifier sees the whole image (a thumbnail and global statistics: quantiles, clipping
fractions, grey-level histogram and its empty-level fraction — a contrast gain above 1 leaves
every other 8-bit level empty), because a disturbance is global and a crop would mislead it.
The restorer runs on crops or tiles of any size.

Restorer (SwinIR-like): 3x3 conv stem on ``[x, guide]`` -> residual groups of Swin blocks
(windowed multi-head self-attention with a learned relative position bias, every second block
on windows shifted by half a window, with the attention mask that keeps wrapped-around pixels
apart) each ending in a 3x3 conv, FiLM from the condition on every block -> 3x3 conv ->
residual. Any H, W: the input is padded (edge replication) to multiples of the window and the
output cropped.

Configs are data (:data:`RESTORATION_CONFIGS`): ``tiny`` (CPU-trainable) and ``paper``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Classes of the disturbance classifier, in logit order.
DISTURBANCE_CLASSES = ("none", "brightness", "contrast")
#: Ranges of the strength heads (the training ranges lie inside: |alpha| <= 0.6, beta 0.6..2.2).
ALPHA_RANGE = (-0.6, 0.6)
BETA_RANGE = (0.5, 2.5)
#: Quantile levels of the global statistics.
STAT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Long side of the (nearest-neighbour) subsample the statistics are computed on.
STAT_SIDE = 256
CONDITION_DIM = 5

RESTORATION_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "classifier": {"size": 96, "channels": [16, 32, 48, 64], "hidden": 96, "hist_bins": 32},
        "restorer": {"dim": 48, "groups": [2, 2, 2], "heads": 4, "window": 8, "mlp_ratio": 2.0},
    },
    "paper": {
        "classifier": {"size": 128, "channels": [32, 64, 128, 192], "hidden": 256, "hist_bins": 64},
        "restorer": {"dim": 96, "groups": [6, 6, 6, 6], "heads": 6, "window": 8, "mlp_ratio": 2.0},
    },
}


def restoration_config(name: str) -> dict[str, Any]:
    """A deep copy of a named config."""
    try:
        return copy.deepcopy(RESTORATION_CONFIGS[name])
    except KeyError:
        known = ", ".join(RESTORATION_CONFIGS)
        raise ValueError(f"unknown restoration config {name!r} (known: {known})") from None


def _check_image(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected (B, 3, H, W), got {tuple(x.shape)}")


# ====================================================================== classifier


def stats_dim(hist_bins: int) -> int:
    """Length K of the global statistics vector."""
    return len(STAT_QUANTILES) + 7 * 3 + hist_bins


def global_stats(x: torch.Tensor, hist_bins: int) -> torch.Tensor:
    """Disturbance evidence of whole images, computed without learning.

    Per channel: mean, standard deviation, fraction of pixels at 0 and at 255 (clipping by a
    negative / positive shift or a gain), the fraction of *empty* 8-bit levels between the
    darkest and brightest occupied level (a gain above 1 skips levels; below 1 merges them), and
    the darkest and brightest value (most photos reach both ends of the range, so after a shift
    or a gain below 1 the extremes give the strength to about one 8-bit level).
    Pooled over channels: quantiles :data:`STAT_QUANTILES` and a ``hist_bins`` grey-level
    histogram (shares summing to 1).

    Shapes: ``x (B, 3, H, W)`` in [0, 1] -> ``(B, stats_dim(hist_bins))``. The clipping
    fractions use every pixel; the rest a nearest-neighbour subsample of long side
    :data:`STAT_SIDE` (exact pixel values, so saturation and empty levels stay visible).
    """
    _check_image(x, "global_stats")
    if 256 % hist_bins:
        raise ValueError("hist_bins must divide 256")
    b = x.shape[0]
    x = x.detach().float()
    step = max(1, math.ceil(max(x.shape[-2:]) / STAT_SIDE))
    sub = x[..., ::step, ::step].flatten(2)  # (B, 3, n)
    levels = torch.round(sub.clamp(0, 1) * 255).long()
    counts = torch.zeros(b, 3, 256, device=x.device)
    counts.scatter_add_(2, levels, torch.ones_like(sub))
    occupied = counts > 0
    idx = torch.arange(256, device=x.device).expand_as(counts)
    first = torch.where(occupied, idx, 256).amin(dim=2, keepdim=True)
    last = torch.where(occupied, idx, -1).amax(dim=2, keepdim=True)
    inside = (idx >= first) & (idx <= last)
    empty = ((~occupied) & inside).sum(2).float() / inside.sum(2).clamp(min=1).float()
    full = x.flatten(2)
    low = (full <= 0.5 / 255).float().mean(2)
    high = (full >= 254.5 / 255).float().mean(2)
    darkest, brightest = full.amin(2), full.amax(2)
    q = torch.quantile(sub.reshape(b, -1), torch.tensor(STAT_QUANTILES, device=x.device), dim=1)
    hist = counts.sum(1).view(b, hist_bins, 256 // hist_bins).sum(2)
    hist = hist / hist.sum(1, keepdim=True)
    return torch.cat(
        [q.t(), sub.mean(2), sub.std(2, correction=0), low, high, empty, darkest, brightest, hist],
        dim=1,
    )


def disturbance_features(
    x: torch.Tensor, size: int, hist_bins: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thumb, stats)`` the classifier reads: an area-averaged ``size x size`` thumbnail
    (aspect not kept: the classifier looks at tones, not shapes) and :func:`global_stats`.

    Shapes: ``x (B, 3, H, W)`` in [0, 1] -> ``(B, 3, size, size)``, ``(B, K)``.
    """
    _check_image(x, "disturbance_features")
    thumb = F.adaptive_avg_pool2d(x.detach().float(), size)
    return thumb, global_stats(x, hist_bins)


class DisturbanceClassifier(nn.Module):
    """Which disturbance (none / brightness / contrast) and how strong.

    A small CNN on the thumbnail (stride-2 3x3 conv-BN-ReLU stages, global average pool) and
    the statistics vector go through an MLP to 3 class logits and two strengths: ``alpha =
    0.6 tanh(a)`` and ``beta = 0.5 + 2 sigmoid(b)``. Both strengths are always predicted; only
    the one of the predicted class is used.

    Shapes: ``thumb (B, 3, S, S)``, ``stats (B, K)`` -> ``{"logits": (B, 3), "alpha": (B,),
    "beta": (B,)}``.
    """

    def __init__(
        self,
        size: int = 96,
        channels: list[int] | None = None,
        hidden: int = 96,
        hist_bins: int = 32,
    ) -> None:
        super().__init__()
        channels = list(channels or [16, 32, 48, 64])
        self.size, self.hist_bins = int(size), int(hist_bins)
        layers: list[nn.Module] = []
        cin = 3
        for c in channels:
            layers += [
                nn.Conv2d(cin, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            cin = c
        self.cnn = nn.Sequential(*layers)
        k = stats_dim(self.hist_bins)
        self.stats_norm = nn.LayerNorm(k)
        self.mlp = nn.Sequential(
            nn.Linear(cin + k, hidden),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, hidden),
            nn.GELU(),
        )
        self.cls = nn.Linear(hidden, len(DISTURBANCE_CLASSES))
        self.strength = nn.Linear(hidden, 2)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Thumbnail and statistics of whole images (B, 3, H, W) in [0, 1]."""
        return disturbance_features(x, self.size, self.hist_bins)

    def forward(self, thumb: torch.Tensor, stats: torch.Tensor) -> dict[str, torch.Tensor]:
        if thumb.ndim != 4 or stats.shape != (thumb.shape[0], stats_dim(self.hist_bins)):
            raise ValueError(
                f"DisturbanceClassifier: thumb (B, 3, S, S) and stats (B, "
                f"{stats_dim(self.hist_bins)}) expected, got {tuple(thumb.shape)}, "
                f"{tuple(stats.shape)}"
            )
        feat = self.cnn(thumb * 2.0 - 1.0).mean(dim=(2, 3))
        h = self.mlp(torch.cat([feat, self.stats_norm(stats)], dim=1))
        a, b = self.strength(h).unbind(1)
        lo, hi = BETA_RANGE
        return {
            "logits": self.cls(h),
            "alpha": ALPHA_RANGE[1] * torch.tanh(a),
            "beta": lo + (hi - lo) * torch.sigmoid(b),
        }


def condition_from_prediction(out: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, 5) ``[p_none, p_brightness, p_contrast, alpha, log beta]`` from classifier outputs."""
    probs = torch.softmax(out["logits"], dim=1)
    return torch.cat([probs, out["alpha"][:, None], torch.log(out["beta"])[:, None]], dim=1)


def condition_from_truth(
    kind: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor
) -> torch.Tensor:
    """(B, 5) condition of known disturbances (teacher forcing, evaluation with oracle).

    ``kind (B,)`` class indices, ``alpha (B,)`` (ignored unless brightness), ``beta (B,)``
    (ignored unless contrast).
    """
    onehot = F.one_hot(kind.long(), len(DISTURBANCE_CLASSES)).float()
    a = torch.where(kind == 1, alpha.float(), torch.zeros_like(alpha, dtype=torch.float32))
    lb = torch.where(
        kind == 2,
        torch.log(beta.float().clamp(min=1e-3)),
        torch.zeros_like(beta, dtype=torch.float32),
    )
    return torch.cat([onehot, a[:, None], lb[:, None]], dim=1)


def guided_inverse(x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """Probability-weighted inverse of the two disturbances (exact where nothing clipped).

    Shapes: ``x (B, 3, H, W)`` in [0, 1], ``condition (B, 5)`` -> ``(B, 3, H, W)`` in [0, 1].
    """
    p = condition[:, :3].reshape(-1, 3, 1, 1, 1).unbind(1)  # three (B, 1, 1, 1)
    alpha = condition[:, 3].reshape(-1, 1, 1, 1)
    beta = torch.exp(condition[:, 4]).reshape(-1, 1, 1, 1)
    bright = (x - alpha).clamp(0, 1)
    contr = (x / beta).clamp(0, 1)
    return p[0] * x + p[1] * bright + p[2] * contr


# ====================================================================== Swin restorer


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, window * window, C); H and W multiples of ``window``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, -1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B, nW, window * window, C) -> (B, H, W, C)."""
    b, _, _, c = windows.shape
    x = windows.view(b, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


def shifted_window_mask(
    h: int, w: int, window: int, shift: int, device: torch.device
) -> torch.Tensor | None:
    """(nW, N, N) additive mask for windows after a cyclic shift by ``-shift`` (None if 0).

    After ``torch.roll`` the last windows hold pixels from opposite image borders; a pixel may
    only attend to pixels of its own original region (-inf elsewhere, as in Swin).
    """
    if shift == 0:
        return None
    region = torch.zeros(1, h, w, 1, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            region[:, hs, ws, :] = label
            label += 1
    ids = window_partition(region, window)[0, :, :, 0]  # (nW, N)
    same = ids[:, :, None] == ids[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, float("-inf"))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``window x window`` windows with relative position bias.

    The bias is a learned table of ``(2 window - 1)^2`` entries per head, indexed by the
    (dy, dx) offset between two pixels of a window (Swin's parameterization).

    Shapes: ``(B, nW, N, C)`` tokens (N = window^2), mask ``(nW, N, N)`` or None -> same.
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be a multiple of heads {heads}")
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)  # (2, N)
        rel = (coords[:, :, None] - coords[:, None, :]) + (window - 1)  # (2, N, N) in [0, 2w-2]
        index = rel[0] * (2 * window - 1) + rel[1]
        self.register_buffer("bias_index", index, persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (B, nW, heads, N, d)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1).to(q.dtype)  # (heads, N, N)
        # 4-D inputs and a 4-D mask: on CPU, SDPA takes its fused kernel only then (a 3-D mask
        # or 5-D inputs fall back to the math path: 6.6x slower, benchmarks/restore_speed.py).
        flat = [t.reshape(b * nw, self.heads, n, -1) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*flat, attn_mask=bias[None])
        out = out.view(b, nw, self.heads, n, -1)
        if mask is not None:
            # Only the windows of the last window row and column hold pixels from opposite
            # borders (mask != 0); the rest took the shared-bias call above. Redo just those
            # with their own mask rather than build an (nW, heads, N, N) mask for every window.
            masked = (mask != 0).flatten(1).any(1).nonzero()[:, 0]
            attn_mask = bias[None] + mask[masked, None].to(q.dtype)
            out = out.clone()
            for i in range(b):
                out[i, masked] = F.scaled_dot_product_attention(
                    q[i, masked], k[i, masked], v[i, masked], attn_mask=attn_mask
                )
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinBlock(nn.Module):
    """LayerNorm -> FiLM -> (shifted) window attention -> residual; LayerNorm -> MLP -> residual.

    FiLM ``h * (1 + gamma) + beta`` with ``(gamma, beta)`` from the condition embedding (zero-
    initialized, so the block starts unconditioned).

    Shapes: ``x (B, H, W, C)`` (H, W multiples of the window), ``cond (B, C)`` -> ``(B, H, W,
    C)``.
    """

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.film = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        _, h, w, _ = x.shape
        gamma, beta = self.film(cond)[:, None, None, :].chunk(2, dim=-1)
        y = self.norm1(x) * (1 + gamma) + beta
        # A shift only means something when a dimension spans more than one window.
        shift = self.shift if max(h, w) > self.window else 0
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
        mask = shifted_window_mask(h, w, self.window, shift, x.device)
        y = window_merge(self.attn(window_partition(y, self.window), mask), self.window, h, w)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = x + y
        return x + self.mlp(self.norm2(x))


class SwinGroup(nn.Module):
    """Swin blocks alternating unshifted / half-window-shifted windows, a 3x3 conv, residual.

    Shapes: ``x (B, C, H, W)``, ``cond (B, C)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        for block in self.blocks:
            y = block(y, cond)
        return x + self.conv(y.permute(0, 3, 1, 2))


class SwinRestorer(nn.Module):
    """Swin-style restorer conditioned on the disturbance classifier.

    Shapes: ``x (B, 3, H, W)`` disturbed image in [0, 1], ``condition (B, 5)`` ->
    ``(B, 3, H, W)`` restored image (not clipped; callers clip to [0, 1]). Any H, W.
    """

    def __init__(
        self,
        dim: int = 48,
        groups: list[int] | None = None,
        heads: int = 4,
        window: int = 8,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        groups = list(groups or [2, 2, 2])
        self.window = int(window)
        self.stem = nn.Conv2d(6, dim, 3, padding=1)
        self.cond = nn.Sequential(nn.Linear(CONDITION_DIM, dim), nn.GELU(), nn.Linear(dim, dim))
        self.groups = nn.ModuleList(SwinGroup(dim, d, heads, window, mlp_ratio) for d in groups)
        self.norm = nn.GroupNorm(1, dim)
        self.body = nn.Conv2d(dim, dim, 3, padding=1)
        self.out = nn.Conv2d(dim, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        _check_image(x, "SwinRestorer")
        if condition.shape != (x.shape[0], CONDITION_DIM):
            raise ValueError(
                f"condition must be (B, {CONDITION_DIM}), got {tuple(condition.shape)}"
            )
        h, w = x.shape[-2:]
        guide = guided_inverse(x, condition)
        ph, pw = (-h) % self.window, (-w) % self.window
        inp = torch.cat([x, guide], dim=1) * 2.0 - 1.0
        if ph or pw:  # edge replication: any size works, and no artificial black border
            inp = F.pad(inp, (0, pw, 0, ph), mode="replicate")
        cond = self.cond(condition)
        feat = self.stem(inp)
        y = feat
        for group in self.groups:
            y = group(y, cond)
        y = feat + self.body(self.norm(y))
        return guide + self.out(y)[..., :h, :w]


class RestorationNet(nn.Module):
    """Classifier + restorer, the module the restoration weights hold.

    ``forward(x, thumb, stats, condition=None)``: ``x (B, 3, H, W)`` in [0, 1] (a crop or the
    whole image), ``thumb``/``stats`` of the *whole* image (:meth:`DisturbanceClassifier.
    features`); ``condition (B, 5)`` overrides the classifier's (teacher forcing). Returns
    ``{"logits", "alpha", "beta", "condition" (B, 5), "restored" (B, 3, H, W)}``. The
    condition passed to the restorer is detached: the classifier learns from its own losses
    only, not from pixel errors it cannot see.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.classifier = DisturbanceClassifier(**config["classifier"])
        self.restorer = SwinRestorer(**config["restorer"])

    def forward(
        self,
        x: torch.Tensor,
        thumb: torch.Tensor,
        stats: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        _check_image(x, "RestorationNet")
        out = self.classifier(thumb, stats)
        predicted = condition_from_prediction(out)
        cond = predicted if condition is None else condition
        out["condition"] = predicted
        out["restored"] = self.restorer(x, cond.detach())
        return out


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ====================================================================== inference graphs
# What forgectl runs at inference, on both runtimes: the module of an export graph (its
# ``TileRunner`` in PyTorch) and what ``forgectl export`` traces into the ONNX twins
# (``forgectl.backends.restorer``: contract, samples, parity).


class ClassifierGraph(nn.Module):
    """The disturbance classifier on features of a whole image, with the softmax applied.

    Shapes: ``thumb (1, 3, S, S)``, ``stats (1, K)`` (:func:`disturbance_features`) ->
    ``(probabilities (1, 3), alpha (1,), beta (1,), condition (1, 5))``; the condition is
    :func:`condition_from_prediction`'s, the restorer's input format.
    """

    def __init__(self, classifier: DisturbanceClassifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(
        self, thumb: torch.Tensor, stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.classifier(thumb, stats)
        probs = torch.softmax(out["logits"], dim=1)
        return probs, out["alpha"], out["beta"], condition_from_prediction(out)


class RestorerGraph(nn.Module):
    """The Swin restorer on one tile, clipped to [0, 1].

    Shapes: ``image (1, 3, H, W)`` in [0, 1], ``condition (1, 5)`` -> ``(restored (1, 3, H,
    W),)``. Contract: H and W multiples of the window and ``max(H, W) > window`` (the shifted
    blocks shift; the caller pads tiles to that).

    Run eagerly, this is :class:`SwinRestorer` itself (its fused-attention form, the fastest
    in PyTorch). Traced (``forgectl export``), it is :func:`traceable_restorer`, the same
    function in a form a trace keeps general: :class:`SwinRestorer` builds the shifted-window
    mask from Python ints in Python loops and picks the wrapped-around windows with
    ``nonzero``, which a trace would freeze at the trace size. The export's parity check
    compares the two forms on tiles of other sizes.
    """

    def __init__(self, restorer: SwinRestorer) -> None:
        super().__init__()
        self.restorer = restorer

    def forward(self, image: torch.Tensor, condition: torch.Tensor) -> tuple[torch.Tensor]:
        if torch.jit.is_tracing():
            out = traceable_restorer(self.restorer, image, condition)
        else:
            out = self.restorer(image, condition)
        return (out.clamp(0, 1),)


def _windows(y: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, H/w, W/w, w*w, C): :func:`window_partition` with the window grid
    kept as two axes. Only ``unflatten(-1)``/``flatten``, never a size as a Python int (a
    trace would freeze it), so H and W stay symbolic."""
    grid = y.unflatten(1, (-1, window)).unflatten(3, (-1, window))  # (B, nh, w, nw, w, C)
    return grid.permute(0, 1, 3, 2, 4, 5).flatten(3, 4)


def _unwindow(tokens: torch.Tensor, window: int) -> torch.Tensor:
    """Inverse of :func:`_windows`: (B, nh, nw, w*w, C) -> (B, H, W, C)."""
    grid = tokens.unflatten(3, (window, window))  # (B, nh, nw, w, w, C)
    return grid.permute(0, 1, 3, 2, 4, 5).flatten(3, 4).flatten(1, 2)


def _shift_regions(line: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """Region of each position along one axis after the cyclic shift (0 / 1 / 2, the three
    slices of :func:`shifted_window_mask`), from the distance to the last position: tensor
    ops only, so any length traces."""
    to_end = torch.ones_like(line).cumsum(0).flip(0) - 1  # n - 1 - i
    return (to_end < window).to(line.dtype) + (to_end < shift).to(line.dtype)


def traceable_shift_mask(y: torch.Tensor, window: int, shift: int) -> torch.Tensor:
    """:func:`shifted_window_mask` of ``y (B, H, W, C)`` as (H/w, W/w, N, N), computed with
    tensor ops from ``y``'s sizes (0 where two pixels share a region, -inf elsewhere)."""
    rows = _shift_regions(y[0, :, 0, 0], window, shift)
    cols = _shift_regions(y[0, 0, :, 0], window, shift)
    label = rows[:, None] * 3 + cols[None, :]  # (H, W)
    ids = _windows(label[None, :, :, None], window)[0, ..., 0]  # (nh, nw, N)
    same = ids[..., :, None] == ids[..., None, :]
    # torch.where on scalars: zeros_like(same) would be exported with the trace size.
    return torch.where(same, 0.0, float("-inf")).to(ids.dtype)


def traceable_attention(
    attn: WindowAttention, x: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """:class:`WindowAttention` as plain matmuls over every window, the mask (if any) added
    to all of them (it is 0 outside the wrapped-around windows): (B, nh, nw, N, C) -> same."""
    heads = attn.heads
    qkv = attn.qkv(x).unflatten(-1, (3, heads, -1))  # (B, nh, nw, N, 3, heads, d)
    q, k, v = qkv.permute(4, 0, 1, 2, 5, 3, 6).unbind(0)  # each (B, nh, nw, heads, N, d)
    scale = (attn.qkv.out_features // 3 // heads) ** -0.5
    bias = attn.bias_table[attn.bias_index].permute(2, 0, 1)  # (heads, N, N)
    scores = (q @ k.transpose(-2, -1)) * scale + bias
    if mask is not None:
        scores = scores + mask[:, :, None]
    out = torch.softmax(scores, dim=-1) @ v  # (B, nh, nw, heads, N, d)
    return attn.proj(out.transpose(-3, -2).flatten(-2))


def traceable_block(block: SwinBlock, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """:meth:`SwinBlock.forward` for ``max(H, W) > window`` (a shifted block always shifts)."""
    window, shift = block.window, block.shift
    gamma, beta = block.film(cond)[:, None, None, :].chunk(2, dim=-1)
    y = block.norm1(x) * (1 + gamma) + beta
    if shift:
        y = torch.roll(y, (-shift, -shift), dims=(1, 2))
    mask = traceable_shift_mask(y, window, shift) if shift else None
    y = _unwindow(traceable_attention(block.attn, _windows(y, window), mask), window)
    if shift:
        y = torch.roll(y, (shift, shift), dims=(1, 2))
    x = x + y
    return x + block.mlp(block.norm2(x))


def traceable_restorer(
    restorer: SwinRestorer, x: torch.Tensor, condition: torch.Tensor
) -> torch.Tensor:
    """:meth:`SwinRestorer.forward` for :class:`RestorerGraph`'s contract (no padding)."""
    guide = guided_inverse(x, condition)
    cond = restorer.cond(condition)
    feat = restorer.stem(torch.cat([x, guide], dim=1) * 2.0 - 1.0)
    y = feat
    for group in restorer.groups:
        z = y.permute(0, 2, 3, 1)
        for block in group.blocks:
            z = traceable_block(block, z, cond)
        y = y + group.conv(z.permute(0, 3, 1, 2))
    y = feat + restorer.body(traceable_layer_group_norm(restorer.norm, y))
    return guide + restorer.out(y)


def traceable_layer_group_norm(norm: nn.GroupNorm, y: torch.Tensor) -> torch.Tensor:
    """``GroupNorm(1, C)``, its statistics in float64.

    Its statistics span a whole tile (3 M values at 256 x 256 x 48, |y| up to ~200), and
    onnxruntime's float32 reductions (its InstanceNormalization, which the exporter writes
    GroupNorm as, and ReduceMean alike) drift from PyTorch's by ~1e-4 relative there, which
    moves every output pixel; in float64 the ONNX graph stays within ~1e-6 of PyTorch.
    """
    wide = y.double()
    centred = wide - wide.mean(dim=(1, 2, 3), keepdim=True)
    var = (centred * centred).mean(dim=(1, 2, 3), keepdim=True)
    out = (centred / torch.sqrt(var + norm.eps)).to(y.dtype)
    return out * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
