"""How Omni-IML is trained on synthetic forgeries (``forgectl train --method omni``).

Configs: ``tiny`` (CPU, shipped as ``weights/omni-tiny``), ``tiny-scratch`` (no ImageNet
init) and ``tiny-lite2`` (the larger pretrained Lite2), for the backbone comparisons, and
``paper`` (published scale). The network is
:class:`forgectl.nets.omni.OmniIML`; inputs are made as the backend makes them
(:mod:`forgectl.analysis.network_inputs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.analysis.network_inputs import dct_planes, normalize_rgb
from forgectl.errors import UsageError
from forgectl.synth.histories import reshared
from forgectl.training.recipe import Recipe, SynthSample

if TYPE_CHECKING:
    import torch

#: Crops must be multiples of the encoder's last stride.
MULTIPLE = 32

#: How the gate's training label is made (see :class:`OmniRecipe`).
GATE_LABEL_RULES = ("iou", "iou+history")


def _recipe_config(name: str, training: dict[str, Any]) -> dict[str, Any]:
    from forgectl.nets.encoders import encoder_entry
    from forgectl.nets.omni import omni_config

    model = omni_config(name)
    source = encoder_entry(model["encoder"]).pretrained_source if model["pretrained"] else None
    return {**training, "model": model,
            "pretrained": f"ImageNet weights from {source}" if source else None}


class OmniRecipe(Recipe):
    """How Omni-IML is trained on synthetic samples.

    ``prepare``: a ``crop x crop`` window on the 8x8 grid (padded when the image is smaller;
    with probability ``focus_prob`` it contains a random manipulated pixel), random horizontal
    and vertical flips that move whole blocks (the DCT magnitudes stay valid), the Y DCT
    indices and table (zeros and a ``has_jpeg = False`` flag for non-JPEG files, which forces
    the RGB route), and the boxes of the mask's components clipped to the crop.

    ``loss``: BCE + Dice on the final mask; BCE on the decoder's coarse mask (stride 4) and on
    both gate heads' coarse masks (stride 8; the fused one only for JPEG samples); BCE of the
    gate classifier against its label (JPEG samples only); the box-branch losses.

    The gate label (``gate_label``): ``"iou"`` is the paper's rule (RGB when the RGB head's
    coarse mask beats the fused head's by the model's ``gate_margin`` IoU). Measured, it never
    fires here: the fused head sees the RGB features too, so it is never that much worse
    (``gate_rgb_share`` 0.0 in every run, docs/TRAINING.md). ``"iou+history"`` also labels RGB
    the samples whose file was shared again after its save (cropped off the 8x8 grid, maybe
    resampled, re-saved: :func:`forgectl.synth.histories.reshared`), whose DCT stream holds no
    trace of the edit, so the gate learns to recognize such files and send them to the RGB
    route. It needs ``synth.history.reshare_prob`` > 0 to see any.
    """

    name = "omni"

    def __init__(self) -> None:
        training = {
            "crop": 256, "batch_size": 8, "lr": 3e-4, "weight_decay": 0.05, "steps": 6000,
            "warmup_steps": 200, "min_lr_ratio": 0.02, "grad_clip": 1.0,
            "focus_prob": 0.5, "flip_prob": 0.5, "gate_label": "iou",
            "loss_weights": {"bce": 1.0, "dice": 1.0, "decoder_coarse": 0.4, "coarse_rgb": 0.4,
                             "coarse_fused": 0.4, "gate": 0.2, "box": 0.2},
        }
        paper = {**training, "crop": 512, "batch_size": 16, "lr": 1e-4, "steps": 100000,
                 "warmup_steps": 1000}
        self.configs = {"tiny": _recipe_config("tiny", training),
                        "paper": _recipe_config("paper", paper),
                        "tiny-scratch": _recipe_config("tiny-scratch", training),
                        "tiny-lite2": _recipe_config("tiny-lite2", training)}

    def build_model(self, config: dict[str, Any]) -> torch.nn.Module:
        from forgectl.nets.omni import OmniIML

        return OmniIML(config["model"], with_box_head=True)

    def prepare(self, sample: SynthSample, config: dict[str, Any], rng: np.random.Generator
                ) -> dict[str, Any]:
        import torch

        from forgectl.analysis.network_inputs import flip_blocks
        from forgectl.nets.encoders import encoder_entry
        from forgectl.tiling import focused_crop_origin, pad_to

        crop = int(config["crop"])
        if crop % MULTIPLE:
            raise UsageError(f"omni: crop must be a multiple of {MULTIPLE}")
        gate_rule = config.get("gate_label", "iou")
        if gate_rule not in GATE_LABEL_RULES:
            raise UsageError(f"omni: gate_label must be one of {', '.join(GATE_LABEL_RULES)}, "
                             f"not {gate_rule!r}")
        model_cfg = config["model"]
        image = sample.image
        idx, qtable, has_jpeg = dct_planes(image, int(model_cfg["frequency"]["clip"]))
        mask = (np.asarray(sample.mask) > 0).astype(np.uint8)
        y0, x0 = focused_crop_origin(mask, crop, rng, float(config.get("focus_prob", 0.0)))
        win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        rgb = pad_to(image.rgb[win], crop, crop)
        mask = pad_to(mask[win], crop, crop)
        idx = pad_to(idx[win], crop, crop)
        boxes = _crop_boxes(np.asarray(sample.boxes, np.float32).reshape(-1, 4), x0, y0, mask)
        flip_p = float(config.get("flip_prob", 0.0))
        for axis in (0, 1):
            if rng.random() < flip_p:
                rgb = np.flip(rgb, axis)
                mask = np.flip(mask, axis)
                idx = flip_blocks(idx, axis)
                lo, hi = (1, 3) if axis == 0 else (0, 2)
                boxes[:, [lo, hi]] = crop - boxes[:, [hi, lo]]
        entry = encoder_entry(model_cfg["encoder"])
        return {
            "image": torch.from_numpy(normalize_rgb(np.ascontiguousarray(rgb), entry.mean,
                                                    entry.std)),
            "dct": torch.from_numpy(np.ascontiguousarray(idx)),
            "qtable": torch.from_numpy(qtable),
            "has_jpeg": torch.tensor(has_jpeg),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None],
            "boxes": torch.from_numpy(boxes),
            "rgb_known_better": torch.tensor(gate_rule == "iou+history"
                                             and reshared(sample.history)),
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        for key in items[0]:
            values = [it[key] for it in items]
            out[key] = values if key == "boxes" else torch.stack(values)
        return out

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], config: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        import torch.nn.functional as F

        from forgectl.training.losses import bce_loss, combine, dice_loss

        mask = batch["mask"].float()
        has_jpeg = batch["has_jpeg"].bool()
        out = model(batch["image"], batch["dct"], batch["qtable"], has_jpeg, mask_target=mask,
                    boxes=batch["boxes"] if model.training else None,
                    rgb_known_better=batch.get("rgb_known_better"))
        small = F.adaptive_avg_pool2d(mask, out["coarse_rgb"].shape[-2:])
        terms = {
            "bce": bce_loss(out["mask"], mask),
            "dice": dice_loss(out["mask"], mask),
            "decoder_coarse": bce_loss(
                out["decoder_coarse"],
                F.adaptive_avg_pool2d(mask, out["decoder_coarse"].shape[-2:])),
            "coarse_rgb": bce_loss(out["coarse_rgb"], small),
        }
        if out["coarse_fused"] is not None and bool(has_jpeg.any()):
            terms["coarse_fused"] = bce_loss(out["coarse_fused"][has_jpeg], small[has_jpeg])
            terms["gate"] = F.binary_cross_entropy_with_logits(
                out["gate_logit"][has_jpeg], out["gate_label"][has_jpeg].float())
            terms["gate_rgb_share"] = out["gate_label"][has_jpeg].float().mean().detach()
            if out.get("coarse_dct") is not None:  # the gate's reference (gate_reference dct)
                terms["coarse_dct"] = bce_loss(out["coarse_dct"][has_jpeg], small[has_jpeg])
        weights = dict(config.get("loss_weights", {}))
        weights["gate_rgb_share"] = 0.0  # logged, not optimized
        weights.setdefault("coarse_dct", weights.get("coarse_fused", 0.4))
        for key, value in out["box_losses"].items():
            terms[key] = value
            weights[key] = weights.get("box", 1.0)
        return combine(terms, weights)

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        import torch

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(batch["image"], batch["dct"], batch["qtable"],
                            batch["has_jpeg"].bool())
            return torch.sigmoid(out["mask"])
        finally:
            model.train(was_training)


def _crop_boxes(boxes: np.ndarray, x0: int, y0: int, mask: np.ndarray) -> np.ndarray:
    """Boxes of the full image -> boxes in a crop, each tightened to its mask pixels there.

    A component cut by the crop keeps only its visible part; boxes with no manipulated pixel
    left are dropped. Returns (N, 4) float32 ``x0, y0, x1, y1`` (exclusive ends).
    """
    h, w = mask.shape
    out = []
    for bx0, by0, bx1, by1 in boxes:
        cx0, cy0 = max(0, int(np.floor(bx0)) - x0), max(0, int(np.floor(by0)) - y0)
        cx1, cy1 = min(w, int(np.ceil(bx1)) - x0), min(h, int(np.ceil(by1)) - y0)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        ys, xs = np.nonzero(mask[cy0:cy1, cx0:cx1])
        if len(ys) == 0:
            continue
        out.append([cx0 + xs.min(), cy0 + ys.min(), cx0 + xs.max() + 1, cy0 + ys.max() + 1])
    return np.asarray(out, np.float32).reshape(-1, 4)


def recipe() -> Recipe:
    """The recipe ``forgectl train --method omni`` uses."""
    return OmniRecipe()
