"""The contract between the shared trainer and each learned method.

Each learned method has a recipe module ``forgectl/recipes/<name>.py`` exposing
``recipe() -> Recipe``; the registry names it. The trainer (``forgectl.training.trainer``) is
method-agnostic and is handed the recipe: it asks it for a model, turns synthetic samples
into tensors with it, and calls its loss. Configs are plain data
(``dict``) so they go verbatim into the model card.

Data flow::

    corpus photo --synth--> SynthSample --recipe.prepare--> dict of tensors (one sample)
        --recipe.collate--> batch --recipe.loss(model, batch)--> (loss, logs)
        --recipe.predict(model, batch)--> (B, 1, H, W) probabilities (validation metrics)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.synth.sample import SynthSample

if TYPE_CHECKING:  # torch stays out of import time
    import torch


class Recipe:
    """How one learned method is built, fed and trained. Subclass per method.

    Attributes:
        name: the method's registry name.
        configs: named configs as plain data, at least ``"tiny"`` (CPU, shipped) and
            ``"paper"`` (published scale). Each holds model and training settings
            (``crop``, ``batch_size``, ``lr``, ``steps``, ...).
        init_skip_prefixes: state-dict prefixes of frozen parts that :meth:`build_model` loads
            from their own files (a pretrained extractor); a ``--init`` file's copies of them
            are not loaded, so the model keeps the part its config names.
    """

    name: str = ""
    configs: dict[str, dict[str, Any]] = {}
    init_skip_prefixes: tuple[str, ...] = ()

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
