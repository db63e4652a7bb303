"""How FOCAL is trained on synthetic forgeries (``forgectl train --method focal``).

FOCAL (Wu, Chen, Zhou) trains a feature extractor only (:class:`forgectl.nets.focal.
FocalExtractor`), with InfoNCE++ computed inside each image
(:func:`forgectl.training.losses.info_nce_pp`): "forged" only means something relative to the
rest of one image. There is no classifier; masks come from clustering each image's embeddings
(:func:`forgectl.analysis.clustering.cluster_map`, HDBSCAN, the largest cluster pristine).

Configs: ``tiny-hrnet`` and ``tiny-lite0`` (CPU; ``tiny`` = ``tiny-lite0``, the one with ImageNet
weights), ``paper-hrnet`` and ``paper-vit`` (published scale; ``paper`` = ``paper-vit``, the
official training default, Adam at 1e-4, 1024 inputs, batch 4). Each is a ``model`` sub-dict
from :func:`forgectl.nets.focal.focal_config` plus the training settings.

``prepare``: a ``crop x crop`` window on the 8x8 grid (padded with zeros when the image is
smaller; with probability ``focus_prob`` it contains a random manipulated pixel, so that most
crops hold both classes: a crop without contrast teaches nothing), random horizontal and vertical
flips, the extractor's input normalisation; ``valid`` marks the pixels that are not padding and
``draw_seed`` seeds the loss's random draws. The official pipeline resizes every image to
1024 x 1024 instead; resizing rescales the traces, so crops are never resized here.

``loss``: InfoNCE++ (temperature 0.1, up to 1000 pixels per class per image, as the official
code) between the embeddings and the mask averaged to the feature grid (stride 4, a feature
pixel is forged when at least half its 4 x 4 pixels are). Padding is left out of the loss.
The random draws use a generator seeded from the batch's ``draw_seed`` values, so a batch always
gives the same loss (training, validation, resumption) and the global RNG is untouched. Logs:
``info_nce``, ``contrast_share`` (images with both classes) and ``class_cos`` (cosine between
the mean pristine and mean forged embedding, averaged over those images: falls as features
separate).

``predict``: per image, the embeddings of its valid (non-padding) rectangle are clustered with
the model config's ``clustering`` settings and the forged mask is upsampled (nearest) to the
crop: (B, 1, H, W) in {0, 1}, 0 on padding.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.errors import UsageError
from forgectl.synth.sample import SynthSample
from forgectl.training.recipe import Recipe

if TYPE_CHECKING:
    import torch

#: Crops must be multiples of the extractors' multiple (their deepest stride).
MULTIPLE = 32

_TINY: dict[str, Any] = {
    "crop": 256, "batch_size": 8, "lr": 3e-4, "weight_decay": 0.01, "steps": 3000,
    "warmup_steps": 150, "min_lr_ratio": 0.02, "grad_clip": 1.0,
    # Most crops must hold both classes to carry any signal (InfoNCE++ skips the others).
    "focus_prob": 0.8, "flip_prob": 0.5,
    "temperature": 0.1, "max_samples": 1000,
}
#: The official settings: Adam at 1e-4 without weight decay or clipping, batch 4 of 1024 x 1024
#: (the official code resizes whole images to 1024; here 1024 crops, padded when smaller).
_PAPER: dict[str, Any] = {
    **_TINY, "crop": 1024, "batch_size": 4, "lr": 1e-4, "weight_decay": 0.0, "steps": 100000,
    "warmup_steps": 0, "min_lr_ratio": 0.01, "grad_clip": None,
}


def _recipe_config(model_name: str, training: dict[str, Any]) -> dict[str, Any]:
    from forgectl.nets.encoders import encoder_entry
    from forgectl.nets.focal import focal_config

    model = focal_config(model_name)
    source = None
    if model.get("pretrained") and model["backbone"] == "encoder":
        source = encoder_entry(model["encoder"]).pretrained_source
    return {**copy.deepcopy(training), "model": model,
            "pretrained": f"ImageNet weights from {source}" if source else None}


class FocalRecipe(Recipe):
    """How FOCAL's extractor is trained on synthetic samples (see the module docstring)."""

    name = "focal"

    def __init__(self) -> None:
        self.configs = {
            "tiny": _recipe_config("tiny-lite0", _TINY),
            "tiny-lite0": _recipe_config("tiny-lite0", _TINY),
            "tiny-hrnet": _recipe_config("tiny-hrnet", _TINY),
            "paper": _recipe_config("paper-vit", _PAPER),
            "paper-vit": _recipe_config("paper-vit", _PAPER),
            "paper-hrnet": _recipe_config("paper-hrnet", _PAPER),
        }

    def build_model(self, config: dict[str, Any]) -> torch.nn.Module:
        from forgectl.nets.focal import FocalExtractor

        return FocalExtractor(config["model"])

    def prepare(self, sample: SynthSample, config: dict[str, Any], rng: np.random.Generator
                ) -> dict[str, Any]:
        import torch

        from forgectl.analysis.network_inputs import normalize_rgb
        from forgectl.nets.focal import input_normalization
        from forgectl.tiling import focused_crop_origin, pad_to

        crop = int(config["crop"])
        if crop % MULTIPLE:
            raise UsageError(f"focal: crop must be a multiple of {MULTIPLE}")
        image = sample.image
        mask = (np.asarray(sample.mask) > 0).astype(np.uint8)
        y0, x0 = focused_crop_origin(mask, crop, rng, float(config.get("focus_prob", 0.0)))
        win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        rgb = pad_to(image.rgb[win], crop, crop)
        mask = pad_to(mask[win], crop, crop)
        valid = pad_to(np.ones(image.rgb[win].shape[:2], np.uint8), crop, crop)
        flip_p = float(config.get("flip_prob", 0.0))
        for axis in (0, 1):
            if rng.random() < flip_p:
                rgb, mask, valid = np.flip(rgb, axis), np.flip(mask, axis), np.flip(valid, axis)
        mean, std = input_normalization(config["model"])
        return {
            "image": torch.from_numpy(normalize_rgb(np.ascontiguousarray(rgb), mean, std)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None],
            "valid": torch.from_numpy(np.ascontiguousarray(valid, np.float32))[None],
            "draw_seed": torch.tensor(int(rng.integers(0, 2**31 - 1)), dtype=torch.int64),
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], config: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        import torch
        import torch.nn.functional as F

        from forgectl.training.losses import combine, info_nce_pp

        feats = model(batch["image"])
        grid = feats.shape[-2:]
        # A feature pixel is forged when at least half its pixels are (the official code
        # resizes the mask to the feature grid and thresholds at 0.5).
        small = (F.adaptive_avg_pool2d(batch["mask"].float(), grid) >= 0.5).float()
        valid = F.adaptive_avg_pool2d(batch["valid"].float(), grid) >= 0.5
        seed = int(batch["draw_seed"].sum().item()) % (2**63 - 1)
        gen = torch.Generator().manual_seed(seed)
        temperature = float(config.get("temperature", 0.1))
        max_samples = int(config.get("max_samples", 1000))
        if bool(valid.all()):
            nce = info_nce_pp(feats, small, temperature, max_samples, generator=gen)
        else:  # padding: each image on its valid rectangle (flips keep it a rectangle)
            parts = []
            for b in range(feats.shape[0]):
                rows = valid[b, 0].any(dim=1).nonzero().flatten()
                cols = valid[b, 0].any(dim=0).nonzero().flatten()
                if len(rows) == 0 or len(cols) == 0:
                    continue
                win = (slice(b, b + 1), slice(None), slice(int(rows[0]), int(rows[-1]) + 1),
                       slice(int(cols[0]), int(cols[-1]) + 1))
                if _has_contrast(small[win]):
                    parts.append(info_nce_pp(feats[win], small[win], temperature, max_samples,
                                             generator=gen))
            nce = torch.stack(parts).mean() if parts else feats.sum() * 0.0
        terms = {"info_nce": nce}
        terms.update(_contrast_logs(feats.detach(), small, valid))
        return combine(terms, {"contrast_share": 0.0, "class_cos": 0.0})

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        from forgectl.analysis.clustering import cluster_map

        options = dict(getattr(model, "config", {}).get("clustering") or {})
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                feats = model(batch["image"]).float().cpu().numpy()
        finally:
            model.train(was_training)
        masks = np.zeros((feats.shape[0], *feats.shape[2:]), np.float32)
        grid = feats.shape[2:]
        valid = batch.get("valid")
        for b, f in enumerate(feats):
            # Cluster the image only: padding features would form a "region" of their own.
            rows, cols = slice(0, grid[0]), slice(0, grid[1])
            if valid is not None:
                keep = F.adaptive_avg_pool2d(valid[b:b + 1].float(), grid)[0, 0].numpy() >= 0.5
                ys, xs = np.nonzero(keep.any(axis=1))[0], np.nonzero(keep.any(axis=0))[0]
                if len(ys) == 0 or len(xs) == 0:
                    continue
                rows, cols = slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1)
            masks[b, rows, cols] = cluster_map(f[:, rows, cols], **options).mask
        small = torch.from_numpy(masks)[:, None]
        return F.interpolate(small, size=tuple(batch["image"].shape[-2:]), mode="nearest")


def _has_contrast(mask: torch.Tensor) -> bool:
    """Both classes present, with at least 2 pristine pixels (InfoNCE++'s queries)."""
    forged = int((mask >= 0.5).sum())
    return forged > 0 and mask.numel() - forged >= 2


def _contrast_logs(feats: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
    """``contrast_share`` and ``class_cos`` (see the module docstring), 0-d tensors."""
    import torch
    import torch.nn.functional as F

    unit = F.normalize(feats, dim=1)
    cos = []
    with_contrast = 0
    for b in range(feats.shape[0]):
        keep = valid[b, 0]
        forged = (mask[b, 0] >= 0.5) & keep
        pristine = (mask[b, 0] < 0.5) & keep
        if not forged.any() or int(pristine.sum()) < 2:
            continue
        with_contrast += 1
        mf = unit[b][:, forged].mean(dim=1)
        mp = unit[b][:, pristine].mean(dim=1)
        cos.append(F.cosine_similarity(mf, mp, dim=0))
    share = torch.tensor(with_contrast / max(1, feats.shape[0]))
    return {"contrast_share": share,
            "class_cos": torch.stack(cos).mean() if cos else torch.tensor(0.0)}


def recipe() -> Recipe:
    """The recipe ``forgectl train --method focal`` uses."""
    return FocalRecipe()
