"""How MUN is trained on synthetic forgeries (``forgectl train --method mun``).

The network is :class:`forgectl.nets.mun.MUN`, trained inside
:class:`~forgectl.nets.mun.MUNTrainingModel`, which holds the *frozen* noise extractor
(:mod:`forgectl.nets.noiseprint`, trained first with ``forgectl train --method noiseprint``;
its weights file is ``noiseprint_weights``) and computes the crop's noiseprint in forward.

Configs: ``tiny`` (ImageNet EfficientNet-Lite0 RGB stream, random-init Lite0 noise stream),
``tiny-convnext`` (both streams ConvNeXt V2-Atto from scratch, for the backbone comparison),
``paper`` (ConvNeXt V2-Base streams, 512 crops, the official optimizer settings), and the
ablations of the paper's components on the tiny model: ``tiny-no-mmq`` (plain concatenation
instead of the multi-modal query), ``tiny-no-ioudce`` (plain cross-entropy instead of IoUDCE),
``tiny-no-dna`` (no deviation noise augmentation); and ``tiny-highpass``, a deviation to
measure: the noise stream reads a fixed high-pass residual instead of the learned extractor.

``prepare``: a ``crop x crop`` window on the 8x8 grid (padded with zeros when the image is
smaller; with probability ``focus_prob`` it contains a random manipulated pixel; never
resized, unlike the official pipeline, which warps every image to 512x512 and so rescales the
traces the noise stream reads), random horizontal and vertical flips of pixels and mask, then
two views of the same pixels: ``rgb256`` (``rgb / 256``, the extractor's input, without DNA:
the official code extracts the noiseprint from the original image) and ``image`` (DNA noise,
then the RGB encoder's normalization). ``loss``: the mask losses the config names, IoUDCE with
``lam = 1.5`` by default (:func:`forgectl.training.losses.iou_dce_loss`); no auxiliary term,
as the official code has none. ``predict``: ``sigmoid(mask)``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.errors import UsageError
from forgectl.training.recipe import Recipe, SynthSample

if TYPE_CHECKING:
    import torch

#: Crops must be multiples of the encoders' last stride.
MULTIPLE = 32

_TRAINING: dict[str, Any] = {
    "crop": 256, "batch_size": 8, "lr": 4e-4, "weight_decay": 0.05, "steps": 2000,
    "warmup_steps": 150, "min_lr_ratio": 0.02, "grad_clip": 1.0,
    "focus_prob": 0.5, "flip_prob": 0.5,
    # DNA on every training image, as the official code (it adds the noise in every training
    # forward). Scale 255: the deviations (ImageNet mean - MUN's data mean, up to 0.026) are
    # [0, 1]-scale quantities; the official code adds them to 0-255 pixels, where they move a
    # pixel by at most 0.026 grey levels (1/2000 of a normalized unit): a no-op an ablation
    # could not measure. On the [0, 1] scale they become a per-pixel colour jitter of up to
    # 6.6 / 2.0 / -0.8 grey levels (R, G, B), the size of sensor noise, on the RGB stream only.
    "dna_prob": 1.0, "dna_scale": 255.0,
    # Mask losses (forgectl.training.losses.mask_loss): IoUDCE, lambda 1.5 as the official code.
    "loss": {"ioudce": 1.0},
    "loss_options": {"ioudce": {"lam": 1.5}},
    # Overrides model.noiseprint_weights when set (e.g. from the command line).
    "noiseprint_weights": None,
}

#: The extractor weights each model config trains with (resolved in the weights folder when
#: not a path that exists): the trainer's output of ``forgectl train --method noiseprint``.
_EXTRACTOR_WEIGHTS = {"tiny": "noiseprint-tiny.safetensors",
                      "tiny-residual": "noiseprint-tiny-residual.safetensors",
                      "paper": "noiseprint-paper.safetensors",
                      "highpass": None}  # a fixed filter: nothing trained, nothing to load


def _recipe_config(model_name: str, **training: Any) -> dict[str, Any]:
    from forgectl.nets.encoders import encoder_entry
    from forgectl.nets.mun import mun_config

    model = mun_config(model_name)
    model["noiseprint_weights"] = _EXTRACTOR_WEIGHTS[model["noiseprint"]]
    source = (encoder_entry(model["rgb_encoder"]).pretrained_source
              if model["pretrained"] else None)
    return {**copy.deepcopy(_TRAINING), **training, "model": model,
            "pretrained": f"ImageNet weights from {source} (RGB stream)" if source else None}


class MunRecipe(Recipe):
    """How MUN is trained on synthetic samples (module docstring: data, loss, configs).

    Prepared sample keys: ``image (3, crop, crop)`` float32 normalized for the RGB encoder
    (after DNA), ``rgb256 (3, crop, crop)`` float32 ``rgb / 256`` (the extractor's input),
    ``mask (1, crop, crop)`` float32 in {0, 1}.
    """

    name = "mun"
    # The frozen extractor is built from the file the config names (noiseprint_weights, in
    # float32 as MUN trains with it), not taken from a warm start's float16 copy: a MUN can
    # be continued on a retrained extractor, or on none (the high-pass config).
    init_skip_prefixes = ("noiseprint.",)

    def __init__(self) -> None:
        paper = {"crop": 512, "batch_size": 7, "lr": 1e-4, "steps": 87770,
                 "warmup_steps": 1500, "min_lr_ratio": 0.0}
        self.configs = {
            "tiny": _recipe_config("tiny"),
            "tiny-convnext": _recipe_config("tiny-convnext"),
            "paper": _recipe_config("paper", **paper),
            "tiny-no-mmq": _recipe_config("tiny-no-mmq"),
            "tiny-highpass": _recipe_config("tiny-highpass"),
            "tiny-residual": _recipe_config("tiny-residual"),
            "tiny-no-ioudce": _recipe_config("tiny", loss={"bce": 1.0}, loss_options={}),
            "tiny-no-dna": _recipe_config("tiny", dna_prob=0.0),
        }

    def build_model(self, config: dict[str, Any]) -> torch.nn.Module:
        from forgectl.nets.mun import MUNTrainingModel

        model_cfg = dict(config["model"])
        if config.get("noiseprint_weights"):
            model_cfg["noiseprint_weights"] = config["noiseprint_weights"]
        return MUNTrainingModel(model_cfg)

    def prepare(self, sample: SynthSample, config: dict[str, Any], rng: np.random.Generator
                ) -> dict[str, Any]:
        import torch

        from forgectl.analysis.network_inputs import normalize_rgb
        from forgectl.nets.encoders import encoder_entry
        from forgectl.nets.noiseprint import noiseprint_config
        from forgectl.tiling import focused_crop_origin, pad_to
        from forgectl.training.augment import dna

        crop = int(config["crop"])
        if crop % MULTIPLE:
            raise UsageError(f"mun: crop must be a multiple of {MULTIPLE}")
        rgb = np.asarray(sample.image.rgb)
        mask = (np.asarray(sample.mask) > 0).astype(np.uint8)
        y0, x0 = focused_crop_origin(mask, crop, rng, float(config.get("focus_prob", 0.0)))
        win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        rgb = pad_to(rgb[win], crop, crop)
        mask = pad_to(mask[win], crop, crop)
        flip_p = float(config.get("flip_prob", 0.0))
        for axis in (0, 1):
            if rng.random() < flip_p:
                rgb, mask = np.flip(rgb, axis), np.flip(mask, axis)
        rgb = np.ascontiguousarray(rgb)
        model_cfg = config["model"]
        scale = float(noiseprint_config(model_cfg["noiseprint"])["input_scale"])  # 256
        rgb256 = rgb.transpose(2, 0, 1).astype(np.float32) / scale
        pixels: np.ndarray = rgb
        if rng.random() < float(config.get("dna_prob", 0.0)):
            pixels = dna(rgb, rng, float(config.get("dna_scale", 1.0)))
        entry = encoder_entry(model_cfg["rgb_encoder"])
        return {
            "image": torch.from_numpy(np.ascontiguousarray(
                normalize_rgb(pixels, entry.mean, entry.std), np.float32)),
            "rgb256": torch.from_numpy(np.ascontiguousarray(rgb256)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None],
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], config: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        from forgectl.training.losses import mask_loss

        out = model(batch["image"], batch["rgb256"])
        return mask_loss(config.get("loss", {"ioudce": 1.0}), out["mask"],
                         batch["mask"].float(), config.get("loss_options"))

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        import torch

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(batch["image"], batch["rgb256"])
            return torch.sigmoid(out["mask"])
        finally:
            model.train(was_training)


def recipe() -> Recipe:
    """The recipe ``forgectl train --method mun`` uses."""
    return MunRecipe()
