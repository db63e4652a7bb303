"""FOCAL feature extractors (Wu, Chen, Zhou): an image in, one embedding per stride-4 pixel out.

FOCAL has no classifier: an extractor is trained with the per-image InfoNCE++ loss
(:func:`forgectl.training.losses.info_nce_pp`) and, at test time, the embeddings of one image
are clustered (:mod:`forgectl.analysis.clustering`). Several trained extractors can be fused
without retraining by concatenating their L2-normalised embeddings (:func:`fuse_features`).

Data flow (B images, H and W multiples of 32)::

    image (B,3,H,W), normalised as config["mean"/"std"] say
      "hrnet":   timm HRNet branches (strides 4, 8, 16, 32)  --\
      "encoder": StagedEncoder stages (strides 4, 8, 16, 32) ---> PyramidMerge --> (B,D,H/4,W/4)
      "samvit":  SAM ViT image encoder + neck (B,256,H/16,W/16) --bilinear x4--> (B,D,H/4,W/4)

:class:`PyramidMerge` is a light FPN: a 1x1 lateral per stride to ``width`` channels, nearest
upsampling and summation from coarse to fine, then depth-wise 3x3, BN, ReLU and a 1x1 projection
to ``D``. The embeddings are raw (not normalised): the loss and the clustering normalise.

Configs (:data:`FOCAL_CONFIGS`, plain data):

* ``paper-hrnet``: HRNet-W32 as in the official code (timm ``hrnet_w32``, the same architecture:
  the official extractor returns the fused highest-resolution branch, 32 channels at stride 4,
  with no head), input resized to 1024 x 1024 there, inputs in [0, 1] (no mean/std).
* ``paper-vit``: SAM's ViT-L image encoder (timm ``samvit_large_patch16``: 1024 input, 256-d
  neck at stride 16) as in the official code, here upsampled to stride 4 so all extractors share
  the stride-4 contract (the official code fuses on the ViT's stride-16 grid instead).
* ``tiny-hrnet`` (CPU): timm ``hrnet_w18_small`` (1.5 M parameters, branches 16/32/64/128
  channels) + PyramidMerge to D = 64; random init (no local HRNet weights).
* ``tiny-lite0`` (CPU): ImageNet EfficientNet-Lite0 stages (local package) + PyramidMerge to
  D = 64.

``"paper"`` and ``"tiny"`` are aliases of ``paper-vit`` (the official training default) and
``tiny-lite0``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from forgectl.analysis.clustering import fuse_features
from forgectl.nets.encoders import HALF_MEAN, HALF_STD, create_encoder, encoder_entry

__all__ = ["CLUSTERING", "FOCAL_CONFIGS", "FocalExtractor", "PyramidMerge", "focal_config",
           "fuse_features", "input_normalization"]

#: Inputs in [0, 1] as the official code feeds its extractors (no mean / std).
UNIT_MEAN = (0.0, 0.0, 0.0)
UNIT_STD = (1.0, 1.0, 1.0)
#: Output stride of every extractor, and the multiple H and W must be.
STRIDE = 4
MULTIPLE = 32

#: Test-time clustering (keyword arguments of :func:`forgectl.analysis.clustering.cluster_map`),
#: kept in the model config so the model card says how its masks are made.
CLUSTERING: dict[str, Any] = {"method": "hdbscan", "min_cluster_size": None, "max_points": 8000,
                              "pca_dim": 8, "min_separation": 3.0}

FOCAL_CONFIGS: dict[str, dict[str, Any]] = {
    "paper-hrnet": {
        "backbone": "hrnet", "timm_name": "hrnet_w32", "pretrained": False,
        "strides": [4], "merge": None, "dim": 32,
        "mean": list(UNIT_MEAN), "std": list(UNIT_STD), "input_size": 1024,
        "clustering": dict(CLUSTERING),
    },
    "paper-vit": {
        "backbone": "samvit", "timm_name": "samvit_large_patch16", "pretrained": False,
        "native_stride": 16, "dim": 256,
        "mean": list(UNIT_MEAN), "std": list(UNIT_STD), "input_size": 1024,
        "clustering": dict(CLUSTERING),
    },
    "tiny-hrnet": {
        "backbone": "hrnet", "timm_name": "hrnet_w18_small", "pretrained": False,
        "strides": [4, 8, 16, 32], "merge": {"width": 64}, "dim": 64,
        "mean": list(HALF_MEAN), "std": list(HALF_STD), "input_size": None,
        "clustering": dict(CLUSTERING),
    },
    "tiny-lite0": {
        "backbone": "encoder", "encoder": "efficientnet_lite0", "pretrained": True,
        "strides": [4, 8, 16, 32], "merge": {"width": 64}, "dim": 64,
        "mean": None, "std": None, "input_size": None,  # None: the encoder's own normalisation
        "clustering": dict(CLUSTERING),
    },
}
_ALIASES = {"paper": "paper-vit", "tiny": "tiny-lite0"}


def focal_config(name: str) -> dict[str, Any]:
    """A deep copy of a named extractor config (``paper``/``tiny`` are aliases)."""
    key = _ALIASES.get(name, name)
    try:
        return copy.deepcopy(FOCAL_CONFIGS[key])
    except KeyError:
        known = ", ".join([*FOCAL_CONFIGS, *_ALIASES])
        raise ValueError(f"unknown focal config {name!r} (known: {known})") from None


def input_normalization(config: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per RGB channel for inputs scaled to [0, 1]: ``(x - mean) / std``."""
    if config.get("mean") is None or config.get("std") is None:
        entry = encoder_entry(config["encoder"])
        return tuple(entry.mean), tuple(entry.std)
    return tuple(float(v) for v in config["mean"]), tuple(float(v) for v in config["std"])


class PyramidMerge(nn.Module):
    """Multi-stride features -> one stride-``strides[0]`` embedding map (a light FPN).

    Args:
        channels: input channels per stride (finest first). strides: their strides (each a
            power-of-two multiple of the previous). width: merge channels. dim: output D.
    """

    def __init__(self, channels: list[int], strides: list[int], width: int, dim: int) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError("channels and strides must be non-empty and of equal length")
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
        self.factors = [float(b // a) for a, b in zip(strides, strides[1:], strict=False)]
        self.head = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, dim, 1),
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """[(B, C_i, H_i, W_i)] finest first -> (B, dim, H_0, W_0)."""
        x = self.laterals[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            # Scale factors, not sizes: exact for multiples of 32 and traced as constants, so
            # the ONNX graph keeps dynamic H and W.
            x = F.interpolate(x, scale_factor=self.factors[i], mode="nearest")
            x = x + self.laterals[i](feats[i])
        return self.head(x)


class FocalExtractor(nn.Module):
    """FOCAL's feature extractor: (B, 3, H, W) -> (B, D, H/4, W/4) pixel embeddings.

    Args:
        config: a :func:`focal_config` dict (``backbone``, ``dim``, ...). ``pretrained`` loads
            weights from local packages only (EfficientNet-Lite0); other backbones start random.

    Attributes:
        dim: D. stride: 4. multiple: H and W must be multiples of it (32).
        mean, std: the input normalisation (:func:`input_normalization`).
    """

    stride = STRIDE
    multiple = MULTIPLE

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = copy.deepcopy(config)
        self.kind = str(config["backbone"])
        self.dim = int(config["dim"])
        self.mean, self.std = input_normalization(config)
        self.merge: PyramidMerge | None = None
        if self.kind == "hrnet":
            self._build_hrnet(config)
        elif self.kind == "encoder":
            self._build_encoder(config)
        elif self.kind == "samvit":
            self._build_samvit(config)
        else:
            raise ValueError(f"unknown focal backbone {self.kind!r} (hrnet, encoder, samvit)")

    def _build_hrnet(self, config: dict[str, Any]) -> None:
        import timm

        strides = [int(s) for s in config["strides"]]
        # feature_location="" returns HRNet's own branches (not the classification "incre"
        # blocks); index 0 is the stride-2 stem, 1..4 the branches at strides 4..32.
        indices = tuple(1 + [4, 8, 16, 32].index(s) for s in strides)
        self.backbone = timm.create_model(str(config["timm_name"]), pretrained=False,
                                          features_only=True, feature_location="",
                                          out_indices=indices)
        channels = [int(c) for c in self.backbone.feature_info.channels()]
        if config.get("merge"):
            self.merge = PyramidMerge(channels, strides, int(config["merge"]["width"]), self.dim)
        elif strides != [STRIDE] or channels[0] != self.dim:
            raise ValueError("without a merge, an HRNet extractor outputs its stride-4 branch "
                             f"and dim must equal its channels ({channels[0]})")

    def _build_encoder(self, config: dict[str, Any]) -> None:
        self.backbone = create_encoder(str(config["encoder"]), bool(config.get("pretrained")))
        strides = [int(s) for s in config["strides"]]
        self._pick = [self.backbone.stage_index(s) for s in strides]
        channels = [self.backbone.channels[i] for i in self._pick]
        self._stop = max(self._pick) + 1
        self.merge = PyramidMerge(channels, strides, int(config["merge"]["width"]), self.dim)

    def _build_samvit(self, config: dict[str, Any]) -> None:
        import timm

        self.backbone = timm.create_model(str(config["timm_name"]), pretrained=False,
                                          num_classes=0)
        if int(self.backbone.neck[0].out_channels) != self.dim:
            raise ValueError(f"samvit neck has {self.backbone.neck[0].out_channels} channels, "
                             f"config dim is {self.dim}")
        self._up = float(int(config.get("native_stride", 16)) // STRIDE)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised image -> (B, D, H/4, W/4) embeddings (not normalised)."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(image.shape)}")
        if image.shape[2] % MULTIPLE or image.shape[3] % MULTIPLE:
            raise ValueError(f"H and W must be multiples of {MULTIPLE}, got "
                             f"{tuple(image.shape[2:])}")
        if self.kind == "hrnet":
            feats = self.backbone(image)
            return self.merge(feats) if self.merge is not None else feats[0]
        if self.kind == "encoder":
            outs = self.backbone.run(image, 0, self._stop)
            assert self.merge is not None
            return self.merge([outs[i] for i in self._pick])
        x = self.backbone.forward_features(image)
        return F.interpolate(x, scale_factor=self._up, mode="bilinear", align_corners=False)
