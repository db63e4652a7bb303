"""ReConWave-Net: restore brightness / contrast disturbances, then localize with a wavelet U-Net.

ReConWave-Net, J. Comput. Appl. 2026, 46(6): 1893-1903. Two learned modules run in sequence:

1. restoration (:class:`forgectl.backends.restorer.Restorer`): a classifier reads the whole
   image and decides none / brightness / contrast and the strength; only when it sees a disturbance
   does the Swin restorer undo it. The JSON facts record the decision (``restoration``).
2. localization (:class:`forgectl.nets.wavelet_unet.WaveletUNet`) on the restored pixels, in
   overlapping tiles on the 8x8 grid (padded, never resized), blended.

Shipped weights: ``weights/reconwave-tiny.safetensors`` (localizer) and
``weights/`` + :data:`forgectl.backends.restorer.DEFAULT_RESTORE_WEIGHTS` (restoration), each with
its model card.
On the onnx runtime (the default when the ONNX twins are shipped: ``forgectl export --method
reconwave --shipped`` writes ``reconwave-tiny.onnx`` and the restoration module's two twins,
its :meth:`~ReConWaveBackend.auxiliary_networks`) the whole method runs in onnxruntime,
without torch; ``--runtime torch`` runs all three networks in PyTorch. Options:
``restore`` (``learned`` default, ``classical`` = the blind baseline of
:func:`forgectl.analysis.restoration.classical_restore`, which changes every image, or ``off``),
``restore_weights`` (default: the shipped restoration weights above),
``min_confidence`` (0.5), ``tile`` (384, multiple of 32) and ``overlap`` (64).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.analysis.restoration import classical_restore
from forgectl.backends.base import MethodSpec, Result
from forgectl.backends.learned import (
    AuxiliaryNetwork,
    ExportGraph,
    LearnedBackend,
    TileRunner,
    average_with_mirror,
    flip_option,
    tiling_options,
)
from forgectl.backends.options import Option
from forgectl.backends.restorer import (
    DEFAULT_RESTORE_WEIGHTS,
    Restorer,
    restoration_available,
    restoration_networks,
)
from forgectl.errors import WeightsError
from forgectl.intake import ForensicImage
from forgectl.weights import weights_dir

if TYPE_CHECKING:
    from forgectl.nets.wavelet_unet import WaveletUNet

PAPER = (
    "ReConWave-Net: restoration of brightness/contrast disturbances and a wavelet-enhanced "
    "contrastive U-Net, J. Comput. Appl. 2026, 46(6): 1893-1903"
)
MULTIPLE = 32
INPUT_NAMES = ("image",)
OUTPUT_NAMES = ("mask",)
#: Trace size of the export: a multiple of 32 that no parity sample's tile has.
TRACE_SIZE = (160, 224)
RESTORE_MODES = ("learned", "classical", "off")


class ReConWaveBackend(LearnedBackend):
    """Restoration (when a disturbance is seen) followed by wavelet U-Net localization."""

    spec = MethodSpec(
        name="reconwave",
        summary="ReConWave-Net: undo brightness/contrast, then a wavelet-enhanced U-Net",
        kind="learned",
        weights="reconwave-tiny.safetensors",
        paper=PAPER,
    )
    multiple = MULTIPLE
    OPTIONS = (
        Option("restore", "learned", "restoration before localizing: learned, classical "
               "(blind global linear fit, changes every image) or off", choices=RESTORE_MODES),
        Option("restore_weights", "", "restoration weights file (default: the shipped "
               f"{DEFAULT_RESTORE_WEIGHTS})"),
        Option("min_confidence", 0.5, "restore only when the classifier is this sure",
               minimum=0.0, maximum=1.0),
        *tiling_options(),
        flip_option(),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.restore_mode = self.options["restore"]
        self.tile = self.options["tile"]
        self.overlap = self.options["overlap"]
        self.min_confidence = self.options["min_confidence"]
        given = self.options["restore_weights"]
        self.restore_weights = Path(given) if given else weights_dir() / DEFAULT_RESTORE_WEIGHTS
        # On onnx the restoration twins and card are enough: the torch-free install ships no
        # .safetensors.
        if self.restore_mode == "learned" and not restoration_available(
                self.restore_weights, self.engine):
            missing = self.restore_weights if self.engine == "torch" else (
                f"{self.restore_weights.name}'s ONNX twins beside it (forgectl export --method "
                "reconwave --shipped)")
            raise WeightsError(f"restoration weights not found: {missing} (or use restore=off)")
        self._restorer: Restorer | None = None
        self._networks: tuple[AuxiliaryNetwork, ...] | None = None

    def build_network(self, config: dict[str, Any]) -> WaveletUNet:
        from forgectl.nets.wavelet_unet import WaveletUNet

        return WaveletUNet(config, pretrained=False)

    def auxiliary_networks(self) -> tuple[AuxiliaryNetwork, ...]:
        """The restoration module's classifier and restorer (``restore=learned``), run on the
        method's runtime: ONNX twins beside the restoration weights, or PyTorch."""
        if self.restore_mode != "learned":
            return ()
        if self._networks is None:  # one declaration: its two graphs share one torch load
            self._networks = restoration_networks(self.restore_weights)
        return self._networks

    def restorer(self) -> Restorer:
        if self._restorer is None:
            self._restorer = Restorer(self.restore_weights, min_confidence=self.min_confidence,
                                      runtime=self.engine, runners=self.auxiliary_runner)
        return self._restorer

    # ------------------------------------------------------------------ inference

    def _restore(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if self.restore_mode == "learned":
            return self.restorer().restore(rgb)
        if self.restore_mode == "classical":
            return classical_restore(rgb)
        return rgb, {"method": "off", "restored": False}

    def _localize(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        from forgectl.tiling import pad_to

        plan = self.plan(rgb.shape[0], rgb.shape[1])
        padded = pad_to(rgb, plan.padded_height, plan.padded_width)  # as in training crops

        def feeds(t: Any) -> dict[str, np.ndarray]:
            win = padded[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width]
            return {"image": np.ascontiguousarray(win.transpose(2, 0, 1), np.float32)[None]
                    / 255.0}

        return self.blend(plan, feeds), len(plan.tiles)

    # ------------------------------------------------------------------ runtimes and export

    def torch_runner(self) -> TileRunner:
        """The localizer on one tile: ``image (1, 3, H, W)`` float32 in [0, 1] -> ``mask
        (1, 1, H, W)`` probability."""
        import torch

        model = self.model()

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.inference_mode():
                out = model(torch.from_numpy(np.ascontiguousarray(feeds["image"])))
                return {"mask": torch.sigmoid(out["mask"]).float().numpy()}

        return run

    def export_graph(self) -> ExportGraph:
        """The localizer's per-tile graph (restoration is not part of it: it reads the whole
        image before tiling; its two networks are :meth:`auxiliary_networks`)."""
        from forgectl.nets.wavelet_unet import tile_graph

        h, w = TRACE_SIZE
        example = {"image": np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)}
        contract = {
            "inputs": {
                "image": {
                    "shape": [1, 3, "height", "width"],
                    "dtype": "float32",
                    "meaning": "RGB, channels first, rgb / 255 (the graph normalizes itself); "
                    "restored first when the restoration module saw a disturbance",
                }
            },
            "outputs": {
                "mask": {
                    "shape": [1, 1, "height", "width"],
                    "dtype": "float32",
                    "meaning": "probability that the pixel is manipulated",
                }
            },
            "constraints": [
                f"height and width multiples of {MULTIPLE} (the backend pads tiles)",
                "batch 1",
            ],
        }
        return ExportGraph(
            module=tile_graph(self.model()),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={"image": {2: "height", 3: "width"}, "mask": {2: "height", 3: "width"}},
            example=example,
            contract=contract,
        )

    def analyze(self, image: ForensicImage) -> Result:
        restored, restoration = self._restore(image.rgb)
        heat, tiles = self._localize(restored)
        if self.options["flip"]:
            heat = average_with_mirror(heat, restored, lambda m: self._localize(m)[0])
        config = self.model_config()
        facts = {
            "restoration": restoration,
            "wavelet": config.get("wavelet"),
            "encoder": config.get("encoder"),
            "tiles": tiles,
            "flip": self.options["flip"],
        }
        note = ""
        if restoration.get("restored") and restoration.get("method") == "learned":
            strength = (
                f"alpha {restoration['alpha']:+.2f}"
                if restoration["type"] == "brightness"
                else f"beta {restoration['beta']:.2f}"
            )
            note = f"a {restoration['type']} disturbance ({strength}) was undone before localizing"
        elif restoration.get("method") == "classical":
            note = "pixels were remapped by the classical global linear fit before localizing"
        return Result.from_heatmap(heat, self.threshold, note=note, facts=facts)

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note or "not applicable to this input"
        r = result.facts.get("restoration", {})
        if r.get("restored"):
            first = f"after undoing a {r.get('type', 'global')} disturbance, "
        else:
            first = "with no restoration needed, "
        return (
            f"ReConWave-Net, {first}flags {100 * result.tampered_fraction:.1f}% of pixels "
            f"as manipulated at threshold {self.threshold:.2f}; image score "
            f"{result.score:.2f}"
        )
