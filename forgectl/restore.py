"""Undo a global brightness or contrast disturbance: the ReConWave-Net restoration front end.

Two restorers, both ``(H, W, 3) uint8 -> (restored uint8, facts)``:

* :func:`classical_restore`, the blind baseline of the restoration table: the inverse of a
  global linear fit ``I' = g I + o`` (below).
* :class:`Restorer`, the learned module (:class:`forgectl.nets.restoration.RestorationNet`):
  the classifier decides none / brightness / contrast and its strength from the whole image;
  when it sees a disturbance, the Swin restorer runs on overlapping tiles (blended), guided by
  that decision. Weights: ``weights/reconwave-restore-<config>.safetensors`` + model card.

The facts dict says what was done: ``{"method", "type", "alpha", "beta", "confidence",
"restored", ...}`` (``alpha`` only for brightness, ``beta`` only for contrast).

:func:`write_restoration` is what ``forgectl restore IMG --out DIR`` runs: it writes the
restored pixels as a lossless PNG and a JSON record, and never touches the input file.

**The classical baseline.** Brightness and contrast disturbances are both global linear maps
followed by clipping, so the baseline fits one map ``I' = g I + o`` and inverts it. It is blind
(it does not know the clean image), so it fits the disturbed image's *quantile function*
against a reference: :data:`REFERENCE_QUANTILES`, the mean quantile function of pooled RGB
values of 200 training-split corpus photos (``benchmarks/restore_table.py --fit-reference``).
Only quantile levels whose value is strictly inside (0, 255) enter the least-squares fit, so
saturated pixels (lost by clipping) do not bend the line; with fewer than
:data:`MIN_FIT_LEVELS` such levels the image is returned unchanged. ``g`` is bounded to
[0.25, 4]. Its known weakness is by design: it assumes every photo has the average tone
distribution, so it also "corrects" dark or bright scenes that were never disturbed (the
table's ``none`` row measures this).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.errors import InputError, UsageError, WeightsError

if TYPE_CHECKING:
    from forgectl.nets.restoration import RestorationNet

#: Quantile levels of the classical fit.
QUANTILE_LEVELS = tuple(round(0.02 + 0.04 * i, 2) for i in range(25))
#: Mean quantile function (values in [0, 1]) of 200 training-split photos of ../shared/corpus
#: (pooled R, G, B; long side 512), measured by ``benchmarks/restore_table.py --fit-reference``.
REFERENCE_QUANTILES = (
    0.0697,
    0.1190,
    0.1545,
    0.1857,
    0.2138,
    0.2408,
    0.2674,
    0.2934,
    0.3198,
    0.3460,
    0.3719,
    0.3988,
    0.4261,
    0.4541,
    0.4838,
    0.5145,
    0.5462,
    0.5784,
    0.6120,
    0.6476,
    0.6856,
    0.7264,
    0.7693,
    0.8210,
    0.8945,
)
MIN_FIT_LEVELS = 5
GAIN_BOUNDS = (0.25, 4.0)
#: Long side of the subsample the quantiles are computed on (speed; exact pixel values).
QUANTILE_SIDE = 512
DEFAULT_RESTORE_WEIGHTS = "reconwave-restore-tiny.safetensors"
RESTORE_SCHEMA = "forgectl.restore/1"


def image_quantiles(rgb: np.ndarray, levels: tuple[float, ...] = QUANTILE_LEVELS) -> np.ndarray:
    """Quantiles in [0, 1] of the pooled R, G, B values of (H, W, 3) uint8 pixels.

    Computed on a strided subsample of long side about :data:`QUANTILE_SIDE` (exact values: no
    averaging, so saturation stays visible).
    """
    _check_rgb(rgb)
    step = max(1, -(-max(rgb.shape[:2]) // QUANTILE_SIDE))
    values = rgb[::step, ::step].reshape(-1).astype(np.float64) / 255.0
    return np.quantile(values, levels)


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.size == 0:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {rgb.shape} {rgb.dtype}")


def fit_global_linear(rgb: np.ndarray) -> tuple[float, float, int]:
    """``(gain, offset, levels used)`` of ``I' = gain * I + offset`` fitted blind (see module).

    ``levels used`` is 0 when too few unsaturated quantiles remain; then ``(1, 0)``.
    """
    q = image_quantiles(rgb)
    ref = np.asarray(REFERENCE_QUANTILES)
    inside = (q > 0.5 / 255) & (q < 254.5 / 255)
    n = int(inside.sum())
    if n < MIN_FIT_LEVELS:
        return 1.0, 0.0, 0
    gain, offset = np.polyfit(ref[inside], q[inside], 1)
    gain = float(np.clip(gain, *GAIN_BOUNDS))
    # Refit the offset for the bounded gain (unchanged when the bound is not hit).
    offset = float(np.mean(q[inside] - gain * ref[inside]))
    return gain, offset, n


def classical_restore(rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Blind inverse of a global linear fit (the restoration table's baseline).

    Args:
        rgb: (H, W, 3) uint8 disturbed image.

    Returns:
        ``(restored (H, W, 3) uint8, facts)``; facts hold the fitted ``gain`` and ``offset``
        (on [0, 1] values), the equivalent ``alpha`` / ``beta`` reading and how many quantile
        levels the fit used.
    """
    gain, offset, used = fit_global_linear(rgb)
    x = rgb.astype(np.float64) / 255.0
    restored = np.clip(np.round((x - offset) / gain * 255.0), 0, 255).astype(np.uint8)
    facts: dict[str, Any] = {
        "method": "classical",
        "rule": "inverse of a global linear fit of the quantile function to a reference",
        "gain": round(gain, 4),
        "offset": round(offset, 4),
        "fit_levels": used,
        "restored": used > 0,
    }
    return restored, facts


# --------------------------------------------------------------------------- learned module


def load_restoration_net(weights: Path) -> tuple[RestorationNet, dict[str, Any]]:
    """The network and its config from ``weights`` and the model card next to it.

    The card's ``config["model"]`` (as the trainer writes it) or ``config`` is the network
    config. Raises :class:`WeightsError` for a missing file or card, or tensors that do not
    match the config.
    """
    import json

    from safetensors.torch import load_file

    from forgectl.nets.restoration import RestorationNet

    weights = Path(weights)
    if not weights.is_file():
        raise WeightsError(f"restoration weights not found: {weights}")
    card_path = weights.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
        config = card["config"]
        config = config["model"] if "model" in config else config
        net = RestorationNet(config)
    except FileNotFoundError:
        raise WeightsError(f"model card not found: {card_path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"model card {card_path} is invalid: {exc}") from exc
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own types for malformed files
        raise WeightsError(f"cannot read {weights}: {exc}") from exc
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    own = net.state_dict()
    bad = sorted(set(own) ^ set(state)) + sorted(
        k for k in set(own) & set(state) if own[k].shape != state[k].shape
    )
    if bad:
        raise WeightsError(f"{weights.name} does not match its model card (first: {bad[0]})")
    net.load_state_dict(state, strict=True)
    net.eval()
    return net, card


@dataclass
class Classification:
    """What the classifier says about a whole image."""

    type: str
    alpha: float | None
    beta: float | None
    confidence: float
    probabilities: dict[str, float]
    condition: Any  # (1, 5) torch tensor passed to the restorer


class Restorer:
    """The learned restoration module: classify the whole image, then restore it in tiles.

    Args:
        weights: ``.safetensors`` of a ``RestorationNet`` with its model card (default
            ``weights/reconwave-restore-tiny.safetensors``).
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

        from forgectl.backends.base import WEIGHTS_DIR, compute_threads

        self.weights = Path(weights) if weights else WEIGHTS_DIR / DEFAULT_RESTORE_WEIGHTS
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

        _check_rgb(rgb)
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()[None] / 255
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
        )

    def restore(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """(H, W, 3) uint8 -> (restored uint8 of the same shape, facts). Never changes ``rgb``.

        With no disturbance seen (class ``none``, or confidence below ``min_confidence``) the
        result is a copy of the input and ``facts["restored"]`` is False.
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
        if c.type == "none" or c.confidence < self.min_confidence:
            facts["restored"] = False
            return rgb.copy(), facts
        facts["restored"] = True
        return self._run_tiles(rgb, c.condition), facts

    def _run_tiles(self, rgb: np.ndarray, condition: Any) -> np.ndarray:
        import torch

        from forgectl.nets.tiling import BlendAccumulator, plan_tiles

        h, w = rgb.shape[:2]
        plan = plan_tiles(h, w, self.tile, self.overlap, multiple=8)
        # Edge replication, not zeros: a black border would look like a disturbance edge.
        padded = np.pad(
            rgb, ((0, plan.padded_height - h), (0, plan.padded_width - w), (0, 0)), mode="edge"
        )
        accs = [BlendAccumulator(plan) for _ in range(3)]
        with torch.inference_mode():
            for t in plan.tiles:
                win = padded[t.y0 : t.y0 + t.height, t.x0 : t.x0 + t.width]
                x = torch.from_numpy(np.ascontiguousarray(win.transpose(2, 0, 1))).float()
                out = self.net.restorer(x[None] / 255.0, condition)[0].clamp(0, 1).numpy()
                for ch in range(3):
                    accs[ch].add(t, out[ch])
        planes = np.stack([a.result() for a in accs], axis=-1)
        return np.clip(np.round(planes * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- files


def write_restoration(
    image_path: str | Path, out_dir: str | Path, restorer: Restorer | None = None
) -> dict[str, Any]:
    """``forgectl restore IMG --out DIR``: ``<stem>.restored.png`` + ``<stem>.restore.json``.

    Args:
        image_path: the input (read only; never written). out_dir: created if missing.
        restorer: the learned module; None runs the classical baseline.

    Returns:
        The JSON record (also written).

    Raises:
        InputError: unreadable input, or an output path that would overwrite the input.
    """
    from forgectl.intake import load_image
    from forgectl.outputs import png_bytes, write_bytes, write_json

    src = Path(image_path)
    image = load_image(src)
    out_dir = Path(out_dir)
    png_path = out_dir / f"{src.stem}.restored.png"
    json_path = out_dir / f"{src.stem}.restore.json"
    for p in (png_path, json_path):
        if p.exists() and p.resolve() == src.resolve():
            raise InputError(f"refusing to overwrite the input {src}")
    if restorer is None:
        restored, facts = classical_restore(image.rgb)
    else:
        restored, facts = restorer.restore(image.rgb)
    write_bytes(png_path, png_bytes(np.ascontiguousarray(restored), compress_level=1))
    record = {
        "schema": RESTORE_SCHEMA,
        "input": {
            "path": str(src),
            "sha256": image.sha256,
            "width": image.width,
            "height": image.height,
            "format": image.format,
        },
        "output": str(png_path),
        "restoration": facts,
    }
    write_json(json_path, record)
    return record
