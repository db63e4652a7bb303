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

Two networks, one loop on either runtime: the exported graph (``forgectl export``) is MUN on
one tile, ``(image, noiseprint) -> mask``; the extractor is the auxiliary network
``noiseprint`` (:meth:`MunBackend.auxiliary_networks`), from the file the MUN card names
(``weights/noiseprint-<config>.safetensors``, the float32 extractor MUN was trained with; the
MUN file's own float16 copy only when the card names none, as for a test's random weights).
``forgectl export --method mun --shipped`` writes both ONNX twins (``mun-tiny.onnx``,
``noiseprint-tiny.onnx``); with ``--runtime onnx`` (the default when they exist) the tiled
extraction (:func:`forgectl.analysis.noiseprint.extract_tiled`), the input normalization and
the anomaly map all come from numpy and the twins' cards, so torch is never imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.analysis.network_inputs import normalize_rgb
from forgectl.analysis.noiseprint import (
    EXTRACTION_TILE,
    extract_tiled,
    noiseprint_heatmap,
    noiseprint_input,
)
from forgectl.backends.base import MethodSpec, Result, compute_threads
from forgectl.backends.learned import (
    AuxiliaryNetwork,
    ExportGraph,
    LearnedBackend,
    average_with_mirror,
    flip_option,
    tiling_options,
)
from forgectl.errors import WeightsError
from forgectl.intake import ForensicImage
from forgectl.synth.scenes import natural_image
from forgectl.tiling import pad_to, plan_tiles
from forgectl.weights import load_network, read_tensors, weights_dir

if TYPE_CHECKING:
    import torch

PAPER = (
    "X. Liu et al., 'Rethinking Image Manipulation Localization: Multi-Modal Query and "
    "U-shaped Network' (MUN), AAAI 2025"
)
MULTIPLE = 32
#: Trace size of the export: a multiple of 32 that no parity sample's tile has.
TRACE_SIZE = (160, 224)
#: Trace size of the extractor's export: odd, and no parity sample has it, so a size frozen
#: into the graph fails the parity check.
NOISEPRINT_TRACE = (45, 67)
#: Parity samples of the extractor's twin (H, W): odd sizes, sizes that are not multiples of
#: 8 or 32, and sides longer than the extraction tile (EXTRACTION_TILE = 1024), since the
#: twin runs on whole images up to that tile plus margins. Thin strips keep the check cheap.
NOISEPRINT_SAMPLES = ((37, 53), (100, 260), (257, 181), (1041, 76), (72, 1050))


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


def extractor_graph(net: Any) -> ExportGraph:
    """The noise extractor as an export graph: ``image (1, 3, H, W)`` float32 ``rgb / scale``
    -> ``noiseprint (1, 1, H, W)``, any H, W. The contract records what the torch-free path
    needs besides the graph: the input scale and the receptive radius of the tiled loop."""
    rng = np.random.default_rng(0)
    h, w = NOISEPRINT_TRACE
    scale = float(net.input_scale)
    example = {"image": (rng.integers(0, 256, (1, 3, h, w)) / scale).astype(np.float32)}
    contract = {
        "inputs": {"image": {"shape": [1, 3, "height", "width"], "dtype": "float32",
                             "meaning": "RGB, channels first, rgb / scale", "scale": scale}},
        "outputs": {"noiseprint": {"shape": [1, 1, "height", "width"], "dtype": "float32",
                                   "meaning": "the noise residual (camera/processing "
                                   "fingerprint) MUN's noise stream reads"}},
        "constraints": {"batch": 1, "multiple": 1, "receptive_margin": int(net.margin),
                        "tiling": "any size; large images in output tiles grown by "
                        "receptive_margin pixels inside the image, which equals one pass"},
    }
    return ExportGraph(
        module=net.eval(),
        input_names=("image",),
        output_names=("noiseprint",),
        dynamic_axes={"image": {2: "height", 3: "width"},
                      "noiseprint": {2: "height", 3: "width"}},
        example=example,
        contract=contract,
    )


def noiseprint_samples() -> list[dict[str, np.ndarray]]:
    """Parity feeds of the extractor's twin: photo-like images at :data:`NOISEPRINT_SAMPLES`."""
    return [{"image": noiseprint_input(natural_image(h, w, seed=i))}
            for i, (h, w) in enumerate(NOISEPRINT_SAMPLES)]


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
    OPTIONS = (*tiling_options(tile=256, overlap=64), flip_option())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._noiseprint_graph: ExportGraph | None = None

    def build_network(self, config: dict[str, Any]) -> Any:
        from forgectl.nets.mun import MUNTrainingModel

        # The extractor's weights come with the file (noiseprint.*): no separate load here.
        return MUNTrainingModel({**config, "noiseprint_weights": None}, pretrained=False)

    # ------------------------------------------------------------------ noise extractor

    def noiseprint_files(self) -> tuple[Path, Path]:
        """``(weights, twin)`` of the noise extractor.

        The file the MUN card names (MUN was trained with it frozen, in float32; the shipped
        MUN file holds a float16 copy): the training's ``noiseprint_weights`` override, else
        the network config's; as given when that path is a file (a candidate run's extractor),
        else by name in the weights folder. Only when the card names none (random test
        weights) or, on torch, the named file is absent, the copy inside the MUN file itself,
        with its twin beside it as ``<stem>-noiseprint.onnx``.
        """
        name = ((self.model_card().get("config") or {}).get("noiseprint_weights")
                or self.model_config().get("noiseprint_weights"))
        if name:
            given = Path(str(name))
            path = given if given.is_file() else weights_dir() / given.name
            if self.engine == "onnx" or path.is_file():
                return path, path.with_suffix(".onnx")
        own = self.weights_path
        return own, own.with_name(f"{own.stem}-noiseprint.onnx")

    def noiseprint_graph(self) -> ExportGraph:
        """The extractor's export graph (PyTorch), built once; its module is what the torch
        runtime runs and what ``forgectl export`` traces."""
        if self._noiseprint_graph is None:
            weights, _ = self.noiseprint_files()
            if weights == self.weights_path:
                net = self.model().noiseprint
            else:
                import torch

                from forgectl.nets.noiseprint import NoiseprintNet

                # model() sets the thread budget; the extractor runs before MUN is loaded.
                torch.set_num_threads(compute_threads())
                net, _ = load_network(weights, NoiseprintNet)
                self._check_extractor(net, weights)
            self._noiseprint_graph = extractor_graph(net)
        return self._noiseprint_graph

    def _check_extractor(self, net: Any, weights: Path) -> None:
        """Refuse an extractor other than the one MUN was trained with: the MUN file's own
        float16 copy (``noiseprint.*``) must equal the named file up to float16 rounding (a
        card naming a file by a name another extractor now has would run silently wrong)."""
        own = {k.removeprefix("noiseprint."): v for k, v in read_tensors(self.weights_path).items()
               if k.startswith("noiseprint.")}
        named = net.state_dict()
        for key, value in own.items():
            if not value.is_floating_point() or key not in named:
                continue
            ref = named[key].float()
            if float((value.float() - ref).abs().max()) > 2e-3 * (1.0 + float(ref.abs().max())):
                raise WeightsError(
                    f"{self.weights_path.name} was trained with another noise extractor than "
                    f"{weights} ({key} differs): name the one it was trained with "
                    "(noiseprint_weights in its model card)")

    def auxiliary_networks(self) -> tuple[AuxiliaryNetwork, ...]:
        weights, twin = self.noiseprint_files()
        return (AuxiliaryNetwork(name="noiseprint", weights=weights, twin=twin,
                                 graph=self.noiseprint_graph, samples=noiseprint_samples),)

    def noiseprint_contract(self) -> tuple[float, int]:
        """``(input scale, receptive margin)`` of the extractor: from the graph on torch, from
        the contract embedded in the twin on onnx (no torch, no network code)."""
        if self.engine != "onnx":
            contract = self.noiseprint_graph().contract
        else:
            runner = self.auxiliary_runner("noiseprint")
            contract = (getattr(runner, "card", None) or {}).get("export") or {}
        try:
            return (float(contract["inputs"]["image"]["scale"]),
                    int(contract["constraints"]["receptive_margin"]))
        except (KeyError, TypeError, ValueError) as exc:
            _, twin = self.noiseprint_files()
            raise WeightsError(f"{twin.name}: model card has no input scale or receptive "
                               f"margin ({exc!r}); export it again with `forgectl export "
                               "--method mun --shipped`") from exc

    def noiseprint(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) float32 noiseprint of the full-resolution image, through
        the same numpy tiling loop on either runtime."""
        scale, margin = self.noiseprint_contract()
        run = self.auxiliary_runner("noiseprint")
        return extract_tiled(run, noiseprint_input(rgb, scale), margin, EXTRACTION_TILE)[0, 0]

    def torch_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        # MUN's config names its RGB stream's encoder "rgb_encoder" (the noise stream has one too).
        from forgectl.nets.encoders import encoder_entry

        entry = encoder_entry(self.model_config()["rgb_encoder"])
        return tuple(entry.mean), tuple(entry.std)

    def _heatmap(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """(H, W, 3) uint8 -> ``(heatmap (H, W), noiseprint (H, W), tiles)``: the noiseprint of
        the whole image first, then both streams cut into the same tiles."""
        h, w = image_rgb.shape[:2]
        noise = self.noiseprint(image_rgb)
        tile = self.options["tile"]
        # Images smaller than a tile are padded to the full square (as trained), never resized.
        plan = plan_tiles(max(h, tile), max(w, tile), tile, self.options["overlap"],
                          self.multiple)
        rgb = pad_to(image_rgb, plan.padded_height, plan.padded_width)
        noise_pad = pad_to(noise, plan.padded_height, plan.padded_width)
        mean, std = self.normalization()

        def feeds(t: Any) -> dict[str, np.ndarray]:
            win = (slice(t.y0, t.y0 + t.height), slice(t.x0, t.x0 + t.width))
            return {"image": np.ascontiguousarray(normalize_rgb(rgb[win], mean, std)[None]),
                    "noiseprint": np.ascontiguousarray(noise_pad[win], np.float32)[None, None]}

        return self.blend(plan, feeds)[:h, :w], noise, len(plan.tiles)

    def analyze(self, image: ForensicImage) -> Result:
        heat, noise, tiles = self._heatmap(image.rgb)
        if self.options["flip"]:
            heat = average_with_mirror(heat, image.rgb, lambda m: self._heatmap(m)[0])
        noise_map = noiseprint_heatmap(noise)
        facts = {"tiles": tiles, "tile_size": self.options["tile"], "flip": self.options["flip"],
                 "noiseprint": self.model_config().get("noiseprint"),
                 # which extractor weights ran (the onnx twin is their parity-checked export)
                 "noiseprint_weights": self.noiseprint_files()[0].name,
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
