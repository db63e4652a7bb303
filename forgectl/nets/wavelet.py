"""Differentiable single-level 2-D discrete wavelet transform (DWT) and its inverse, in torch.

The filter banks are read from PyWavelets (``pywt.Wavelet(name).dec_lo`` etc.) when a module is
built, so any discrete wavelet PyWavelets knows works; ReConWave-Net's ablation uses ``haar``,
``sym4`` and ``bior4.4``. Everything is plain convolution, so gradients flow through both
directions and the transform can sit inside a network trained end to end.

Boundary handling: **periodization** (PyWavelets' ``mode="periodization"``). The signal is
treated as periodic, so an even length N gives exactly N / 2 coefficients per band and the
transform is a square, invertible linear map for orthogonal *and* biorthogonal banks: no
boundary coefficients to carry, and ``idwt(dwt(x)) == x`` up to float rounding. An odd length
is first extended by repeating its last row/column (what PyWavelets does in this mode), giving
``ceil(N / 2)`` coefficients; :meth:`IDWT2.forward` takes the original size and crops the
extension away. The coefficients equal ``pywt.dwt2(x, name, mode="periodization")`` (tested).

Why periodization and not symmetric extension: symmetric modes produce ``floor((N + F - 1) / 2)``
coefficients, so band sizes depend on the filter length F and would not line up with the
encoder's stride-2 feature maps; periodized bands are exactly half size for every wavelet.

Sub-band order along the band axis: ``LL, LH, HL, HH`` = PyWavelets' ``cA, cH, cV, cD``. The
first letter is the filter along the width, the second along the height: ``LH`` (``cH``) is
low-pass along W and high-pass along H, so it responds to horizontal edges; ``HL`` (``cV``) to
vertical edges; ``HH`` (``cD``) to diagonal detail.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Wavelets named in ReConWave-Net's ablation (any other PyWavelets name also works).
WAVELETS = ("haar", "sym4", "bior4.4")
BANDS = ("LL", "LH", "HL", "HH")


def filter_bank(name: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """``(dec_lo, dec_hi, rec_lo, rec_hi)`` of a PyWavelets wavelet (all of the same even length).

    Raises:
        ValueError: unknown name, or a continuous wavelet (no filter bank).
    """
    import pywt

    try:
        w = pywt.Wavelet(name)
    except ValueError:
        raise ValueError(
            f"unknown wavelet {name!r} (e.g. {', '.join(WAVELETS)}; any pywt.wavelist("
            "kind='discrete') name)"
        ) from None
    bank = (list(w.dec_lo), list(w.dec_hi), list(w.rec_lo), list(w.rec_hi))
    lengths = {len(f) for f in bank}
    if len(lengths) != 1 or lengths.pop() % 2:
        raise ValueError(f"wavelet {name!r}: filters of unequal or odd length")
    return bank


def _outer_kernels(f_h: list[torch.Tensor], f_w: list[torch.Tensor]) -> torch.Tensor:
    """(4, F, F) kernels ``k[b] = f_h[b] (x) f_w[b]`` (rows along H, columns along W)."""
    return torch.stack([torch.outer(a, b) for a, b in zip(f_h, f_w, strict=True)])


def _wrap(x: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Periodic extension of ``x`` along ``dim`` by any amount (also wider than the signal,
    which ``F.pad(mode="circular")`` refuses: deep feature maps can be smaller than a filter)."""
    n = x.shape[dim]
    idx = torch.arange(-before, n + after, device=x.device) % n
    return x.index_select(dim, idx)


def _even(x: torch.Tensor) -> torch.Tensor:
    """Repeat the last row / column of an odd-sized (B, C, H, W) map (PyWavelets' rule)."""
    h, w = x.shape[-2:]
    if h % 2:
        x = torch.cat([x, x[..., -1:, :]], dim=-2)
    if w % 2:
        x = torch.cat([x, x[..., :, -1:]], dim=-1)
    return x


class DWT2(nn.Module):
    """Single-level 2-D DWT of every channel (periodization).

    Shapes: ``(B, C, H, W)`` -> ``(B, C, 4, ceil(H / 2), ceil(W / 2))``, bands ``LL, LH, HL,
    HH`` along dim 2. ``flat=True`` in :meth:`forward` returns ``(B, 4 C, h, w)`` instead
    (channel-major: the four bands of channel 0, then of channel 1, ...).

    With filter length F, coefficient ``k`` is ``sum_j f[j] x[(2k + F/2 - j) mod N]`` along each
    axis (PyWavelets' alignment), computed as a stride-2 correlation with the reversed filter
    on a periodic extension of ``F/2 - 1`` samples on both sides.
    """

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        dec_lo, dec_hi, _, _ = filter_bank(wavelet)
        self.wavelet = wavelet
        self.filter_length = len(dec_lo)
        lo = torch.tensor(dec_lo[::-1], dtype=torch.float64)
        hi = torch.tensor(dec_hi[::-1], dtype=torch.float64)
        # Band b filters H with f_h[b] and W with f_w[b]: LL, LH (high along H), HL, HH.
        kernels = _outer_kernels([lo, hi, lo, hi], [lo, lo, hi, hi])
        # Not persistent: the filters follow from the config's wavelet name, not from training.
        # Kept in float64 and cast per call, so double-precision inputs stay exact.
        self.register_buffer("kernels", kernels[:, None], persistent=False)  # (4, 1, F, F)

    def forward(self, x: torch.Tensor, flat: bool = False) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"DWT2 expects (B, C, H, W), got {tuple(x.shape)}")
        b, c = x.shape[:2]
        x = _even(x)
        pad = self.filter_length // 2 - 1
        x = _wrap(_wrap(x, pad, pad, 2), pad, pad, 3)
        # Channels folded into the batch rather than a grouped conv with a kernel repeated C
        # times: same numbers, but the kernel's shape stays fixed, which ONNX export needs.
        folded = x.reshape(b * c, 1, x.shape[-2], x.shape[-1])
        out = F.conv2d(folded, self.kernels.to(x.dtype), stride=2)  # (B C, 4, h, w)
        h, w = out.shape[-2:]
        return out.reshape(b, c * 4, h, w) if flat else out.reshape(b, c, 4, h, w)


class IDWT2(nn.Module):
    """Inverse of :class:`DWT2` (periodization), for orthogonal and biorthogonal banks.

    Shapes: ``(B, C, 4, h, w)`` bands -> ``(B, C, 2h, 2w)``, or ``(B, C, H, W)`` when ``size =
    (H, W)`` is given (odd sizes: the repeated last row/column is cropped).

    Each band is upsampled by inserting zeros and circularly filtered with its synthesis filter;
    ``x[n] = sum_j g[j] u[(n + F/2 - 1 - j) mod N]`` along each axis, summed over the bands.
    """

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        _, _, rec_lo, rec_hi = filter_bank(wavelet)
        self.wavelet = wavelet
        self.filter_length = len(rec_lo)
        lo = torch.tensor(rec_lo[::-1], dtype=torch.float64)
        hi = torch.tensor(rec_hi[::-1], dtype=torch.float64)
        kernels = _outer_kernels([lo, hi, lo, hi], [lo, lo, hi, hi])
        self.register_buffer("kernels", kernels[None], persistent=False)  # (1, 4, F, F)

    def forward(self, bands: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if bands.ndim != 5 or bands.shape[2] != 4:
            raise ValueError(f"IDWT2 expects (B, C, 4, h, w), got {tuple(bands.shape)}")
        b, c, _, h, w = bands.shape
        fits = size is None or (2 * h - 1 <= size[0] <= 2 * h and 2 * w - 1 <= size[1] <= 2 * w)
        if not fits:
            raise ValueError(f"size {tuple(size)} does not fit bands of {h} x {w}")
        up = bands.new_zeros(b, c * 4, 2 * h, 2 * w)
        up[..., ::2, ::2] = bands.reshape(b, c * 4, h, w)
        half = self.filter_length // 2
        up = _wrap(_wrap(up, half, half - 1, 2), half, half - 1, 3)
        folded = up.reshape(b * c, 4, up.shape[-2], up.shape[-1])
        out = F.conv2d(folded, self.kernels.to(up.dtype))  # (B C, 1, H, W): sums the bands
        out = out.reshape(b, c, out.shape[-2], out.shape[-1])
        if size is not None:
            out = out[..., : size[0], : size[1]]
        return out


def dwt_pyramid(dwt: DWT2, x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Bands of ``levels`` successive DWTs of the low-pass image (level k at stride 2^k).

    Shapes: ``x (B, C, H, W)`` -> ``[(B, 4 C, ceil(H / 2^k), ceil(W / 2^k)) for k = 1..levels]``
    (each flat, channel-major; level k+1 is the DWT of level k's LL).
    """
    out = []
    low = x
    for _ in range(levels):
        bands = dwt(low)
        out.append(bands.flatten(1, 2))
        low = bands[:, :, 0]
    return out
