"""The learned restoration module of ReConWave-Net: classify the whole image, then restore it
in tiles (:class:`Restorer`). ``reconwave`` runs it before localizing; ``forgectl restore``
runs it alone.

The classifier (:class:`forgectl.nets.restoration.RestorationNet`) decides none / brightness /
contrast and its strength from the whole image; the numpy decision checks
(:func:`forgectl.analysis.restoration.refine_decision`) confirm or veto it from the pixels;
unclipped values are inverted exactly and only the clipped ones go through the Swin restorer,
on overlapping tiles (blended). Weights: ``weights/reconwave-restore-<config>.safetensors`` +
model card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.analysis.disturbance import clipped_values
from forgectl.analysis.restoration import (
    check_rgb,
    exact_inverse,
    lost_value_range,
    refine_decision,
)
from forgectl.backends.base import compute_threads
from forgectl.errors import UsageError
from forgectl.tiling import Tile, blend_tiles, plan_tiles
from forgectl.weights import load_network, weights_dir

if TYPE_CHECKING:
    from forgectl.nets.restoration import RestorationNet

#: Stage 2 (``restore-tiny-ft``), fine-tuned from stage 1 (``reconwave-restore-tiny``).
DEFAULT_RESTORE_WEIGHTS = "reconwave-restore-tiny-ft.safetensors"


def load_restoration_net(weights: Path) -> tuple[RestorationNet, dict[str, Any]]:
    """The network and its model card from ``weights`` (:func:`forgectl.weights.load_network`).

    Raises:
        WeightsError: a missing file or card, or tensors that do not match the card.
    """
    from forgectl.nets.restoration import RestorationNet

    return load_network(Path(weights), RestorationNet)


@dataclass
class Classification:
    """What the classifier says about a whole image."""

    type: str
    alpha: float | None
    beta: float | None
    confidence: float
    probabilities: dict[str, float]
    condition: Any  # (1, 5) torch tensor passed to the restorer
    #: The strength heads' outputs whatever the class (``decide(force=True)`` needs them).
    alpha_head: float = 0.0
    beta_head: float = 1.0


class Restorer:
    """The learned restoration module: classify the whole image, then restore it in tiles.

    Args:
        weights: ``.safetensors`` of a ``RestorationNet`` with its model card (default
            ``weights/`` + :data:`DEFAULT_RESTORE_WEIGHTS`).
        tile: restorer tile size (multiple of the attention window); overlap: tile overlap
            (multiple of 8), blended linearly.
        min_confidence: restore only when the predicted class is not ``none`` and its
            probability reaches this.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        tile: int = 256,
        overlap: int = 32,
        min_confidence: float = 0.5,
    ) -> None:
        import torch

        self.weights = Path(weights) if weights else weights_dir() / DEFAULT_RESTORE_WEIGHTS
        self.net, self.card = load_restoration_net(self.weights)
        torch.set_num_threads(compute_threads())
        window = self.net.restorer.window
        if tile < 2 * window or tile % window or tile % 8:
            raise UsageError(f"restore: tile must be a multiple of 8 and {window}, >= {2 * window}")
        if overlap < 0 or overlap % 8 or overlap >= tile // 2:
            raise UsageError("restore: overlap must be a multiple of 8, below half the tile")
        if not 0.0 <= min_confidence <= 1.0:
            raise UsageError("restore: min_confidence must be in [0, 1]")
        self.tile, self.overlap, self.min_confidence = tile, overlap, min_confidence

    def classify(self, rgb: np.ndarray) -> Classification:
        """Classifier decision for (H, W, 3) uint8 pixels."""
        import torch

        from forgectl.nets.restoration import DISTURBANCE_CLASSES, condition_from_prediction

        check_rgb(rgb)
        x = torch.from_numpy(np.array(rgb.transpose(2, 0, 1))).float()[None] / 255
        with torch.inference_mode():
            out = self.net.classifier(*self.net.classifier.features(x))
            probs = torch.softmax(out["logits"], dim=1)[0]
            cond = condition_from_prediction(out)
        k = int(probs.argmax())
        kind = DISTURBANCE_CLASSES[k]
        return Classification(
            type=kind,
            alpha=round(float(out["alpha"][0]), 4) if kind == "brightness" else None,
            beta=round(float(out["beta"][0]), 4) if kind == "contrast" else None,
            confidence=round(float(probs[k]), 4),
            probabilities={
                c: round(float(p), 4) for c, p in zip(DISTURBANCE_CLASSES, probs, strict=True)
            },
            condition=cond,
            alpha_head=round(float(out["alpha"][0]), 4),
            beta_head=round(float(out["beta"][0]), 4),
        )

    def restore(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(H, W, 3) uint8 -> (restored uint8 of the same shape, facts). Never changes ``rgb``.

        With no disturbance seen (class ``none``, or confidence below ``min_confidence``) the
        result is a copy of the input and ``facts["restored"]`` is False.
        """
        facts = self.decide(rgb)
        return self.apply(rgb, facts), facts

    def decide(self, rgb: np.ndarray, force: bool = False) -> dict[str, Any]:
        """The decision alone (classifier, then the pixel checks): the facts of :meth:`restore`
        without running the restorer network, so a caller that will not use restored pixels
        pays only for the classifier.

        ``force``: when the classifier says ``none`` or is below ``min_confidence``, try its
        likeliest disturbance anyway (``--restore on``: the user says the photo was edited);
        the pixel checks can still veto it. ``facts["forced"]`` says when that happened.
        """
        c = self.classify(rgb)
        facts: dict[str, Any] = {
            "method": "learned",
            "weights": self.weights.name,
            "type": c.type,
            "alpha": c.alpha,
            "beta": c.beta,
            "confidence": c.confidence,
            "probabilities": c.probabilities,
            "min_confidence": self.min_confidence,
        }
        kind, alpha, beta = c.type, c.alpha, c.beta
        if kind == "none" or c.confidence < self.min_confidence:
            if not force:
                facts["restored"] = False
                return facts
            kind = max(("brightness", "contrast"), key=lambda k: c.probabilities[k])
            alpha = c.alpha_head if kind == "brightness" else None
            beta = c.beta_head if kind == "contrast" else None
            facts["forced"] = {"type": kind, "alpha": alpha, "beta": beta}
        checked = refine_decision(rgb, kind, alpha, beta)
        facts.update(checked)
        if checked["veto"]:
            facts["classifier_type"] = kind
            facts["restored"] = False
            return facts
        facts["restored"] = True
        lost = clipped_values(rgb, facts["type"], facts["alpha"], facts["beta"])
        facts["clipped_fraction"] = round(float(lost.mean()), 4)
        return facts

    def apply(self, rgb: np.ndarray, facts: dict[str, Any]) -> np.ndarray:
        """Restore ``rgb`` as :meth:`decide` decided (a copy of it when nothing was decided):
        the exact inverse where nothing clipped, the restorer network's fill (projected onto
        the interval the clean value must lie in) where it did."""
        if not facts.get("restored"):
            return rgb.copy()
        exact, lost = exact_inverse(rgb, facts["type"], facts["alpha"], facts["beta"])
        if not lost.any():  # nothing was clipped: the inverse formula is the whole answer
            return exact
        net = self._run_tiles(rgb, self._decided_condition(facts), lost.any(axis=2))
        lo, hi = lost_value_range(facts["type"], facts["alpha"], facts["beta"])
        # A clipped value's truth lies in [lo, hi]: projecting the network's estimate onto
        # that interval can only bring it closer.
        filled = np.clip(net, round(lo * 255), round(hi * 255)).astype(np.uint8)
        return np.where(lost, filled, exact)

    @staticmethod
    def _decided_condition(facts: dict[str, Any]) -> Any:
        """(1, 5) condition of the decision: one-hot class and its strength (what the
        restorer saw in the teacher-forced half of training), not the soft probabilities,
        whose mixture of inverses would blur an exact inverse."""
        import torch

        from forgectl.nets.restoration import DISTURBANCE_CLASSES, condition_from_truth

        kind = torch.tensor([DISTURBANCE_CLASSES.index(facts["type"])])
        alpha = torch.tensor([facts["alpha"] or 0.0])
        beta = torch.tensor([facts["beta"] or 1.0])
        return condition_from_truth(kind, alpha, beta)

    def _run_tiles(
        self, rgb: np.ndarray, condition: Any, needed: np.ndarray | None = None
    ) -> np.ndarray:
        """The restorer on blended tiles: (H, W, 3) uint8 -> (H, W, 3) uint8.

        ``needed`` (H, W) bool: only tiles holding a needed pixel run (the caller uses the
        output there alone; every tile covering such a pixel runs, so its blend is unchanged).
        """
        import torch

        h, w = rgb.shape[:2]
        plan = plan_tiles(h, w, self.tile, self.overlap, multiple=8)
        # Edge replication, not zeros: a black border would look like a disturbance edge.
        padded = np.pad(
            rgb, ((0, plan.padded_height - h), (0, plan.padded_width - w), (0, 0)), mode="edge"
        )
        def predict(t: Tile) -> np.ndarray | None:
            rows, cols = slice(t.y0, t.y0 + t.height), slice(t.x0, t.x0 + t.width)
            if needed is not None and not needed[rows, cols].any():
                return None
            x = torch.from_numpy(np.ascontiguousarray(padded[rows, cols].transpose(2, 0, 1)))
            return self.net.restorer(x.float()[None] / 255.0, condition)[0].clamp(0, 1).numpy()

        with torch.inference_mode():
            planes = blend_tiles(plan, predict, channels=3).transpose(1, 2, 0)
        return np.clip(np.round(planes * 255.0), 0, 255).astype(np.uint8)
