"""Seconds of the learned restoration module (the figures in docs/methods/reconwave.md).

Usage (from the repository root; one process, every row measured in it):

    FORGECTL_THREADS=1 .venv/bin/python benchmarks/restore_speed.py --runs 7

Rows (median seconds over ``--runs`` after one warm-up run):

* the window attention of one 256 x 256 restorer tile (1024 windows of 64 tokens, 4 heads):
  ``scaled_dot_product_attention`` with the relative position bias as a 3-D mask (PyTorch's
  math path on CPU) vs the same bias as a 4-D mask (its fused kernel), and their ratio;
* ``Restorer.restore`` on a CASIA-size (384 x 256) image of the restoration table's first
  held-out photo at each disturbance of the paper's grid (needs ``../shared/corpus``; a
  synthetic image without it). Only tiles holding clipped values run the network.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FORGECTL_SHARED", REPO.parent / "shared"))


def median_seconds(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sample_image() -> tuple[np.ndarray, str]:
    import cv2

    from forgectl.evaluation import restoration_table as rt

    corpus = SHARED / "corpus"
    if corpus.is_dir():
        photo = rt.synthetic_set(rt.held_out_photos(corpus, 1), 1, kinds=("splice",))[0].rgb
        source = "a splice made from the first held-out corpus photo"
    else:
        rng = np.random.default_rng(0)
        photo = cv2.GaussianBlur(rng.integers(0, 256, (256, 384, 3), np.uint8), (0, 0), 3)
        source = "a blurred random image (no ../shared/corpus)"
    return cv2.resize(photo, (384, 256), interpolation=cv2.INTER_AREA), source


def main() -> None:
    import torch
    import torch.nn.functional as F

    from forgectl.backends.base import compute_threads
    from forgectl.backends.restorer import Restorer
    from forgectl.evaluation import restoration_table as rt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--weights", type=Path, help="restoration weights (default: shipped)")
    ap.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"],
                    help="the restoration module's runtime (auto: the ONNX twins when present)")
    args = ap.parse_args()
    torch.set_num_threads(compute_threads())
    print(f"threads {torch.get_num_threads()}, median of {args.runs} runs\n")

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1024, 4, 64, 12, generator=gen) for _ in range(3))
    bias = torch.randn(4, 64, 64, generator=gen)
    with torch.inference_mode():
        math_s = median_seconds(
            lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias), args.runs
        )
        fused_s = median_seconds(
            lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias[None]), args.runs
        )
    print("| window attention, one 256 x 256 tile | seconds |")
    print("|---|---:|")
    print(f"| 3-D bias mask (math path) | {math_s:.4f} |")
    print(f"| 4-D bias mask (fused kernel) | {fused_s:.4f} |")
    print(f"| ratio | {math_s / fused_s:.1f}x |\n")

    restorer = Restorer(args.weights, runtime=args.runtime)
    rgb, source = sample_image()
    print(f"Restorer.restore on {source}, 384 x 256 ({restorer.weights.name}, runtime "
          f"{args.runtime})\n")
    print("| setting | decided | clipped | seconds |")
    print("|---|---|---:|---:|")
    for label, kind, value in rt.SETTINGS:
        disturbed = rt.disturb(rgb, kind, value)
        _, facts = restorer.restore(disturbed)
        seconds = median_seconds(lambda d=disturbed: restorer.restore(d), args.runs)
        strength = facts["alpha"] or facts["beta"]
        decided = f"{facts['type']} {strength}" if facts["restored"] else "not restored"
        clipped = facts.get("clipped_fraction", 0.0)
        print(f"| {label} | {decided} | {clipped:.3f} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
