"""Loss library: hand-checked values on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from forgectl.training import losses as L

BIG = 30.0  # a logit whose sigmoid is 1 (or 0) to float precision


def masks_4x4() -> tuple[torch.Tensor, torch.Tensor]:
    """Target: the 2x2 top-left block. Prediction: the top row (2 right, 2 wrong)."""
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :2] = 1
    pred = torch.zeros(1, 1, 4, 4)
    pred[..., 0, :] = 1
    return pred, target


def test_bce_at_zero_logits_is_ln2() -> None:
    logits = torch.zeros(2, 1, 3, 3)
    target = torch.randint(0, 2, (2, 1, 3, 3)).float()
    assert L.bce_loss(logits, target).item() == pytest.approx(math.log(2), abs=1e-6)


def test_ce_matches_two_class_bce() -> None:
    logits = torch.tensor([[[[0.3, -1.0]]], [[[2.0, 0.5]]]]).reshape(2, 1, 1, 2)
    target = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]).reshape(2, 1, 1, 2)
    two_class = torch.cat([torch.zeros_like(logits), logits], dim=1)
    ce = L.ce_loss(two_class, target[:, 0].long())
    assert ce.item() == pytest.approx(L.bce_loss(logits, target).item(), abs=1e-6)


def test_dice_perfect_empty_and_half() -> None:
    pred, target = masks_4x4()
    perfect = (target * 2 - 1) * BIG
    assert L.dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.zeros(1, 1, 4, 4)
    # Nothing to find and nothing predicted: perfect, thanks to the smoothing (not 0/0).
    assert L.dice_loss(empty - BIG, empty).item() == pytest.approx(0.0, abs=1e-6)
    # Nothing predicted on 4 manipulated pixels: 1 - 1 / (4 + 1).
    assert L.dice_loss(empty - BIG, target).item() == pytest.approx(0.8, abs=1e-6)
    # p = 0.5 everywhere: intersection 2, sums 8 + 4 -> 1 - (4 + 1) / (12 + 1).
    assert L.dice_loss(empty, target).item() == pytest.approx(8 / 13, abs=1e-6)


def test_dice_per_image_weighs_images_equally() -> None:
    target = torch.zeros(2, 1, 4, 4)
    target[0] = 1  # image 0 fully manipulated, image 1 pristine
    logits = torch.full((2, 1, 4, 4), -BIG)
    logits[0] = BIG
    logits[1, 0, 0, 0] = BIG  # one false pixel on the pristine image
    per_image = L.dice_loss(logits, target, per_image=True).item()
    assert per_image == pytest.approx((0.0 + (1 - 1 / 2)) / 2, abs=1e-5)
    pooled = L.dice_loss(logits, target).item()
    assert pooled == pytest.approx(1 - (2 * 16 + 1) / (17 + 16 + 1), abs=1e-5)  # pooled sums


def test_iou_dce_weight_formula() -> None:
    assert L.iou_dce_weight(1.0).item() == pytest.approx(1.0)
    assert L.iou_dce_weight(0.0).item() == pytest.approx(math.exp(1.5), rel=1e-6)
    assert L.iou_dce_weight(0.5, lam=2.0).item() == pytest.approx(math.e, rel=1e-6)


def test_iou_dce_loss_by_hand() -> None:
    pred, target = masks_4x4()
    logits = (pred * 2 - 1) * 2.0  # sigmoid 0.88 on the predicted row, 0.12 elsewhere
    assert L.batch_iou(logits, target).item() == pytest.approx(2 / 6)
    w = math.exp(1.5 * (1 - 2 / 6))
    p = torch.sigmoid(logits)
    by_hand = -(w * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    assert L.iou_dce_loss(logits, target).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_iou_dce_empty_union_is_plain_bce() -> None:
    empty = torch.zeros(2, 1, 4, 4)
    logits = torch.full((2, 1, 4, 4), -3.0)
    assert L.batch_iou(logits, empty).item() == 1.0  # guarded: no 0/0
    value = L.iou_dce_loss(logits, empty)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(L.bce_loss(logits, empty).item(), rel=1e-6)


def test_iou_dce_iou_is_detached() -> None:
    pred, target = masks_4x4()
    a = ((pred * 2 - 1) * 2.0).requires_grad_(True)
    L.iou_dce_loss(a, target).backward()
    b = ((pred * 2 - 1) * 2.0).requires_grad_(True)
    w = math.exp(1.5 * (1 - 2 / 6))
    F.binary_cross_entropy_with_logits(b, target, pos_weight=torch.tensor(w)).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-7)


def _features(sep: float, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 4, 6, 6) features: pristine pixels near e0, forged near e0 + sep * e1."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3, :3] = 1
    feats = torch.zeros(1, 4, 6, 6)
    feats[:, 0] = 1.0
    feats[:, 1] = sep * mask[:, 0]
    return feats + noise * torch.randn(feats.shape, generator=g), mask


def test_info_nce_pp_by_hand() -> None:
    # Forged pixels orthogonal to pristine ones: positive logit 1/t, negatives 0, 9 of them.
    feats, mask = _features(sep=1.0, noise=0.0)
    feats[:, 0] = 1.0 - mask[:, 0]  # forged = e1, pristine = e0 exactly
    got = L.info_nce_pp(feats, mask, temperature=0.1).item()
    assert got == pytest.approx(math.log(1 + 9 * math.exp(-10)), abs=1e-6)  # float32
    # No separation at all: every logit equal, loss = log(1 + 9).
    same = torch.ones(1, 4, 6, 6)
    assert L.info_nce_pp(same, mask).item() == pytest.approx(math.log(10), rel=1e-5)


def test_info_nce_pp_positive_is_mean_over_other_queries() -> None:
    # Pixels: e0, e0, e1 pristine; -e0 forged. Query e0: others 1 and 0 -> mean 0.5 (self
    # excluded), negative -1. Query e1: others 0, 0 -> 0, negative 0 -> log 2.
    feats = torch.tensor([[1.0, 1.0, 0.0, -1.0], [0.0, 0.0, 1.0, 0.0]]).reshape(1, 2, 1, 4)
    mask = torch.tensor([0.0, 0.0, 0.0, 1.0]).reshape(1, 1, 1, 4)
    e0 = math.log(1 + math.exp(-10 - 5))
    expected = (2 * e0 + math.log(2)) / 3
    assert L.info_nce_pp(feats, mask).item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_pp_lower_when_features_separate_classes() -> None:
    mixed, mask = _features(sep=0.0, noise=0.5)
    separated, _ = _features(sep=3.0, noise=0.5)
    assert L.info_nce_pp(separated, mask).item() < 0.5 * L.info_nce_pp(mixed, mask).item()


def test_info_nce_pp_skips_single_class_images() -> None:
    feats = torch.randn(2, 4, 5, 5, requires_grad=True)
    value = L.info_nce_pp(feats, torch.zeros(2, 1, 5, 5))
    assert value.item() == 0.0
    value.backward()  # still a graph
    assert feats.grad is not None


def test_info_nce_pp_sampling_caps_pixels() -> None:
    feats, mask = _features(sep=2.0, noise=0.3)
    g = torch.Generator().manual_seed(1)
    capped = L.info_nce_pp(feats, mask, max_samples=5, generator=g)
    assert torch.isfinite(capped)


def test_combine_and_mask_loss() -> None:
    a, b = torch.tensor(2.0), torch.tensor(3.0)
    total, logs = L.combine({"main": a, "aux": b}, {"aux": 0.5})
    assert total.item() == pytest.approx(3.5)
    assert logs == {"main": 2.0, "aux": 3.0, "loss": 3.5}
    pred, target = masks_4x4()
    logits = pred * 2 - 1
    total, logs = L.mask_loss({"bce": 1.0, "dice": 2.0}, logits, target)
    expected = L.bce_loss(logits, target) + 2 * L.dice_loss(logits, target)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(logs) == {"bce", "dice", "loss"}
    with pytest.raises(ValueError, match="unknown loss"):
        L.mask_loss({"focal": 1.0}, logits, target)
    with pytest.raises(ValueError, match="non-finite"):
        L.combine({"bad": torch.tensor(float("nan"))})


def test_shape_checks() -> None:
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        L.dice_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="differ"):
        L.bce_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(ValueError, match="info_nce_pp"):
        L.info_nce_pp(torch.zeros(2, 4, 5, 5), torch.zeros(2, 1, 4, 4))
