"""The fitted fusion, numpy only: an image-level verdict and a per-pixel map.

- Verdict: on the members' :data:`~forgectl.fusion.features.IMAGE_FEATURES`, either logistic
  regression (standardized features) or a small ensemble of boosted decision trees (the
  ``verdict_tree_*`` arrays; the members' evidence combines non-linearly: one confident member can
  outweigh six quiet ones), fitted on synthetic forgeries. Its probability is remapped piecewise-
  linearly so that ``verdict_threshold`` (chosen on a real chooser half, docs/methods/auto.md)
  reads 0.5: a score whose 0.5 is the decision threshold, not a calibrated probability on other
  data (its expected calibration error is reported beside it).
- Map: a one-hidden-layer perceptron (ReLU; ``hidden = 0`` is plain logistic regression) on the
  members' :data:`~forgectl.fusion.features.PIXEL_FEATURES` plus the verdict's logit, so that
  the map can stay dark on an image the verdict calls authentic. Its probability is remapped
  piecewise-linearly so that ``pixel_threshold`` (chosen when fitting) reads 0.5: the default
  threshold of every method.

Stored as ``weights/auto-<config>.safetensors`` (float32 arrays) + a model card; every number
is counted in the card (``weights.parameters``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from forgectl.errors import WeightsError
from forgectl.fusion.features import IMAGE_FEATURES, PIXEL_FEATURES
from forgectl.weights import check_digest, read_card

#: Arrays of every fusion file: the verdict's bias and the map.
ARRAYS = ("verdict_bias", "pixel_mean", "pixel_scale", "hidden_w", "hidden_b", "out_w", "out_b")
#: Arrays of a logistic verdict.
LOGISTIC_ARRAYS = ("verdict_mean", "verdict_scale", "verdict_coef")
#: Arrays of a tree verdict (optional): per tree and node, the feature read (-1 at a leaf), the
#: threshold (go left when the feature is at most it; float64, as fitted: a float32 rounding
#: could move a threshold onto a fitted value), the two children, and the leaf value (logit).
TREE_ARRAYS = ("verdict_tree_feature", "verdict_tree_threshold", "verdict_tree_left",
               "verdict_tree_right", "verdict_tree_value")
#: Logit clip (a probability of exactly 0 or 1 would be a claim no fitted model can make).
LOGIT_CLIP = 12.0


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -LOGIT_CLIP * 3, LOGIT_CLIP * 3)))


#: Pixels remapped at a time by :meth:`FusionModel.to_map`.
REMAP_CHUNK = 1 << 20


def _sigmoid_inplace(x: np.ndarray) -> np.ndarray:
    """:func:`_sigmoid` of a float32 array, computed in ``x`` (the same numbers, no copies:
    the fused map of a 48 MP image is 190 MB a copy)."""
    np.clip(x, -LOGIT_CLIP * 3, LOGIT_CLIP * 3, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x += 1.0
    return np.divide(1.0, x, out=x)


def _remap(p: np.ndarray | float, t: float, dtype: type = np.float32) -> np.ndarray:
    """Monotone piecewise-linear map of [0, 1] onto [0, 1] taking ``t`` to 0.5."""
    p = np.asarray(p, dtype)
    return np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t)).astype(dtype)


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class FusionModel:
    """A fitted fusion over ``members`` (order matters: features are stacked in it).

    Shapes (Fi = members x image features, Fp = members x pixel features + 1, H = hidden):
    ``verdict_mean/scale/coef (Fi,)``, ``verdict_bias (1,)``, ``pixel_mean/scale (Fp,)``,
    ``hidden_w (Fp, H)``, ``hidden_b (H,)``, ``out_w (H,)`` (or ``(Fp,)`` when H = 0),
    ``out_b (1,)``. A tree verdict adds :data:`TREE_ARRAYS`, each ``(T, N)`` (T trees of at
    most N nodes, node 0 the root), and ``verdict_bias`` is then its baseline logit (the
    logistic arrays are unused).
    """

    members: list[str]
    arrays: dict[str, np.ndarray]
    pixel_threshold: float = 0.5
    verdict_threshold: float = 0.5
    contributions: dict[str, float] = field(default_factory=dict)
    #: sha256 of each learned member's weights file the fusion was fitted on (its card's
    #: ``training.member_sha256``; empty for fusions made in memory).
    member_sha256: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        trees = [k for k in TREE_ARRAYS if k in self.arrays]
        if trees and len(trees) != len(TREE_ARRAYS):
            raise WeightsError("fusion weights have part of a tree verdict")
        needed = ARRAYS + (() if trees else LOGISTIC_ARRAYS)
        missing = [k for k in needed if k not in self.arrays]
        if missing:
            raise WeightsError(f"fusion weights lack {', '.join(missing)}")
        self.arrays = {k: np.asarray(v, np.float64 if k in ("verdict_tree_threshold",
                                                            "verdict_tree_value")
                                     else np.int32 if k in TREE_ARRAYS else np.float32)
                       for k, v in self.arrays.items()}
        if trees:
            shapes = {self.arrays[k].shape for k in TREE_ARRAYS}
            if len(shapes) != 1 or len(next(iter(shapes))) != 2:
                raise WeightsError("fusion tree arrays must share one (trees, nodes) shape")
        # A file fitted on another feature set (e.g. before ``peak`` joined) must not be read
        # with today's features: one line at load, not a shape error per image.
        width = len(self.members) * len(IMAGE_FEATURES)
        fitted_on = (int(self.arrays["verdict_tree_feature"].max()) + 1 if trees
                     else self.arrays["verdict_coef"].size)
        if fitted_on > width or (not trees and fitted_on != width):
            raise WeightsError(f"the fusion's verdict was fitted on {fitted_on} image features, "
                               f"this forgectl computes {width} for {len(self.members)} "
                               "members: refit it (forgectl train --method auto)")
        for name in ("pixel_threshold", "verdict_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise WeightsError(f"fusion {name} must be in (0, 1)")

    @property
    def parameters(self) -> int:
        """Fitted numbers (standardization constants and tree nodes included)."""
        return int(sum(a.size for a in self.arrays.values())) + 1

    @property
    def verdict_kind(self) -> str:
        """``"trees"`` or ``"logistic"``."""
        return "trees" if "verdict_tree_feature" in self.arrays else "logistic"

    def verdict(self, image_feats: np.ndarray) -> float:
        """P(manipulated) from ``(Fi,)`` image features."""
        a = self.arrays
        if self.verdict_kind == "trees":
            return float(_sigmoid(self._tree_logit(np.asarray(image_feats, np.float64))))
        z = (image_feats - a["verdict_mean"]) / a["verdict_scale"]
        return float(_sigmoid(np.dot(z, a["verdict_coef"]) + a["verdict_bias"][0]))

    def _tree_logit(self, x: np.ndarray) -> float:
        """Baseline + the leaf value each tree reaches for the ``(Fi,)`` features ``x``; all
        trees descend together, one level per pass."""
        a = self.arrays
        feature, threshold = a["verdict_tree_feature"], a["verdict_tree_threshold"]
        left, right = a["verdict_tree_left"], a["verdict_tree_right"]
        rows = np.arange(feature.shape[0])
        node = np.zeros(feature.shape[0], np.int64)
        for _ in range(feature.shape[1]):
            f = feature[rows, node]
            inner = f >= 0
            if not inner.any():
                break
            go_left = x[np.maximum(f, 0)] <= threshold[rows, node]
            node = np.where(inner, np.where(go_left, left[rows, node], right[rows, node]), node)
        return float(a["verdict_bias"][0] + a["verdict_tree_value"][rows, node].sum())

    def pixel_probability(self, pixel_feats: np.ndarray, verdict: float) -> np.ndarray:
        """(N,) per-pixel probability from ``(N, Fp - 1)`` features and the image's verdict."""
        a = self.arrays
        n = pixel_feats.shape[0]
        out = np.empty(n, np.float32)
        v = np.float32(logit(verdict))
        # Chunks bound the hidden layer's memory on a 12 MP image (N x H floats).
        for start in range(0, n, 1 << 20):
            x = pixel_feats[start:start + (1 << 20)]
            x = np.concatenate([x, np.full((x.shape[0], 1), v, np.float32)], axis=1)
            x = (x - a["pixel_mean"]) / a["pixel_scale"]
            if a["hidden_w"].size:
                x = np.maximum(x @ a["hidden_w"] + a["hidden_b"], 0.0)
            out[start:start + x.shape[0]] = _sigmoid(x @ a["out_w"] + a["out_b"][0])
        return out

    @property
    def is_linear(self) -> bool:
        """True when the map has no hidden layer: its logit is a sum over the members'
        feature columns, so each member's share can be added as soon as it has run."""
        return not self.arrays["hidden_w"].size

    def _linear_weights(self) -> tuple[np.ndarray, float, float]:
        """(per-column weights on the raw features, bias, weight of the verdict's logit)."""
        a = self.arrays
        w = a["out_w"] / a["pixel_scale"]
        return w[:-1], float(a["out_b"][0] - np.dot(w, a["pixel_mean"])), float(w[-1])

    def add_member_logit(self, index: int, columns: Iterable[np.ndarray],
                         logit_sum: np.ndarray) -> None:
        """Add member ``index``'s share of a linear map's logit to ``logit_sum`` (N,) float32,
        from its :data:`PIXEL_FEATURES` columns (each (N,)), in place."""
        w, _, _ = self._linear_weights()
        width = len(PIXEL_FEATURES)
        used = 0
        for i, col in enumerate(columns):
            logit_sum += np.float32(w[index * width + i]) * col
            used += 1
        if used != width:
            raise ValueError(f"{used} feature columns for a member of {width}")

    def probability_from_logit_sum(self, logit_sum: np.ndarray, verdict: float) -> np.ndarray:
        """A linear map's (N,) probability from every member's share (:meth:`add_member_logit`)
        and the image's verdict; computed in ``logit_sum``."""
        _, bias, w_verdict = self._linear_weights()
        logit_sum += np.float32(bias + w_verdict * float(logit(verdict)))
        return _sigmoid_inplace(logit_sum)

    def pixel_probability_columns(self, columns: Iterable[np.ndarray], n: int,
                                  verdict: float) -> np.ndarray:
        """As :meth:`pixel_probability`, from the feature columns one at a time (each (N,)).

        A map without a hidden layer is linear in the features, so it is summed column by
        column (a few (N,) arrays in memory instead of (N, F)), as
        :meth:`add_member_logit` sums it member by member (the same numbers); with one, the
        columns are stacked."""
        if not self.is_linear:
            return self.pixel_probability(np.stack(list(columns), axis=1), verdict)
        w, _, _ = self._linear_weights()
        logit_sum = np.zeros(n, np.float32)
        used = 0
        for i, col in enumerate(columns):
            logit_sum += np.float32(w[i]) * col
            used += 1
        if used != len(w):
            raise ValueError(f"{used} feature columns for a map of {len(w)}")
        return self.probability_from_logit_sum(logit_sum, verdict)

    def to_map(self, probability: np.ndarray) -> np.ndarray:
        """Remap probabilities so ``pixel_threshold`` reads 0.5 (monotone, [0, 1] onto [0, 1])."""
        out = np.asarray(probability, np.float32).copy()
        flat = out.reshape(-1)
        for start in range(0, flat.size, REMAP_CHUNK):  # bounded temporaries at any size
            flat[start:start + REMAP_CHUNK] = _remap(flat[start:start + REMAP_CHUNK],
                                                     self.pixel_threshold)
        return out

    def to_score(self, verdict: float) -> float:
        """The reported image score: the verdict remapped so ``verdict_threshold`` reads 0.5
        (the map is fed the verdict itself, as when it was fitted)."""
        # float64: the threshold was chosen between two verdicts that float32 may not tell apart.
        return float(_remap(verdict, self.verdict_threshold, np.float64))

    # ------------------------------------------------------------------ files

    def save(self, path: Path, card: dict[str, Any]) -> dict[str, Any]:
        """Write ``path`` (safetensors) and its card; returns the card as written."""
        from safetensors.numpy import save_file

        from forgectl.outputs import write_json
        from forgectl.weights import card_path, sha256_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in self.arrays.items()}, str(tmp))
        tmp.replace(path)
        card = dict(card)
        card["config"] = {**card.get("config", {}), "members": self.members,
                          "pixel_threshold": self.pixel_threshold,
                          "verdict_threshold": self.verdict_threshold}
        card["contributions"] = self.contributions
        card["weights"] = {"file": path.name, "sha256": sha256_file(path),
                           "bytes": path.stat().st_size,
                           "dtype": "float32" if self.verdict_kind == "logistic" else
                           "float32 (tree thresholds and leaf values float64, nodes int32)",
                           "parameters": self.parameters}
        write_json(card_path(path), card)
        return card

    @classmethod
    def load(cls, path: Path) -> FusionModel:
        """Read a fusion file, checking its card's sha256.

        Raises:
            WeightsError: missing, unreadable or mismatching file or card.
        """
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise WeightsError(f"fusion weights not found: {path} (fit them with `forgectl "
                               "train --method auto`)")
        card = read_card(path)
        if card is None:
            raise WeightsError(f"{path.name} has no model card ({path.with_suffix('.json')})")
        check_digest(path, card)
        try:
            arrays = load_file(str(path))
        except Exception as exc:
            raise WeightsError(f"cannot read {path.name}: {exc}") from None
        features = card.get("metrics", {}).get("features", {}).get("image")
        if features is not None and list(features) != list(IMAGE_FEATURES):
            raise WeightsError(f"{path.name} was fitted on the image features {features}, this "
                               f"forgectl computes {list(IMAGE_FEATURES)}: refit it (forgectl "
                               "train --method auto)")
        config = card.get("config", {})
        members = config.get("members")
        if not isinstance(members, list) or not members:
            raise WeightsError(f"{path.name}'s card names no members")
        return cls(members=[str(m) for m in members], arrays=arrays,
                   pixel_threshold=float(config.get("pixel_threshold", 0.5)),
                   verdict_threshold=float(config.get("verdict_threshold", 0.5)),
                   contributions=dict(card.get("contributions", {})),
                   member_sha256={str(k): str(v) for k, v in (card.get("training", {})
                                  .get("member_sha256") or {}).items() if v})
