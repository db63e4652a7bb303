"""MUN: an RGB stream and a noiseprint stream fused by multi-modal queries, a U+N decoder.

X. Liu et al., "Rethinking Image Manipulation Localization: Multi-Modal Query and U-shaped
Network", AAAI 2025. The network is :class:`forgectl.nets.mun.MUN`; its noise extractor is
forgectl's own :class:`forgectl.nets.noiseprint.NoiseprintNet` (trained here, ``forgectl train
--method noiseprint``), frozen inside MUN's training.

Inference, as in the MUN deployment: the noiseprint is extracted once on the full-resolution
image (tiled with receptive-field margins, identical to one pass), then image and noiseprint
are cut into the same square tiles of the training crop size (smaller images are padded to
that square: the multi-modal query's sums depend on the map size) and MUN's per-tile
probabilities are blended. ``maps["noiseprint"]`` is the extractor's own anomaly map (local
statistics against the image's median), shown by ``explain`` next to MUN's heatmap.

The exported graph (``forgectl export``) is MUN on one tile, ``(image, noiseprint) -> mask``;
the extractor runs in PyTorch before it, from the weights it was shipped in (the mun file
with ``--runtime torch``, ``weights/noiseprint-<config>.safetensors`` with ``--runtime onnx``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.analysis.network_inputs import normalize_rgb
from forgectl.backends.base import MethodSpec, Result
from forgectl.backends.learned import ExportGraph, LearnedBackend, tiling_options
from forgectl.errors import WeightsError
from forgectl.intake import ForensicImage
from forgectl.tiling import pad_to, plan_tiles
from forgectl.weights import load_network, weights_dir

if TYPE_CHECKING:
    import torch

PAPER = (
    "X. Liu et al., 'Rethinking Image Manipulation Localization: Multi-Modal Query and "
    "U-shaped Network' (MUN), AAAI 2025"
)
MULTIPLE = 32
#: Trace size of the export: a multiple of 32 that no parity sample's tile has.
TRACE_SIZE = (160, 224)


def mun_tile_graph(model: Any) -> torch.nn.Module:
    """MUN on one tile: ``image (1, 3, H, W)`` normalized for the RGB encoder, ``noiseprint
    (1, 1, H, W)`` -> ``mask (1, 1, H, W)`` probability; H, W multiples of 32."""
    import torch

    class MunTile(torch.nn.Module):
        def __init__(self, net: Any) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor, noiseprint: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(image, noiseprint)["mask"])

    return MunTile(model).eval()


class MunBackend(LearnedBackend):
    """MUN inference: full-image noiseprint, then square tiles of the training crop."""

    spec = MethodSpec(
        name="mun",
        summary="MUN: RGB + noiseprint streams, multi-modal query fusion, U+N decoder",
        kind="learned",
        weights="mun-tiny.safetensors",
        paper=PAPER,
    )
    multiple = MULTIPLE
    # tile 256 = the tiny config's training crop (the MMQ sums depend on the map size).
    OPTIONS = tiling_options(tile=256, overlap=64)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._extractor: Any = None

    def build_network(self, config: dict[str, Any]) -> Any:
        from forgectl.nets.mun import MUNTrainingModel

        # The extractor's weights come with the file (noiseprint.*): no separate load here.
        return MUNTrainingModel({**config, "noiseprint_weights": None}, pretrained=False)

    def extractor(self) -> Any:
        """The frozen noiseprint extractor (eval mode)."""
        if self._extractor is None:
            if self.runtime == "torch":
                self._extractor = self.model().noiseprint
            else:
                from forgectl.nets.noiseprint import NoiseprintNet

                name = self.model_config().get("noiseprint_weights") or ""
                path = weights_dir() / str(name).split("/")[-1]
                if not path.is_file():
                    raise WeightsError(f"mun --runtime onnx needs the noiseprint extractor "
                                       f"{path} (forgectl train --method noiseprint --ship)")
                self._extractor, _ = load_network(path, NoiseprintNet)
        return self._extractor

    def noiseprint(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) float32 noiseprint of the full-resolution image."""
        import torch

        from forgectl.nets.noiseprint import extract_tiled, rgb_input

        with torch.inference_mode():
            return extract_tiled(self.extractor(), rgb_input(rgb))[0, 0].numpy()

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from forgectl.nets.encoders import encoder_entry

        entry = encoder_entry(self.model_config()["rgb_encoder"])
        return tuple(entry.mean), tuple(entry.std)

    def analyze(self, image: ForensicImage) -> Result:
        import torch

        from forgectl.nets.noiseprint import noiseprint_heatmap

        h, w = image.height, image.width
        noise = self.noiseprint(image.rgb)
        tile = self.options["tile"]
        # Images smaller than a tile are padded to the full square (as trained), never resized.
        plan = plan_tiles(max(h, tile), max(w, tile), tile, self.options["overlap"],
                          self.multiple)
        rgb = pad_to(image.rgb, plan.padded_height, plan.padded_width)
        noise_pad = pad_to(noise, plan.padded_height, plan.padded_width)
        mean, std = self.normalization()

        def feeds(t: Any) -> dict[str, np.ndarray]:
            win = (slice(t.y0, t.y0 + t.height), slice(t.x0, t.x0 + t.width))
            return {"image": np.ascontiguousarray(normalize_rgb(rgb[win], mean, std)[None]),
                    "noiseprint": np.ascontiguousarray(noise_pad[win], np.float32)[None, None]}

        heat = self.blend(plan, feeds)[:h, :w]
        with torch.inference_mode():
            noise_map = noiseprint_heatmap(torch.from_numpy(noise)[None, None])[0, 0].numpy()
        facts = {"tiles": len(plan.tiles), "tile_size": tile,
                 "noiseprint": self.model_config().get("noiseprint"),
                 "rgb_encoder": self.model_config().get("rgb_encoder"),
                 "mmq": self.model_config().get("mmq", True)}
        return Result.from_heatmap(heat, self.threshold, maps={"noiseprint": noise_map},
                                   facts=facts)

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note or "not applicable to this input"
        return (
            f"MUN (RGB + noiseprint) flags {100 * result.tampered_fraction:.1f}% of pixels as "
            f"manipulated at threshold {self.threshold:.2f}; image score {result.score:.2f}. "
            "The noiseprint map shows where the camera/processing trace departs from the rest."
        )

    def export_graph(self) -> ExportGraph:
        mean, std = self.normalization()
        rng = np.random.default_rng(0)
        h, w = TRACE_SIZE
        example = {"image": rng.standard_normal((1, 3, h, w)).astype(np.float32),
                   "noiseprint": (0.01 * rng.standard_normal((1, 1, h, w))).astype(np.float32)}
        contract = {
            "inputs": {
                "image": {"shape": [1, 3, "height", "width"], "dtype": "float32",
                          "meaning": "RGB, channels first, (rgb / 255 - mean) / std",
                          "mean": list(mean), "std": list(std)},
                "noiseprint": {"shape": [1, 1, "height", "width"], "dtype": "float32",
                               "meaning": "the noiseprint extractor's output on the whole "
                               "image (rgb / 256 in), cut to the tile"},
            },
            "outputs": {"mask": {"shape": [1, 1, "height", "width"], "dtype": "float32",
                                 "meaning": "probability that the pixel is manipulated"}},
            "constraints": {"batch": 1, "multiple": MULTIPLE,
                            "tiling": "square tiles of the training crop; smaller images "
                            "padded (zeros) to it, never resized"},
        }
        return ExportGraph(
            module=mun_tile_graph(self.model().mun),
            input_names=("image", "noiseprint"),
            output_names=("mask",),
            dynamic_axes={"image": {2: "height", 3: "width"},
                          "noiseprint": {2: "height", 3: "width"},
                          "mask": {2: "height", 3: "width"}},
            example=example,
            contract=contract,
        )
