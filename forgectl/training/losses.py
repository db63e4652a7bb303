"""Losses shared by the learned methods: cross-entropy, Dice, IoUDCE (MUN), InfoNCE++ (FOCAL).

Every loss takes raw network outputs (logits or features) and returns a scalar tensor. Shapes
follow kornia's convention: ``(B, C, H, W)`` for maps, ``(B, 1, H, W)`` for binary masks with
1 = manipulated. Targets may be float {0, 1} masks; values >= 0.5 count as manipulated where a
hard label is needed.

Configs as data: a recipe names its mask losses and their weights in its config
(``{"bce": 1.0, "dice": 1.0}``) and calls :func:`mask_loss`; auxiliary heads (edge maps, box
heads, a gate classifier) add their own terms with :func:`combine`, which also produces the
named float logs the trainer writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "bce_loss",
    "batch_iou",
    "ce_loss",
    "combine",
    "dice_loss",
    "info_nce_pp",
    "iou_dce_loss",
    "iou_dce_weight",
    "mask_loss",
]


def _check_binary(logits: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"{name}: logits must be (B, 1, H, W), got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(
            f"{name}: target {tuple(target.shape)} and logits {tuple(logits.shape)} differ"
        )


def bce_loss(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float | torch.Tensor | None = None
) -> torch.Tensor:
    """Binary cross-entropy on logits, mean over pixels.

    Args:
        logits: (B, 1, H, W) raw scores. target: (B, 1, H, W) in {0, 1} (soft values allowed).
        pos_weight: factor on the loss of manipulated pixels (a float or 0-d tensor).

    Returns:
        0-d tensor.
    """
    _check_binary(logits, target, "bce_loss")
    weight = None
    if pos_weight is not None:
        weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=weight)


def ce_loss(
    logits: torch.Tensor, target: torch.Tensor, class_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Multi-class cross-entropy, mean over pixels.

    Args:
        logits: (B, C, H, W). target: (B, H, W) integer class indices in [0, C).
        class_weight: (C,) optional per-class weights (PyTorch's weighted mean).

    Returns:
        0-d tensor.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"ce_loss: logits (B, C, H, W) and target (B, H, W) expected, got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    return F.cross_entropy(logits, target.long(), weight=class_weight)


def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, per_image: bool = False
) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum(p t) + s) / (sum(p) + sum(t) + s)`` with p = sigmoid(logits).

    The smoothing ``s`` makes an empty prediction on an empty mask a perfect score (loss 0)
    instead of 0/0.

    Args:
        logits: (B, 1, H, W). target: (B, 1, H, W) in {0, 1}.
        smooth: additive smoothing of numerator and denominator.
        per_image: Dice per image then averaged (each image counts once); else over the batch.

    Returns:
        0-d tensor in [0, 1].
    """
    _check_binary(logits, target, "dice_loss")
    prob = torch.sigmoid(logits)
    target = target.to(prob.dtype)
    dims = (1, 2, 3) if per_image else (0, 1, 2, 3)
    inter = (prob * target).sum(dim=dims)
    total = prob.sum(dim=dims) + target.sum(dim=dims)
    return (1.0 - (2.0 * inter + smooth) / (total + smooth)).mean()


def batch_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU of the thresholded prediction with the mask, pooled over the whole batch.

    Args:
        logits: (B, 1, H, W). target: (B, 1, H, W). threshold: on ``sigmoid(logits)``.

    Returns:
        0-d tensor in [0, 1], detached. An empty union (nothing to find, nothing predicted)
        counts as IoU 1: the prediction is perfect, so there is nothing to re-weight.
    """
    with torch.no_grad():
        pred = torch.sigmoid(logits) >= threshold
        gt = target >= 0.5
        inter = (pred & gt).sum().float()
        union = (pred | gt).sum().float()
        if union.item() == 0:
            return torch.ones((), device=logits.device)
        return inter / union


def iou_dce_weight(iou: float | torch.Tensor, lam: float = 1.5) -> torch.Tensor:
    """MUN's positive weight ``exp(lam * (1 - IoU))``: 1 when IoU = 1, e^lam when IoU = 0."""
    iou_t = torch.as_tensor(iou, dtype=torch.float32)
    return torch.exp(lam * (1.0 - iou_t.clamp(0.0, 1.0)))


def iou_dce_loss(
    logits: torch.Tensor, target: torch.Tensor, lam: float = 1.5, threshold: float = 0.5
) -> torch.Tensor:
    """IoU-recalibrated dynamic cross-entropy (MUN, AAAI 2025).

    Binary cross-entropy whose manipulated pixels are weighted by ``exp(lam * (1 - IoU))``,
    with IoU the batch IoU of the current thresholded prediction (:func:`batch_iou`, detached:
    the weight steers the loss, it is not optimized itself). A poor overlap raises the weight of
    the forged region; a good one relaxes it toward plain cross-entropy. ``lam = 1.5`` as in the
    official code. Reduction: mean over all pixels (as ``pos_weight`` in PyTorch's BCE); the
    official code's exact normalization is not reproduced here.

    Args:
        logits: (B, 1, H, W). target: (B, 1, H, W) in {0, 1}.

    Returns:
        0-d tensor.
    """
    _check_binary(logits, target, "iou_dce_loss")
    weight = iou_dce_weight(batch_iou(logits, target, threshold), lam).to(logits.device)
    return bce_loss(logits, target, pos_weight=weight)


def info_nce_pp(
    features: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 0.1,
    max_samples: int = 1000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE++ of FOCAL (Wu, Chen, Zhou, ICCV 2023): pixel contrast inside each image.

    "Forged" and "pristine" only mean something relative to one image, so the loss is computed
    per image and averaged. As in the official code: features are L2-normalized; the pristine
    pixels are the queries and the forged pixels the negatives (at most ``max_samples`` of
    each, drawn at random); a query's positive logit is its *mean* cosine similarity to the
    other queries, its negative logits are its similarities to every negative; cross-entropy
    with the positive as the target, logits divided by ``temperature``. Images whose mask is
    empty or full have no contrast and are skipped.

    Args:
        features: (B, C, h, w) pixel embeddings. mask: (B, 1, h, w) in {0, 1} on the same grid.
        temperature: 0.1 in the paper. max_samples: pixels drawn per class per image.
        generator: for the random draw (reproducible training).

    Returns:
        0-d tensor; 0 (with a gradient path) when no image in the batch has both classes.
    """
    if features.ndim != 4 or mask.shape != (features.shape[0], 1, *features.shape[2:]):
        raise ValueError(
            f"info_nce_pp: features (B, C, h, w) and mask (B, 1, h, w) expected, got "
            f"{tuple(features.shape)} and {tuple(mask.shape)}"
        )
    feats = F.normalize(features, dim=1)
    losses = []
    for b in range(feats.shape[0]):
        flat = feats[b].flatten(1).t()  # (h*w, C)
        labels = mask[b, 0].flatten() >= 0.5
        query = flat[~labels]
        negative = flat[labels]
        if query.shape[0] < 2 or negative.shape[0] == 0:
            continue
        if query.shape[0] > max_samples:
            query = query[torch.randperm(query.shape[0], generator=generator)[:max_samples]]
        if negative.shape[0] > max_samples:
            pick = torch.randperm(negative.shape[0], generator=generator)[:max_samples]
            negative = negative[pick]
        sim = query @ query.t()  # (Q, Q)
        n = sim.shape[0]
        off_diagonal = ~torch.eye(n, dtype=torch.bool, device=sim.device)
        positive = (sim * off_diagonal).sum(dim=1, keepdim=True) / (n - 1)
        logits = torch.cat([positive, query @ negative.t()], dim=1) / temperature
        zeros = torch.zeros(n, dtype=torch.long, device=sim.device)
        losses.append(F.cross_entropy(logits, zeros))
    if not losses:
        return features.sum() * 0.0
    return torch.stack(losses).mean()


#: Mask losses by config name: ``fn(logits (B,1,H,W), target (B,1,H,W)) -> 0-d tensor``.
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bce": bce_loss,
    "dice": dice_loss,
    "ioudce": iou_dce_loss,
}


def combine(
    terms: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of named loss terms, and the logs the trainer writes.

    Args:
        terms: name -> 0-d tensor (main and auxiliary losses alike).
        weights: name -> factor (missing names weigh 1).

    Returns:
        ``(total, logs)`` with ``logs[name]`` the *unweighted* value of each term and
        ``logs["loss"]`` the total.

    Raises:
        ValueError: no terms, a term that is not a scalar, or a non-finite total.
    """
    if not terms:
        raise ValueError("combine: no loss terms")
    weights = weights or {}
    total: torch.Tensor | None = None
    logs: dict[str, float] = {}
    for name, value in terms.items():
        if value.ndim != 0:
            raise ValueError(f"combine: term {name!r} is not a scalar ({tuple(value.shape)})")
        w = float(weights.get(name, 1.0))
        logs[name] = float(value.detach())
        if w == 0.0:
            continue
        total = value * w if total is None else total + value * w
    if total is None:  # every weight 0: keep a graph so backward() still works
        total = sum(v * 0.0 for v in terms.values())  # type: ignore[assignment]
    assert total is not None
    logs["loss"] = float(total.detach())
    if not math.isfinite(logs["loss"]):
        raise ValueError(f"combine: non-finite loss {logs}")
    return total, logs


def mask_loss(
    spec: Mapping[str, float],
    logits: torch.Tensor,
    target: torch.Tensor,
    options: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The mask losses a config names, weighted and summed.

    Args:
        spec: name in :data:`LOSSES` -> weight, e.g. ``{"ioudce": 1.0, "dice": 0.5}``.
        logits: (B, 1, H, W). target: (B, 1, H, W).
        options: name -> keyword arguments of that loss (``{"ioudce": {"lam": 1.5}}``).

    Returns:
        ``(total, logs)`` as :func:`combine`.
    """
    unknown = sorted(set(spec) - set(LOSSES))
    if unknown:
        raise ValueError(f"unknown loss(es) {', '.join(unknown)}; known: {', '.join(LOSSES)}")
    options = options or {}
    terms = {name: LOSSES[name](logits, target, **dict(options.get(name, {}))) for name in spec}
    return combine(terms, spec)
