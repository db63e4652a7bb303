"""Omni-IML (Qu, Zhong, Guo, Jin, 2024): modal gate encoder, anomaly enhancement, dynamic decoder.

Data flow (strides relative to the input; ``C_s`` = encoder channels at stride s)::

    rgb (B,3,H,W) --encoder stages to stride 8--> C4 (stride 4), V (B,C_8,H/8,W/8)
    dct (B,H,W), qtable (B,8,8) --FrequencyHead--> Q (B,C_8,H/8,W/8)
    fused = ChannelSpatialAttention(V, Q)
    coarse_rgb = aux(V), coarse_fused = aux(fused)          (B,1,H/8,W/8) logits
    gate = classifier(V, fused, coarse_rgb, coarse_fused    (B,) logit of "RGB alone is better"
                      [, grid_profile(rgb)])                (B,16) blocking-grid phases
    S8 = V where the gate picks RGB else fused              (per image)
    S16, S32 = remaining encoder stages on S8
    S16 = SelfCorrelation(S16)        (S16 + a residual from best matches; ``self_correlation``)
    S8, S16 = AnomalyEnhancement(S8, S16)                   (+ box branch when training)
    DynamicWeightDecoder([C4, S8, S16, S32]) -> mask logits (B,1,H/4,W/4) -> upsampled to (H,W)

The gate is a hard per-image choice. In training the route follows the gate's *label* (computed
from the two coarse masks against the ground truth: RGB when its IoU beats the fused one by
``gate_margin``; the recipe may also name images whose label is RGB regardless, see
``gate_label`` in :mod:`forgectl.recipes.omni`), and the classifier learns to predict that
label; at inference the classifier decides. Inputs without JPEG data (``has_jpeg`` False)
always take the RGB route.

The optional config key ``gate_reference`` (default ``"fused"``, the paper) may be ``"dct"``:
the label and the gate's input then use a coarse head on the DCT stream alone (``coarse_dct``),
which, unlike the fused one, cannot lean on the RGB features when the DCT holds no trace.
The optional config key ``gate_grid_profile`` (default False) also feeds the gate the image's
blocking-grid profile (:func:`grid_profile`): the pixel statistic that tells a file saved on its
own grid from one cropped off an earlier grid and saved again.
The optional config key ``self_correlation`` (default None; a dict of
:class:`~forgectl.nets.attention.SelfCorrelation` arguments) adds copy-move matching at stride 16:
each position's best similarities to the rest of the map, as a residual that starts at zero.

Configs are data (:data:`OMNI_CONFIGS`); ``tiny`` is the CPU-trained model (shipped since
2026-12-05 with ``self_correlation`` added, as its card's config records), ``paper``
the published scale (ConvNeXt-B at 512x512), ``tiny-scratch`` the tiny model on a from-scratch
ConvNeXt V2 backbone and ``tiny-lite2`` on the pretrained EfficientNet-Lite2 (for the backbone
comparisons).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgectl.nets.attention import (
    AnomalyEnhancement,
    ChannelSpatialAttention,
    SelfCorrelation,
    conv_bn_relu,
)
from forgectl.nets.decoders import DynamicWeightDecoder
from forgectl.nets.detection import create_box_head
from forgectl.nets.encoders import create_encoder
from forgectl.nets.frequency import FrequencyHead

OMNI_CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        "encoder": "efficientnet_lite0",
        "pretrained": True,
        "input_size": 256,
        "frequency": {"mid_channels": 16, "freq_channels": 8, "hidden_channels": 64,
                      "blocks": 1, "clip": 20, "qt_vocab": 64},
        "fusion_reduction": 4,
        "gate_margin": 0.1,
        "anomaly": {"dim": 64, "queries": 16, "heads": 4},
        "decoder": {"channels": 48, "ppm_bins": [1, 2, 3, 6], "dilations": [2, 3, 6],
                    "num_basis": 4},
        "box_head": {"kind": "dense", "channels": 48},
    },
    "paper": {
        "encoder": "convnext_base",
        "pretrained": False,  # no local ConvNeXt-B weights; load your own ImageNet weights
        "input_size": 512,
        "frequency": {"mid_channels": 64, "freq_channels": 16, "hidden_channels": 256,
                      "blocks": 3, "clip": 20, "qt_vocab": 64},
        "fusion_reduction": 4,
        "gate_margin": 0.1,
        "anomaly": {"dim": 256, "queries": 100, "heads": 8},
        "decoder": {"channels": 256, "ppm_bins": [1, 2, 3, 6], "dilations": [2, 3, 6],
                    "num_basis": 4},
        "box_head": {"kind": "rcnn", "channels": 256},
    },
}


#: The backbone comparison of the issue: the tiny config on a from-scratch ConvNeXt V2-Atto
#: instead of the ImageNet-pretrained EfficientNet-Lite0 (everything else identical).
OMNI_CONFIGS["tiny-scratch"] = {**copy.deepcopy(OMNI_CONFIGS["tiny"]),
                                "encoder": "convnextv2_atto", "pretrained": False}
#: Issue #19's backbone comparison: the tiny config on the larger pretrained EfficientNet-Lite2
#: (the ``backbones`` extra), everything else identical.
OMNI_CONFIGS["tiny-lite2"] = {**copy.deepcopy(OMNI_CONFIGS["tiny"]),
                              "encoder": "efficientnet_lite2"}


def omni_config(name: str) -> dict[str, Any]:
    """A deep copy of a named config."""
    try:
        return copy.deepcopy(OMNI_CONFIGS[name])
    except KeyError:
        raise ValueError(f"unknown omni config {name!r} (known: {', '.join(OMNI_CONFIGS)})"
                         ) from None


def mask_iou(logits: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(B,) IoU of ``sigmoid(logits) >= threshold`` with ``target >= 0.5``; 1 when both are empty.

    Shapes: ``logits`` and ``target`` (B, 1, h, w).
    """
    pred = torch.sigmoid(logits) >= threshold
    gt = target >= 0.5
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def gate_labels(coarse_rgb: torch.Tensor, coarse_fused: torch.Tensor, target: torch.Tensor,
                margin: float = 0.1) -> torch.Tensor:
    """(B,) bool: True where RGB alone is better, i.e. IoU(rgb) > IoU(fused) + ``margin``.

    ``target`` is the ground-truth mask at the coarse masks' size, (B, 1, h, w) in [0, 1].
    """
    return mask_iou(coarse_rgb, target) > mask_iou(coarse_fused, target) + margin


class CoarseMaskHead(nn.Sequential):
    """(B, C, h, w) -> (B, 1, h, w) logits: 3x3 conv-BN-ReLU then 1x1."""

    def __init__(self, channels: int, hidden: int = 32) -> None:
        super().__init__(conv_bn_relu(channels, hidden, 3), nn.Conv2d(hidden, 1, 1))


#: What the gate compares the RGB stream with (config ``gate_reference``).
GATE_REFERENCES = ("fused", "dct")

#: Length of :func:`grid_profile`: 8 column phases, then 8 row phases.
GRID_PROFILE_LEN = 16


def grid_profile(image: torch.Tensor) -> torch.Tensor:
    """Where the image's 8x8 blocking grids lie: the pixel-domain statistic the gate lacks.

    The mean absolute step between neighbouring pixels, split by the phase of the boundary
    (between column ``x`` and ``x + 1``, phase ``x mod 8``; rows likewise), as the log of each
    phase's share relative to the mean phase. A JPEG saved on this file's grid raises phase 7;
    an earlier save on another grid (a crop off the grid, then a re-save) raises another phase,
    and that is when the DCT stream reads the wrong grid's traces.

    Shapes: ``image`` (B, 3, H, W), H and W multiples of 8 -> (B, 16): columns' phases 0-7, then
    rows'. Scale-free: a brightness gain leaves it unchanged.
    """
    if image.ndim != 4 or image.shape[2] % 8 or image.shape[3] % 8:
        raise ValueError(f"image must be (B, C, 8k, 8m), got {tuple(image.shape)}")
    luma = image.mean(dim=1)  # (B, H, W)
    dx = (luma[:, :, 1:] - luma[:, :, :-1]).abs()  # (B, H, W-1): boundary x | x+1 at x
    dy = (luma[:, 1:, :] - luma[:, :-1, :]).abs()
    # Strided slices, not reshapes: the exported graph stays free of size arithmetic, and
    # phase 7 (one boundary fewer) is a plain mean over what it has.
    cols = torch.stack([dx[:, :, k::8].mean(dim=(1, 2)) for k in range(8)], 1)  # (B, 8)
    rows = torch.stack([dy[:, k::8, :].mean(dim=(1, 2)) for k in range(8)], 1)
    eps = 1e-6
    prof = torch.cat([cols / (cols.mean(1, keepdim=True) + eps),
                      rows / (rows.mean(1, keepdim=True) + eps)], 1)
    return torch.log(prof + 1e-3)


class ModalGateClassifier(nn.Module):
    """Picks the modality per image from both feature maps and both coarse masks (and, with
    ``grid_profile``, the image's blocking-grid profile).

    Shapes: ``rgb, fused (B, C, h, w)``, ``coarse_rgb, coarse_fused (B, 1, h, w)`` logits,
    ``profile`` (B, 16) from :func:`grid_profile` or None -> ``(B,)`` logit that RGB alone is
    better.

    The profile enters through its own small MLP whose output layer starts at zero, so a
    gate warm-started from weights without it starts with exactly their decisions.
    """

    def __init__(self, channels: int, hidden: int = 64, grid_profile: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(2 * channels + 2, hidden, 3, stride=2),
            conv_bn_relu(hidden, hidden, 3, stride=2),
        )
        self.fc = nn.Linear(2 * hidden, 1)
        self.profile: nn.Sequential | None = None
        if grid_profile:
            self.profile = nn.Sequential(nn.Linear(GRID_PROFILE_LEN, 32), nn.ReLU(),
                                         nn.Linear(32, 1))
            nn.init.zeros_(self.profile[2].weight)
            nn.init.zeros_(self.profile[2].bias)

    def forward(self, rgb: torch.Tensor, fused: torch.Tensor, coarse_rgb: torch.Tensor,
                coarse_fused: torch.Tensor, profile: torch.Tensor | None = None
                ) -> torch.Tensor:
        x = torch.cat([rgb, fused, torch.sigmoid(coarse_rgb), torch.sigmoid(coarse_fused)], 1)
        x = self.body(x)
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        logit = self.fc(pooled).squeeze(1)
        if self.profile is not None:
            if profile is None:
                raise ValueError("this gate reads the grid profile: pass profile")
            logit = logit + self.profile(profile).squeeze(1)
        return logit


class OmniIML(nn.Module):
    """Omni-IML for one config (see the module docstring for the data flow).

    Args:
        config: one of :data:`OMNI_CONFIGS` (or a variant of it).
        with_box_head: build the training-only box branch (never at inference).
        pretrained: load the encoder's local pretrained weights (overrides the config's flag;
            inference builds with False and loads its own weights file).
    """

    def __init__(self, config: dict[str, Any], with_box_head: bool = False,
                 pretrained: bool | None = None) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        use_pretrained = bool(config.get("pretrained", False)) if pretrained is None else pretrained
        self.encoder = create_encoder(config["encoder"], pretrained=use_pretrained)
        enc = self.encoder
        self.i4, self.i8, self.i16 = enc.stage_index(4), enc.stage_index(8), enc.stage_index(16)
        self.i32 = enc.stage_index(32)
        c4, c8, c16, c32 = (enc.channels[i] for i in (self.i4, self.i8, self.i16, self.i32))
        self.gate_margin = float(config.get("gate_margin", 0.1))

        freq = dict(config["frequency"])
        self.frequency = FrequencyHead(c8, **freq)
        self.fusion = ChannelSpatialAttention(c8, c8, c8, config.get("fusion_reduction", 4))
        self.coarse_rgb = CoarseMaskHead(c8)
        self.coarse_fused = CoarseMaskHead(c8)
        # What the gate weighs RGB against (config ``gate_reference``): the fused stream (the
        # paper), or the DCT stream alone, which cannot fall back on the RGB features and so
        # shows when the file's DCT holds no trace (its own coarse head, ``coarse_dct``).
        self.gate_reference = str(config.get("gate_reference", "fused"))
        if self.gate_reference not in GATE_REFERENCES:
            raise ValueError(f"gate_reference must be one of {', '.join(GATE_REFERENCES)}, "
                             f"not {self.gate_reference!r}")
        self.coarse_dct = CoarseMaskHead(c8) if self.gate_reference == "dct" else None
        # Off by default: weights trained before the profile existed build without it.
        self.gate_grid_profile = bool(config.get("gate_grid_profile", False))
        self.gate = ModalGateClassifier(c8, grid_profile=self.gate_grid_profile)

        # Off by default: weights trained before it existed build without it.
        corr = config.get("self_correlation")
        self.self_correlation = SelfCorrelation(c16, **corr) if corr else None
        an = config["anomaly"]
        self.anomaly = AnomalyEnhancement(c8, c16, an["dim"], an["queries"], an["heads"])
        dec = config["decoder"]
        self.decoder = DynamicWeightDecoder(
            [c4, c8, c16, c32], dec["channels"], tuple(dec["ppm_bins"]), tuple(dec["dilations"]),
            dec["num_basis"],
        )
        self.box_head: nn.Module | None = None
        if with_box_head:
            bh = config["box_head"]
            self.box_head = create_box_head(bh["kind"], [c8, c16], [8, 16], bh["channels"])

    def encode_head(self, image: torch.Tensor, dct: torch.Tensor, qtable: torch.Tensor,
                    has_jpeg: torch.Tensor) -> dict[str, Any]:
        """The Modal Gate Encoder up to the gate decision.

        Args:
            image: (B, 3, H, W) normalized with the encoder's mean and std
                (:func:`forgectl.nets.encoders.encoder_entry`), H and W multiples of 32.
            dct: (B, H, W) integer Y DCT coefficients (or clipped magnitudes) on the image grid.
            qtable: (B, 8, 8) integer Y quantization steps.
            has_jpeg: (B,) bool; images without JPEG data skip the frequency stream.

        Returns:
            ``stage_outputs`` (encoder maps up to stride 8), ``rgb8``, ``fused8`` (or None),
            ``coarse_rgb``, ``coarse_fused`` (or None), ``gate_logit`` ((B,) or None).
        """
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2] % 32 or image.shape[3] % 32:
            raise ValueError(f"image must be (B, 3, 32k, 32m), got {tuple(image.shape)}")
        if dct.shape != (image.shape[0], *image.shape[2:]):
            raise ValueError(f"dct {tuple(dct.shape)} does not match image {tuple(image.shape)}")
        outs = self.encoder.run(image, 0, self.i8 + 1)
        rgb8 = outs[-1]
        out: dict[str, Any] = {"stage_outputs": outs, "rgb8": rgb8,
                               "coarse_rgb": self.coarse_rgb(rgb8), "fused8": None,
                               "coarse_fused": None, "gate_logit": None}
        if bool(has_jpeg.any()):
            freq8 = self.frequency(dct, qtable)
            fused8 = self.fusion(rgb8, freq8)
            out["fused8"] = fused8
            out["coarse_fused"] = self.coarse_fused(fused8)
            reference = out["coarse_fused"]
            if self.coarse_dct is not None:
                out["coarse_dct"] = reference = self.coarse_dct(freq8)
            profile = grid_profile(image) if self.gate_grid_profile else None
            out["gate_logit"] = self.gate(rgb8, fused8, out["coarse_rgb"], reference, profile)
        return out

    def decode(self, stage_outputs: list[torch.Tensor], s8: torch.Tensor
               ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Everything after the route: the deep encoder stages on the chosen stride-8 map,
        self-correlation (when configured), anomaly enhancement and the decoder.

        Args:
            stage_outputs: the encoder maps up to stride 8 (``encode_head``'s).
            s8: (B, C_8, H/8, W/8) the routed stride-8 map.

        Returns:
            the decoder's dict (``mask`` (B, 1, H/4, W/4) logits, ``coarse``) and the enhanced
            ``(S8, S16)`` (the box branch reads them in training).
        """
        maps = [*stage_outputs, *self.encoder.run(s8, self.i8 + 1)]
        s16, s32 = maps[self.i16], maps[self.i32]
        if self.self_correlation is not None:
            s16 = self.self_correlation(s16)
        s8, s16 = self.anomaly(s8, s16)
        return self.decoder([maps[self.i4], s8, s16, s32]), (s8, s16)

    def forward(self, image: torch.Tensor, dct: torch.Tensor, qtable: torch.Tensor,
                has_jpeg: torch.Tensor, use_rgb: torch.Tensor | None = None,
                mask_target: torch.Tensor | None = None, boxes: list[torch.Tensor] | None = None,
                rgb_known_better: torch.Tensor | None = None) -> dict[str, Any]:
        """Full model.

        Args:
            image, dct, qtable, has_jpeg: as in :meth:`encode_head`.
            use_rgb: (B,) bool route fixed by the caller (one decision for all tiles of an
                image); the gate and coarse heads are then skipped (their outputs are None).
                Images without JPEG data always take the RGB route.
            mask_target: (B, 1, H, W) ground truth in [0, 1]; when given (training), the route
                follows the gate label computed from it.
            boxes: per-image (N_i, 4) boxes for the box branch (training only).
            rgb_known_better: (B,) bool, training only: images whose label is RGB whatever the
                IoU rule says (the recipe knows their DCT stream carries no trace of the edit).

        Returns:
            ``mask`` (B, 1, H, W) logits, ``decoder_coarse`` (B, 1, H/4, W/4) logits,
            ``coarse_rgb``/``coarse_fused`` (B, 1, H/8, W/8) logits (fused None without JPEG),
            ``gate_logit`` (B,) or None, ``gate_label`` (B,) bool or None, ``use_rgb`` (B,)
            bool, ``box_losses`` dict (empty unless boxes and a box head).
        """
        has_jpeg = has_jpeg.bool()
        gate_label = None
        if use_rgb is not None and mask_target is None:
            # Route fixed by the caller: skip the gate and coarse heads, and the frequency
            # stream too when every image takes the RGB route.
            route = use_rgb.bool() | ~has_jpeg
            outs = self.encoder.run(image, 0, self.i8 + 1)
            fused8 = None
            if not bool(route.all()):
                fused8 = self.fusion(outs[-1], self.frequency(dct, qtable))
            head = {"stage_outputs": outs, "rgb8": outs[-1], "fused8": fused8,
                    "coarse_rgb": None, "coarse_fused": None, "gate_logit": None}
        else:
            head = self.encode_head(image, dct, qtable, has_jpeg)
            if head["fused8"] is None:
                route = torch.ones_like(has_jpeg)
            elif mask_target is not None:
                small = F.adaptive_avg_pool2d(mask_target, head["coarse_rgb"].shape[-2:])
                reference = head.get("coarse_dct", head["coarse_fused"])
                gate_label = gate_labels(head["coarse_rgb"].detach(), reference.detach(), small,
                                         self.gate_margin)
                if rgb_known_better is not None:
                    gate_label = gate_label | rgb_known_better.bool()
                route = gate_label | ~has_jpeg
            else:
                route = (head["gate_logit"] >= 0) | ~has_jpeg
        if head["fused8"] is None:
            s8 = head["rgb8"]
        else:
            s8 = torch.where(route.view(-1, 1, 1, 1), head["rgb8"], head["fused8"])
        dec, (s8, s16) = self.decode(head["stage_outputs"], s8)
        mask = F.interpolate(dec["mask"], size=image.shape[-2:], mode="bilinear",
                             align_corners=False)
        box_losses: dict[str, torch.Tensor] = {}
        if boxes is not None and self.box_head is not None and self.training:
            box_losses = self.box_head([s8, s16], boxes, tuple(image.shape[-2:]))
        return {
            "mask": mask, "decoder_coarse": dec["coarse"], "coarse_rgb": head["coarse_rgb"],
            "coarse_fused": head["coarse_fused"], "coarse_dct": head.get("coarse_dct"),
            "gate_logit": head["gate_logit"],
            "gate_label": gate_label, "use_rgb": route, "box_losses": box_losses,
        }


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
