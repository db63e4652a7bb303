"""ReConWave-Net: restore brightness / contrast disturbances, then localize with a wavelet U-Net.

ReConWave-Net, J. Comput. Appl. 2026, 46(6): 1893-1903. Two learned modules run in sequence:

1. restoration (:class:`forgectl.restore.Restorer`): a classifier reads the whole image and
   decides none / brightness / contrast and the strength; only when it sees a disturbance
   does the Swin restorer undo it. The JSON facts record the decision (``restoration``).
2. localization (:class:`forgectl.nets.wavelet_unet.WaveletUNet`) on the restored pixels, in
   overlapping tiles on the 8x8 grid (padded, never resized), blended.

Not registered in :mod:`forgectl.backends` yet: no trained weights exist. Options:
``restore`` (``learned`` default, ``classical`` = the blind baseline of
:func:`forgectl.restore.classical_restore`, which changes every image, or ``off``),
``restore_weights`` (default ``weights/reconwave-restore-tiny.safetensors``),
``min_confidence`` (0.5), ``tile`` (384, multiple of 32) and ``overlap`` (64).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.backends.base import WEIGHTS_DIR, Backend, MethodSpec, Result
from forgectl.errors import UsageError, WeightsError
from forgectl.intake import ForensicImage

if TYPE_CHECKING:
    from forgectl.nets.wavelet_unet import WaveletUNet
    from forgectl.restore import Restorer
    from forgectl.training.recipe import Recipe

PAPER = (
    "ReConWave-Net: restoration of brightness/contrast disturbances and a wavelet-enhanced "
    "contrastive U-Net, J. Comput. Appl. 2026, 46(6): 1893-1903"
)
MULTIPLE = 32
RESTORE_MODES = ("learned", "classical", "off")


class ReConWaveBackend(Backend):
    """Restoration (when a disturbance is seen) followed by wavelet U-Net localization."""

    spec = MethodSpec(
        name="reconwave",
        summary="ReConWave-Net: undo brightness/contrast, then a wavelet-enhanced U-Net",
        kind="learned",
        weights="reconwave-tiny.safetensors",
        paper=PAPER,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.restore_mode = str(self.options.get("restore", "learned"))
        if self.restore_mode not in RESTORE_MODES:
            raise UsageError(f"reconwave: restore must be one of {', '.join(RESTORE_MODES)}")
        self.tile = int(self.options.get("tile", 384))
        self.overlap = int(self.options.get("overlap", 64))
        self.min_confidence = float(self.options.get("min_confidence", 0.5))
        if self.tile < 64 or self.tile % MULTIPLE:
            raise UsageError(f"reconwave: tile must be a multiple of {MULTIPLE} and >= 64")
        if self.overlap < 0 or self.overlap % 8 or self.overlap >= self.tile // 2:
            raise UsageError("reconwave: overlap must be a multiple of 8, below half the tile")
        from forgectl.restore import DEFAULT_RESTORE_WEIGHTS

        given = self.options.get("restore_weights")
        self.restore_weights = Path(given) if given else WEIGHTS_DIR / DEFAULT_RESTORE_WEIGHTS
        if self.restore_mode == "learned" and not self.restore_weights.is_file():
            raise WeightsError(
                f"restoration weights not found: {self.restore_weights} (or use restore=off)"
            )
        self._model: WaveletUNet | None = None
        self._restorer: Restorer | None = None

    # ------------------------------------------------------------------ loading

    def model_config(self) -> dict[str, Any]:
        card = self.model_card()
        if not card or not isinstance(card.get("config"), dict):
            raise WeightsError(
                f"reconwave needs the model card "
                f"{self.weights_path.with_suffix('.json')} with the network config"
            )
        config = card["config"]
        return config["model"] if "model" in config else config

    def model(self) -> WaveletUNet:
        if self._model is None:
            import torch
            from safetensors.torch import load_file

            from forgectl.backends.base import compute_threads
            from forgectl.nets.wavelet_unet import WaveletUNet

            torch.set_num_threads(compute_threads())
            try:
                model = WaveletUNet(self.model_config(), pretrained=False)
            except (KeyError, TypeError, ValueError) as exc:
                raise WeightsError(f"reconwave model card config is invalid: {exc}") from exc
            try:
                state = load_file(str(self.weights_path))
            except Exception as exc:  # safetensors raises its own types for malformed files
                raise WeightsError(f"cannot read {self.weights_path}: {exc}") from exc
            state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
            own = model.state_dict()
            bad = sorted(set(own) ^ set(state)) + sorted(
                k for k in set(own) & set(state) if own[k].shape != state[k].shape
            )
            if bad:
                raise WeightsError(
                    f"{self.weights_path.name} does not match its model card (first: {bad[0]})"
                )
            model.load_state_dict(state, strict=True)
            model.eval()
            self._model = model
        return self._model

    def restorer(self) -> Restorer:
        if self._restorer is None:
            from forgectl.restore import Restorer

            self._restorer = Restorer(self.restore_weights, min_confidence=self.min_confidence)
        return self._restorer

    # ------------------------------------------------------------------ inference

    def _restore(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        if self.restore_mode == "learned":
            return self.restorer().restore(rgb)
        if self.restore_mode == "classical":
            from forgectl.restore import classical_restore

            return classical_restore(rgb)
        return rgb, {"method": "off", "restored": False}

    def _localize(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        import torch

        from forgectl.nets.tiling import BlendAccumulator, pad_to, plan_tiles

        model = self.model()
        plan = plan_tiles(rgb.shape[0], rgb.shape[1], self.tile, self.overlap, MULTIPLE)
        padded = pad_to(rgb, plan.padded_height, plan.padded_width)  # as in training crops
        acc = BlendAccumulator(plan)
        with torch.inference_mode():
            for t in plan.tiles:
                win = padded[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width]
                x = torch.from_numpy(np.ascontiguousarray(win.transpose(2, 0, 1))).float()
                prob = torch.sigmoid(model(x[None] / 255.0)["mask"])[0, 0]
                acc.add(t, prob.numpy())
        return acc.result(), len(plan.tiles)

    def analyze(self, image: ForensicImage) -> Result:
        restored, restoration = self._restore(image.rgb)
        heat, tiles = self._localize(restored)
        config = self.model_config()
        facts = {
            "restoration": restoration,
            "wavelet": config.get("wavelet"),
            "encoder": config.get("encoder"),
            "tiles": tiles,
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


def training_recipe() -> Recipe:
    """Both stages (``tiny``/``paper`` localizer, ``restore-tiny``/``restore-paper``)."""
    from forgectl.training.reconwave import training_recipe as recipe

    return recipe()
