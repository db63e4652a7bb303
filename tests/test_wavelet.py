"""Differentiable 2-D DWT / IDWT: agreement with PyWavelets, perfect reconstruction, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from forgectl.nets.wavelet import BANDS, DWT2, IDWT2, WAVELETS, dwt_pyramid, filter_bank

torch.set_num_threads(1)

SIZES = [(16, 24), (37, 53), (7, 5), (2, 2), (1, 3)]


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("size", SIZES)
def test_matches_pywt_periodization(wavelet, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bands = DWT2(wavelet)(x)
    h, w = -(-size[0] // 2), -(-size[1] // 2)
    assert bands.shape == (2, 3, 4, h, w)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), wavelet, mode="periodization", axes=(-2, -1))
    ref = np.stack([ca, ch, cv, cd], axis=2)  # LL, LH, HL, HH = cA, cH, cV, cD
    np.testing.assert_allclose(bands.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("size", SIZES)
def test_inverse_of_forward_is_identity(wavelet, size):
    x = torch.rand(1, 4, *size, generator=torch.Generator().manual_seed(1))
    y = IDWT2(wavelet)(DWT2(wavelet)(x), size=size)
    assert y.shape == x.shape
    assert float((y - x).abs().max()) < 1e-5  # float32
    x64 = x.double()
    y64 = IDWT2(wavelet)(DWT2(wavelet)(x64), size=size)
    # PyWavelets' tabulated sym4 / bior4.4 filters reconstruct to about 1e-12; Haar is exact.
    assert float((y64 - x64).abs().max()) < (1e-14 if wavelet == "haar" else 1e-10)


def test_even_sizes_need_no_size_argument():
    x = torch.rand(1, 1, 8, 12)
    for wavelet in WAVELETS:
        y = IDWT2(wavelet)(DWT2(wavelet)(x))
        torch.testing.assert_close(y, x, atol=1e-5, rtol=0)


def test_haar_bands_by_hand():
    # Orthonormal Haar: LL = (a + b + c + d) / 2 = 2 x the 2x2 block mean; details differences.
    x = torch.tensor([[1.0, 3.0], [5.0, 11.0]])[None, None]
    ll, lh, hl, hh = DWT2("haar")(x)[0, 0, :, 0, 0].tolist()
    assert ll == pytest.approx(20 / 2)
    assert ll == pytest.approx(2 * x.mean().item())
    # LH: high-pass along H (rows): (top - bottom) / 2 with pywt's sign convention (cH).
    ca, (ch, cv, cd) = pywt.dwt2(x[0, 0].numpy(), "haar", mode="periodization")
    assert (lh, hl, hh) == pytest.approx((ch[0, 0], cv[0, 0], cd[0, 0]))
    assert abs(lh) == pytest.approx(abs((1 + 3) - (5 + 11)) / 2)
    assert abs(hl) == pytest.approx(abs((1 + 5) - (3 + 11)) / 2)
    assert abs(hh) == pytest.approx(abs(1 - 3 - 5 + 11) / 2)
    assert BANDS == ("LL", "LH", "HL", "HH")


def test_odd_size_repeats_the_last_row_and_column():
    x = torch.rand(1, 1, 5, 7)
    padded = torch.cat([x, x[..., -1:, :]], dim=-2)
    padded = torch.cat([padded, padded[..., -1:]], dim=-1)
    torch.testing.assert_close(DWT2("sym4")(x), DWT2("sym4")(padded))


def test_gradients_flow_and_flat_layout():
    dwt = DWT2("bior4.4")
    x = torch.rand(2, 3, 12, 10, requires_grad=True)
    flat = dwt(x, flat=True)
    assert flat.shape == (2, 12, 6, 5)
    torch.testing.assert_close(flat.view(2, 3, 4, 6, 5), dwt(x))  # channel-major
    flat.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    bands = dwt(x.detach()).requires_grad_(True)
    IDWT2("bior4.4")(bands).sum().backward()
    assert bands.grad is not None and bands.grad.abs().sum() > 0


def test_orthogonal_wavelets_preserve_energy():
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    for wavelet in ("haar", "sym4"):
        e = DWT2(wavelet)(x).square().sum()
        torch.testing.assert_close(e, x.square().sum())


def test_pyramid_and_errors():
    x = torch.rand(1, 3, 40, 56)
    levels = dwt_pyramid(DWT2("haar"), x, 3)
    assert [t.shape for t in levels] == [(1, 12, 20, 28), (1, 12, 10, 14), (1, 12, 5, 7)]
    with pytest.raises(ValueError, match="unknown wavelet"):
        DWT2("no-such-wavelet")
    with pytest.raises(ValueError, match="continuous|unknown"):
        filter_bank("morl")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        DWT2()(torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="does not fit"):
        IDWT2()(torch.rand(1, 1, 4, 4, 4), size=(5, 8))
    # Filters are derived from the wavelet name: nothing to store in a state dict.
    assert DWT2("sym4").state_dict() == {}
