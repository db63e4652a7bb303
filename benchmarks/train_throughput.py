"""Can data generation keep up with training? Samples/s of the data pipeline vs one training step.

Three measurements for a recipe (``--method omni`` uses the registered recipe; ``--method toy``
a three-convolution net on RGB, the floor of any learned model):

1. data: ``engine.sample(i)`` + ``recipe.prepare`` in this process (one OpenCV thread),
   samples/s over ``--data-samples`` fresh indices (source photos decoded and objects cut on
   first use, as early in a run);
2. step: one optimizer step (loss, backward, clip, AdamW) on a fixed batch, seconds per step
   and samples/s, after one untimed warm-up step;
3. end to end: the real :class:`~forgectl.training.trainer.Trainer` for ``--steps`` steps
   with each ``--workers`` setting (0 = samples made between steps; N = N prefetching worker
   processes), mean seconds per step after the first and the mean time spent waiting for data.

Usage::

    .venv/bin/python benchmarks/train_throughput.py --images ../shared/corpus --method omni \\
        --batch-size 8 --crop 256 --threads 2 --steps 8 --workers 0,1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def toy_recipe(crop: int) -> Any:
    """A three-convolution mask net on RGB with BCE + Dice (the smallest learned model)."""
    import torch
    from torch import nn

    from forgectl.tiling import pad_to, random_grid_origin
    from forgectl.training.losses import mask_loss
    from forgectl.training.recipe import Recipe

    class ToyRecipe(Recipe):
        name = "toy"
        configs = {
            "tiny": {
                "crop": crop,
                "width": 16,
                "lr": 1e-3,
                "steps": 1000,
                "batch_size": 8,
                "loss": {"bce": 1.0, "dice": 1.0},
            }
        }

        def build_model(self, config: dict[str, Any]) -> nn.Module:
            w = config["width"]
            return nn.Sequential(
                nn.Conv2d(3, w, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(w, w, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(w, 1, 1),
            )

        def prepare(
            self, sample: Any, config: dict[str, Any], rng: np.random.Generator
        ) -> dict[str, Any]:
            c = config["crop"]
            img = sample.image
            y0 = random_grid_origin(img.height, c, rng, None)
            x0 = random_grid_origin(img.width, c, rng, None)
            rgb = pad_to(img.rgb[y0 : y0 + c, x0 : x0 + c], c, c).astype(np.float32) / 255.0
            mask = pad_to(sample.mask[y0 : y0 + c, x0 : x0 + c], c, c).astype(np.float32)
            return {
                "image": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))),
                "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
            }

        def loss(
            self, model: nn.Module, batch: dict[str, Any], config: dict[str, Any]
        ) -> tuple[torch.Tensor, dict[str, float]]:
            return mask_loss(config["loss"], model(batch["image"]), batch["mask"])

        def predict(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
            return torch.sigmoid(model(batch["image"]))

    return ToyRecipe()


def recipe_of(method: str) -> Any:
    """The registered recipe, or (for a method not registered yet) its module's recipe."""
    import importlib

    from forgectl.errors import UsageError
    from forgectl.training.trainer import load_recipe

    try:
        return load_recipe(method)
    except UsageError:
        return importlib.import_module(f"forgectl.recipes.{method}").recipe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=Path("../shared/corpus"))
    parser.add_argument("--method", default="omni", help="a trainable method or 'toy'")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-samples", type=int, default=24)
    parser.add_argument("--step-repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8, help="end-to-end steps per setting")
    parser.add_argument("--workers", default="0,1", help="end-to-end worker settings")
    args = parser.parse_args()

    import cv2
    import torch

    from forgectl.training.trainer import (
        RunOptions,
        Schedule,
        Trainer,
        corpus_data,
        run_config,
    )

    cv2.setNumThreads(1)
    torch.set_num_threads(args.threads)
    recipe = toy_recipe(args.crop) if args.method == "toy" else recipe_of(args.method)
    overrides = {"crop": args.crop, "batch_size": args.batch_size}
    config = run_config(recipe, args.config, overrides)
    data = corpus_data([args.images], config, seed=0)
    result: dict[str, Any] = {
        "method": recipe.name,
        "config": args.config,
        "batch_size": args.batch_size,
        "crop": args.crop,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "load_avg_start": [round(v, 2) for v in os.getloadavg()],
    }

    # 1. data pipeline
    began = time.perf_counter()
    items = []
    for i in range(args.data_samples):
        rng = np.random.default_rng([0, i])
        items.append(recipe.prepare(data.train.sample(i), config, rng))
    data_s = time.perf_counter() - began
    result["data_samples_per_s"] = round(args.data_samples / data_s, 3)

    # 2. one optimizer step on a fixed batch
    torch.manual_seed(0)
    model = recipe.build_model(config)
    model.train()
    s = Schedule.from_config(config)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    batch = recipe.collate(items[: args.batch_size])
    times = []
    for r in range(args.step_repeats + 1):
        t0 = time.perf_counter()
        loss, _ = recipe.loss(model, batch, config)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if r:  # the first step warms up allocations and lazy initialization
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    result["step_s"] = round(step_s, 3)
    result["step_samples_per_s"] = round(args.batch_size / step_s, 3)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    del model, opt

    # 3. end to end through the trainer
    runs = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = dict(config, steps=args.steps)
            options = RunOptions(
                run_dir=Path(tmp),
                seed=0,
                threads=args.threads,
                workers=workers,
                val_every=0,
                ckpt_every=0,
                val_samples=0,
                progress=False,
            )
            began = time.perf_counter()
            Trainer(recipe, args.config, cfg, data, options).run()
            wall = time.perf_counter() - began
            lines = (Path(tmp) / "train.jsonl").read_text().splitlines()
            steps = [r for r in map(json.loads, lines) if r["event"] == "step"][1:]
        per_step = float(np.mean([r["data_s"] + r["compute_s"] for r in steps]))
        runs[f"workers={workers}"] = {
            "s_per_step": round(per_step, 3),
            "samples_per_s": round(args.batch_size / per_step, 3),
            "data_wait_s": round(float(np.mean([r["data_s"] for r in steps])), 3),
            "compute_s": round(float(np.mean([r["compute_s"] for r in steps])), 3),
            "wall_s": round(wall, 1),
        }
    result["end_to_end"] = runs
    result["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
