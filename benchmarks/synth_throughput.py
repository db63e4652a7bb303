"""Throughput of the synthetic forgery generator (samples/s, one process, one OpenCV thread).

Two figures per working size:

* cold: every sample from new photos (decode + GrabCut object cut on first use), the cost of a
  first pass over a large corpus;
* warm: photos whose decode and objects are cached (a subset of ``--warm-sources`` photos,
  warmed first), the steady state of a long training run once objects are cut (objects stay
  cached for every photo; decoded pixels are an LRU of ``cache_size`` photos).

Each is given as wall-clock samples/s and as samples per CPU-second of this process (what an
unshared core would give; the machine may be shared with other jobs).

Usage::

    .venv/bin/python benchmarks/synth_throughput.py --images ../shared/corpus --n 60
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def measure(engine, indices) -> tuple[float, float]:
    """(wall-clock samples/s, samples per CPU-second) over ``engine.sample(i)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in indices:
        engine.sample(i)
    n = len(indices)
    return n / (time.perf_counter() - wall), n / (time.process_time() - cpu)


def main() -> None:
    import cv2

    from forgectl.synth.engine import SynthConfig, SynthesisEngine, list_images, split_sources

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=Path("../shared/corpus"))
    parser.add_argument("--n", type=int, default=60, help="samples per measurement")
    parser.add_argument("--sizes", default="384,512", help="working long sides to measure")
    parser.add_argument("--warm-sources", type=int, default=40)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    paths = split_sources(list_images(args.images), "train")
    for side in (int(s) for s in args.sizes.split(",")):
        config = SynthConfig(size_range=(side, side), cache_size=args.warm_sources + 8)
        cold = measure(SynthesisEngine(paths, seed=1, config=config), range(args.n))
        warm_engine = SynthesisEngine(paths[: args.warm_sources], seed=2, config=config)
        measure(warm_engine, range(3 * args.warm_sources))  # cut every photo's objects once
        warm = measure(warm_engine, range(10_000, 10_000 + args.n))
        print(
            f"long side {side}: cold {cold[0]:.2f} samples/s ({cold[1]:.2f} per CPU-s), "
            f"warm {warm[0]:.2f} samples/s ({warm[1]:.2f} per CPU-s); n={args.n}, "
            f"{len(paths)} train photos, warm subset {args.warm_sources}, "
            f"load average {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
