"""Does forgectl's noiseprint separate a pasted region from its host? Against a high-pass residual.

Synthetic splices from held-out photos (``forgectl.synth``, test split: the paste comes from
another photo, often with its own JPEG history) are analysed twice with the same anomaly
statistic (:func:`forgectl.nets.noiseprint.noiseprint_heatmap`: local statistics against the
image's median): once on the noiseprint, once on a plain high-pass residual (the grey image
minus its 3x3 mean). Both maps are averaged over ``--block`` pixel blocks; a block is
"pasted" when most of its pixels are. The figure is the mean per-image block AUC.

Usage::

    .venv/bin/python benchmarks/noiseprint_check.py --weights weights/noiseprint-tiny.safetensors \\
        --images ../shared/corpus --n 60
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def block_means(values: np.ndarray, block: int) -> np.ndarray:
    """(H, W) -> (H // block, W // block) means (the ragged border is dropped)."""
    h, w = (values.shape[0] // block) * block, (values.shape[1] // block) * block
    v = values[:h, :w].reshape(h // block, block, w // block, block)
    return v.mean(axis=(1, 3))


def main() -> None:
    import cv2
    import torch

    from forgectl.metrics import image_auc
    from forgectl.nets.noiseprint import (
        NoiseprintNet,
        extract_tiled,
        noiseprint_heatmap,
        rgb_input,
    )
    from forgectl.synth.engine import SynthesisEngine, list_images, split_sources
    from forgectl.weights import load_network

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--block", type=int, default=16)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    net, card = load_network(args.weights, NoiseprintNet)
    photos = split_sources(list_images(args.images), "test")
    engine = SynthesisEngine(photos, seed=args.seed)
    aucs: dict[str, list[float]] = {"noiseprint": [], "high-pass": []}
    start = time.perf_counter()
    for i in range(args.n):
        sample = engine.sample(i, kind="splice")
        rgb = sample.image.rgb
        truth = block_means((np.asarray(sample.mask) > 0).astype(np.float32), args.block) >= 0.5
        if truth.all() or not truth.any():
            continue
        with torch.inference_mode():
            noise = extract_tiled(net, rgb_input(rgb))
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
        high = grey - cv2.blur(grey, (3, 3))
        for name, residual in (("noiseprint", noise),
                               ("high-pass", torch.from_numpy(high)[None, None])):
            heat = noiseprint_heatmap(residual)[0, 0].numpy()
            auc = image_auc(block_means(heat, args.block).ravel(), truth.ravel())
            if auc is not None:
                aucs[name].append(float(auc))
    wall = time.perf_counter() - start
    n = min(len(v) for v in aucs.values())
    wins = sum(a > b for a, b in zip(aucs["noiseprint"], aucs["high-pass"], strict=True))
    print(f"weights {args.weights.name} (step {card.get('training', {}).get('steps')}); "
          f"{n} splices from test-split photos, {args.block}px blocks, {wall:.0f} s")
    for name, values in aucs.items():
        print(f"  {name:10s} mean block AUC {np.mean(values):.3f} "
              f"(median {np.median(values):.3f})")
    print(f"  noiseprint above high-pass on {wins} of {n} images")


if __name__ == "__main__":
    main()
