"""What shrinking onnxruntime's CPU memory arena after every run costs and saves.

    .venv/bin/python benchmarks/onnx_arena_study.py {plain,shrink} METHOD FOLDER BIG_IMAGE

Runs METHOD on its ONNX twin over the first 25 images of FOLDER (median time each, after one
warm-up) and then on BIG_IMAGE, and prints the times and the process's peak RSS. ``shrink``
passes ``memory.enable_memory_arena_shrinkage`` with every run (the arena is returned after each
tile instead of kept for the next). Run each mode in its own process, on idle cores.
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    import numpy as np
    import onnxruntime as ort

    from forgectl import registry
    from forgectl.backends import learned
    from forgectl.intake import load_image

    mode, method, folder, big = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4]
    if mode == "shrink":
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

        def call(self, feeds):  # OnnxRunner.__call__ with the run options
            arrays = {n: np.ascontiguousarray(feeds[n]) for n in self.input_names}
            return dict(zip(self.output_names,
                            self.session.run(self.output_names, arrays, options), strict=True))

        learned.OnnxRunner.__call__ = call
    backend = registry.load(method, runtime="onnx")
    images = sorted(p for p in folder.iterdir() if p.is_file())[:25]
    backend.localize(load_image(images[0]))
    times = []
    for path in images:
        image = load_image(path)
        start = time.perf_counter()
        backend.localize(image)
        times.append(time.perf_counter() - start)
    small_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    image = load_image(big)
    start = time.perf_counter()
    backend.localize(image)
    big_s = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{method} {mode}: median {1000 * statistics.median(times):.0f} ms an image of "
          f"{folder} (peak RSS {small_rss:.0f} MB); {image.width}x{image.height} {big_s:.1f} s, "
          f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
