"""The contract between the shared trainer and each learned method.

A learned backend module ``forgectl/backends/<name>.py`` exposes ``training_recipe() -> Recipe``
(imported lazily: backend modules never import torch at module level). The trainer
(``forgectl.training.trainer``) is method-agnostic: it asks the recipe for a model, turns
synthetic samples into tensors with it, and calls its loss. Configs are plain data
(``dict``) so they go verbatim into the model card.

Data flow::

    corpus photo --synth--> SynthSample --recipe.prepare--> dict of tensors (one sample)
        --recipe.collate--> batch --recipe.loss(model, batch)--> (loss, logs)
        --recipe.predict(model, batch)--> (B, 1, H, W) probabilities (validation metrics)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch stays out of import time
    import torch

    from forgectl.intake import ForensicImage


@dataclass
class SynthSample:
    """One synthetic training or test sample, forged or authentic.

    Attributes:
        image: the final file decoded by :func:`forgectl.intake.image_from_bytes`: pixels (H, W, 3)
            uint8 and, when the history ends in JPEG, the real DCT coefficients and tables.
        file_bytes: the final encoded file (real JPEG bytes when the history ends in JPEG).
        file_ext: ``".jpg"`` or ``".png"``.
        mask: (H, W) uint8, 1 = manipulated, 0 = pristine (all zeros for authentic samples).
        boxes: (N, 4) float32 ``x0, y0, x1, y1`` (pixels, exclusive end) of the mask's
            connected components; (0, 4) when the mask is empty.
        kind: ``"splice"``, ``"copymove"``, ``"removal"`` or ``"authentic"``.
        history: ordered list of processing steps, each a JSON-ready dict (``{"op": "jpeg",
            "quality": 85, "grid_shift": [0, 0]}``, ``{"op": "resize", "scale": 0.8}``, ...).
        disturbance: the global brightness/contrast disturbance applied last, as in
            ReConWave-Net: ``{"type": "none"|"brightness"|"contrast", "alpha": float|None,
            "beta": float|None}``; ``clean_rgb`` holds the image before it.
        clean_rgb: (H, W, 3) uint8 image before the disturbance (None when none was applied).
        source: corpus path(s) the sample was made from (for the data recipe).
        seed: the seed that reproduces this sample.
    """

    image: ForensicImage
    file_bytes: bytes
    file_ext: str
    mask: np.ndarray
    boxes: np.ndarray
    kind: str
    history: list[dict[str, Any]] = field(default_factory=list)
    disturbance: dict[str, Any] = field(default_factory=lambda: {"type": "none"})
    clean_rgb: np.ndarray | None = None
    source: list[str] = field(default_factory=list)
    seed: int = 0


class Recipe:
    """How one learned method is built, fed and trained. Subclass per method.

    Attributes:
        name: the method's registry name.
        configs: named configs as plain data, at least ``"tiny"`` (CPU, shipped) and
            ``"paper"`` (published scale). Each holds model and training settings
            (``crop``, ``batch_size``, ``lr``, ``steps``, ...).
    """

    name: str = ""
    configs: dict[str, dict[str, Any]] = {}

    def build_model(self, config: dict[str, Any]) -> torch.nn.Module:
        """A fresh model for ``config`` (pretrained parts loaded from local packages only)."""
        raise NotImplementedError

    def prepare(
        self, sample: SynthSample, config: dict[str, Any], rng: np.random.Generator
    ) -> dict[str, Any]:
        """Turn one sample into a dict of tensors of fixed size (crop on the 8x8 grid)."""
        raise NotImplementedError

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Stack prepared samples; the default stacks tensors and lists the rest."""
        import torch

        out: dict[str, Any] = {}
        for key in items[0]:
            values = [it[key] for it in items]
            out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
        return out

    def loss(
        self, model: torch.nn.Module, batch: dict[str, Any], config: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss (scalar tensor) and named float logs."""
        raise NotImplementedError

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        """(B, 1, H, W) tamper probabilities, in eval mode, for validation metrics."""
        raise NotImplementedError

    def dev_backend_options(self, config: dict[str, Any]) -> dict[str, Any]:
        """Backend options for the trainer's real-dev evaluation of this config's weights
        (``--dev``); the default is the backend's defaults."""
        return {}
