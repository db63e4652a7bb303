"""Training recipe of the Noiseprint-style extractor (:mod:`forgectl.nets.noiseprint`) MUN reads.

Noiseprint (Cozzolino & Verdoliva, TIFS 2020) is trained with a *distance-based logistic*
(DBL) loss on patches: patches that carry the same traces must give close outputs, patches with
different traces distant ones, whatever their content. Noiseprint++ (TruFor) widens "same
traces" from the camera model to the processing history. Here the traces are synthetic
processing histories (:mod:`forgectl.synth.histories`) applied to the corpus photos:

* ``prepare`` takes one grid-aligned ``region x region`` window of a sample's pixels (its mask
  is ignored: the window is just photo content) and processes it with ``histories`` different
  random histories (gamma, resampling, blur, noise, an extra JPEG, and a final JPEG at a random
  quality on a randomly shifted 8x8 grid or a lossless save). From each processed copy it cuts
  ``patches`` windows of ``patch + 2 * margin`` pixels at offsets that are multiples of 8, so
  every patch of one copy sees the last compression's grid at the same phase.
* Labels: the patch's group is (sample in the batch, history). Positives share source photo
  AND history; other histories of the same photo are the hard negatives (same content
  statistics, different traces); other photos are negatives too.
* ``loss``: DBL over all patch pairs of the batch. The network runs on each window, the
  ``margin`` border of the output (where zero padding shows) is dropped, and the distance of
  two patches is the mean squared difference of their aligned output maps (the Noiseprint
  paper's distance); ``-log(sum_pos exp(-d) / sum_{j != i} exp(-d))`` per patch, averaged.

For the trainer's validation, ``prepare`` also returns an ``image`` crop of the sample itself
(``rgb / 256``, on the 8x8 grid, preferring forged pixels) and its ``mask``; ``predict`` runs
the extractor on it and turns the noiseprint's local statistics into a probability map
(:func:`forgectl.nets.noiseprint.noiseprint_heatmap`), so ``val_pixel_auc`` measures whether
the extractor separates a spliced region's traces from the host's and can choose checkpoints.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.errors import UsageError
from forgectl.training.recipe import Recipe, SynthSample

if TYPE_CHECKING:
    import torch

GRID = 8
#: Window of the local noiseprint statistics of the validation heat map (pixels): four JPEG
#: blocks, small enough for the 1-30 % regions of the synthetic forgeries.
HEATMAP_WINDOW = 32

#: Probabilities and ranges of the histories drawn for contrastive training (plain data).
#: Higher than the synthetic engine's post-edit rates: every history should differ from its
#: siblings, and the extractor must learn each kind of trace.
HISTORY_DEFAULTS: dict[str, Any] = {
    "gamma_prob": 0.25, "gamma": [0.7, 1.5],
    "resize_prob": 0.3, "resize_scale": [0.6, 1.4],
    "blur_prob": 0.15, "blur_sigma": [0.3, 1.2],
    "noise_prob": 0.2, "noise_sigma": [0.5, 4.0],
    "mid_jpeg_prob": 0.1, "mid_quality": [50, 95],
    "final_jpeg_prob": 0.8, "final_quality": [50, 100],
    "grid_shift_prob": 0.5,
    "subsampling": {"4:2:0": 0.7, "4:4:4": 0.2, "4:2:2": 0.1},
}


def _training(**overrides: Any) -> dict[str, Any]:
    base = {
        # Optimizer and schedule (trainer.Schedule).
        "batch_size": 4, "lr": 1e-3, "weight_decay": 1e-4, "steps": 1200, "warmup_steps": 50,
        "min_lr_ratio": 0.05, "grad_clip": 1.0,
        # Contrastive batch: batch_size photos x histories x patches windows.
        "region": 160, "histories": 4, "patches": 4, "patch": 48, "margin": 4,
        "history": dict(HISTORY_DEFAULTS),
        # Validation crop and heat map.
        "crop": 256, "focus_prob": 0.7,
    }
    base.update(overrides)
    return base


def _config(model: str, **overrides: Any) -> dict[str, Any]:
    from forgectl.nets.noiseprint import noiseprint_config

    return {**_training(**overrides), "model": noiseprint_config(model), "pretrained": None}


# --------------------------------------------------------------------------- histories


def gamma_curve(rgb: np.ndarray, gamma: float) -> np.ndarray:
    """(H, W, 3) uint8 -> ``255 * (rgb / 255) ** gamma``, rounded (a tone-curve edit)."""
    lut = np.round(255.0 * (np.arange(256) / 255.0) ** float(gamma)).astype(np.uint8)
    return lut[rgb]


def _uniform(rng: np.random.Generator, bounds: list[float], digits: int = 3) -> float:
    return round(float(rng.uniform(bounds[0], bounds[1])), digits)


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.asarray([weights[n] for n in names], np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def plan_history(rng: np.random.Generator, cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """One random processing history as replayable steps.

    Order: an optional gamma curve (a tone edit, ``{"op": "gamma"}``, applied by
    :func:`apply_history`), the synthetic engine's post-edit steps
    (:func:`forgectl.synth.histories.plan_post`: resampling, blur, noise, an extra JPEG, in
    random order) and a final save: JPEG at a random quality, on a grid shifted by (dy, dx) in
    0..7 with probability ``grid_shift_prob``, or lossless (``{"op": "png"}``).
    """
    from forgectl.synth.histories import HistoryConfig, plan_post

    steps: list[dict[str, Any]] = []
    if rng.random() < cfg["gamma_prob"]:
        steps.append({"op": "gamma", "gamma": _uniform(rng, cfg["gamma"])})
    post = HistoryConfig(
        resize_prob=cfg["resize_prob"], resize_scale=tuple(cfg["resize_scale"]),
        blur_prob=cfg["blur_prob"], blur_sigma=tuple(cfg["blur_sigma"]),
        noise_prob=cfg["noise_prob"], noise_sigma=tuple(cfg["noise_sigma"]),
        mid_jpeg_prob=cfg["mid_jpeg_prob"], prior_quality=tuple(cfg["mid_quality"]),
        subsampling=dict(cfg["subsampling"]),
    )
    steps.extend(plan_post(rng, post))
    if rng.random() < cfg["final_jpeg_prob"]:
        shift = [0, 0]
        if rng.random() < cfg["grid_shift_prob"]:
            while shift == [0, 0]:
                shift = [int(v) for v in rng.integers(0, GRID, 2)]
        lo, hi = cfg["final_quality"]
        steps.append({"op": "jpeg", "quality": int(rng.integers(lo, hi + 1)),
                      "subsampling": _choice(rng, cfg["subsampling"]), "grid_shift": shift})
    else:
        steps.append({"op": "png"})
    return steps


def history_key(steps: list[dict[str, Any]]) -> str:
    """A coarse signature of a history: two histories with the same key leave traces too alike
    to call them different (quality within 4, scale within 0.05, sigma within 0.25...)."""
    coarse = []
    for step in steps:
        if step["op"] == "noise":
            coarse.append({"op": "noise", "sigma": round(step["sigma"] * 2) / 2})
            continue
        item = {"op": step["op"]}
        for key, value in step.items():
            if key == "op":
                continue
            if key == "quality":
                value = int(value) // 5
            elif isinstance(value, float):
                value = round(value * 10) / 10 if key != "scale" else round(value * 20) / 20
            item[key] = value
        coarse.append(item)
    return json.dumps(coarse, sort_keys=True)


def plan_histories(rng: np.random.Generator, count: int, cfg: dict[str, Any]
                   ) -> list[list[dict[str, Any]]]:
    """``count`` histories with pairwise different :func:`history_key` (redrawn until they
    differ): siblings are negatives, so two indistinguishable ones would be wrong labels."""
    out: list[list[dict[str, Any]]] = []
    keys: set[str] = set()
    for _ in range(100 * count):
        if len(out) == count:
            break
        steps = plan_history(rng, cfg)
        key = history_key(steps)
        if key not in keys:
            keys.add(key)
            out.append(steps)
    if len(out) < count:  # pragma: no cover - needs absurd config ranges
        raise UsageError(f"noiseprint: cannot draw {count} distinct histories")
    return out


def apply_history(rgb: np.ndarray, steps: list[dict[str, Any]]) -> np.ndarray:
    """Run a :func:`plan_history` history on (H, W, 3) uint8 pixels (the final save included:
    a JPEG step really encodes and decodes). Returns (H', W', 3) uint8."""
    from forgectl.synth.histories import apply_step

    mask = np.zeros(rgb.shape[:2], bool)
    for step in steps:
        if step["op"] == "gamma":
            rgb = gamma_curve(rgb, step["gamma"])
        elif step["op"] != "png":
            rgb, mask = apply_step(rgb, mask, step)
    return np.ascontiguousarray(rgb)


def grid_windows(height: int, width: int, size: int, count: int, rng: np.random.Generator
                 ) -> list[tuple[int, int]]:
    """``count`` window origins ``(y, x)``, multiples of 8, with the window inside the image.

    Distinct origins are preferred (windows may still overlap); an image smaller than the
    window gets origin (0, 0) (the caller pads).
    """
    ny = max(0, (height - size) // GRID) + 1
    nx = max(0, (width - size) // GRID) + 1
    total = ny * nx
    picks = rng.choice(total, size=count, replace=total < count)
    return [(GRID * int(p // nx), GRID * int(p % nx)) for p in picks]


# --------------------------------------------------------------------------- the loss


def dbl_loss(outputs: torch.Tensor, groups: torch.Tensor, margin: int = 0
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """Noiseprint's distance-based logistic loss over every pair of patches.

    ``d_ij = mean((r_i - r_j)^2)`` over the aligned output maps without their ``margin``
    border; patch i's loss is ``-log(sum_{j in P(i)} e^{-d_ij} / sum_{j != i} e^{-d_ij})`` with
    P(i) the other patches of its group; the mean over patches is returned. Logs: the loss,
    the mean positive and negative distances, and the share of patches whose nearest other
    patch is a positive (``nn_acc``).

    Shapes: ``outputs (N, 1, S, S)``, ``groups (N,)`` int64 -> 0-d tensor.
    """
    import torch

    r = outputs[:, :, margin:outputs.shape[-2] - margin, margin:outputs.shape[-1] - margin]
    v = r.flatten(1).float()
    sq = (v * v).sum(1)
    d = (sq[:, None] + sq[None, :] - 2.0 * v @ v.t()).clamp_min(0.0) / v.shape[1]
    n = v.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    same = (groups[:, None] == groups[None, :]) & ~eye
    logits = (-d).masked_fill(eye, float("-inf"))
    log_den = torch.logsumexp(logits, dim=1)
    log_num = torch.logsumexp(logits.masked_fill(~same, float("-inf")), dim=1)
    has_pos = same.any(1)
    loss = (log_den - log_num)[has_pos].mean()
    with torch.no_grad():
        nearest = logits.argmax(1)
        acc = same[torch.arange(n, device=v.device), nearest].float().mean()
        neg = ~same & ~eye
        logs = {
            "pos_dist": float(d[same].mean()) if same.any() else 0.0,
            "neg_dist": float(d[neg].mean()) if neg.any() else 0.0,
            "nn_acc": float(acc),
        }
    return loss, logs


# --------------------------------------------------------------------------- the recipe


class NoiseprintRecipe(Recipe):
    """How the Noiseprint-style extractor is trained (module docstring: data and loss).

    Prepared sample keys: ``patches (K*P, 3, S, S)`` float32 rgb / 256 with ``S = patch +
    2 * margin``; ``group (K*P,)`` int64 history index; ``image (3, crop, crop)`` rgb / 256
    and ``mask (1, crop, crop)`` float32 for validation.
    """

    name = "noiseprint"

    def __init__(self) -> None:
        self.configs = {
            "tiny": _config("tiny"),
            "tiny-residual": _config("tiny-residual"),
            # As Noiseprint: 48 px patches, a couple of hundred per batch (16 x 4 x 4 = 256).
            "paper": _config("paper", batch_size=16, steps=50000, warmup_steps=1000,
                             lr=1e-3, region=192, margin=8),
        }

    def build_model(self, config: dict[str, Any]) -> torch.nn.Module:
        from forgectl.nets.noiseprint import NoiseprintNet

        return NoiseprintNet(config["model"])

    def prepare(self, sample: SynthSample, config: dict[str, Any], rng: np.random.Generator
                ) -> dict[str, Any]:
        import torch

        from forgectl.tiling import focused_crop_origin, pad_to, random_grid_origin

        rgb = np.asarray(sample.image.rgb)
        h, w = rgb.shape[:2]
        scale = float(config["model"].get("input_scale", 256.0))
        patch, margin = int(config["patch"]), int(config["margin"])
        size = patch + 2 * margin
        k, p = int(config["histories"]), int(config["patches"])
        if patch % GRID:
            raise UsageError(f"noiseprint: patch must be a multiple of {GRID}")

        # Contrastive windows: one region, K histories, P grid-aligned windows of each.
        region = int(config["region"])
        ry = random_grid_origin(h, region, rng)
        rx = random_grid_origin(w, region, rng)
        base = np.ascontiguousarray(rgb[ry:ry + region, rx:rx + region])
        windows = []
        for steps in plan_histories(rng, k, config["history"]):
            out = apply_history(base, steps)
            out = pad_to(out, max(size, out.shape[0]), max(size, out.shape[1]))
            for y, x in grid_windows(out.shape[0], out.shape[1], size, p, rng):
                windows.append(out[y:y + size, x:x + size])
        patches = np.stack(windows).transpose(0, 3, 1, 2).astype(np.float32) / scale
        group = np.repeat(np.arange(k, dtype=np.int64), p)

        # Validation view: the sample itself, forged pixels in the crop when possible.
        crop = int(config["crop"])
        mask = (np.asarray(sample.mask) > 0).astype(np.uint8)
        y0, x0 = focused_crop_origin(mask, crop, rng, float(config.get("focus_prob", 0.0)))
        img = pad_to(rgb[y0:y0 + crop, x0:x0 + crop], crop, crop)
        msk = pad_to(mask[y0:y0 + crop, x0:x0 + crop], crop, crop)
        return {
            "patches": torch.from_numpy(np.ascontiguousarray(patches)),
            "group": torch.from_numpy(group),
            "image": torch.from_numpy(
                np.ascontiguousarray(img.transpose(2, 0, 1), np.float32) / scale),
            "mask": torch.from_numpy(np.ascontiguousarray(msk, np.float32))[None],
        }

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], config: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        import torch

        patches = batch["patches"]  # (B, K*P, 3, S, S)
        b, n = patches.shape[:2]
        k = int(config["histories"])
        # Group id = sample index in the batch * K + history index.
        groups = (torch.arange(b).view(b, 1) * k + batch["group"]).reshape(-1)
        out = model(patches.reshape(b * n, *patches.shape[2:]))
        loss, logs = dbl_loss(out, groups, int(config["margin"]))
        return loss, {"dbl": float(loss.detach()), **logs, "loss": float(loss.detach())}

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        import torch

        from forgectl.nets.noiseprint import noiseprint_heatmap

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                residual = model(batch["image"])
                return noiseprint_heatmap(residual, HEATMAP_WINDOW)
        finally:
            model.train(was_training)


def recipe() -> Recipe:
    """The recipe ``forgectl train noiseprint`` uses."""
    return NoiseprintRecipe()
