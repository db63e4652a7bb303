"""What running each image in `localize`'s worker process costs, on small images.

Three figures for one method (default ela) on N small JPEGs (default 60 of 96x128):

- per image: the same files through ``pipeline.process_file`` in this process and through
  ``pipeline.IsolatedRunner`` (job and record over a pipe, memory polling), after a warm-up;
- start: the first image through a new runner (fork server and worker start, imports);
- end to end: ``forgectl localize ONE.jpg`` with and without ``--no-isolate`` (median of 3)::

    .venv/bin/python benchmarks/isolation_cost.py [--method ela] [--images 60]

Run it on idle cores only (the figures are wall-clock).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from forgectl import pipeline, registry
    from forgectl.intake import encode_jpeg
    from forgectl.synth.scenes import natural_image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="ela")
    parser.add_argument("--images", type=int, default=60)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="forgectl-isolation-") as tmp:
        root = Path(tmp)
        files = []
        for i in range(args.images):
            path = root / "in" / f"img{i:03d}.jpg"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(encode_jpeg(natural_image(96, 128, seed=i), 85))
            files.append(path)
        backend = registry.load(args.method)

        def items(tag: str) -> list:
            return pipeline.plan_outputs(files, root / tag)

        pipeline.process_file(backend, items("warm")[0])  # weights, imports
        t0 = time.perf_counter()
        for item in items("inproc"):
            pipeline.process_file(backend, item)
        inproc = (time.perf_counter() - t0) / len(files)

        with pipeline.IsolatedRunner(backend) as runner:
            plan = items("iso")
            t0 = time.perf_counter()
            runner.run(plan[0])
            start = time.perf_counter() - t0
            t0 = time.perf_counter()
            for item in plan[1:]:
                runner.run(item)
            isolated = (time.perf_counter() - t0) / (len(plan) - 1)

        def cli(*extra: str) -> float:
            times = []
            for k in range(3):
                t = time.perf_counter()
                subprocess.run([sys.executable, "-m", "forgectl", "localize", str(files[0]),
                                "-m", args.method, "--out", str(root / f"cli{k}"), *extra],
                               check=True, capture_output=True)
                times.append(time.perf_counter() - t)
            return statistics.median(times)

        one_isolated, one_inproc = cli(), cli("--no-isolate")
    print(f"{args.method} on {len(files)} images of 96x128:")
    print(f"  per image: in process {1000 * inproc:.1f} ms, isolated {1000 * isolated:.1f} ms "
          f"(+{1000 * (isolated - inproc):.1f} ms)")
    print(f"  first image through a new runner (fork server + worker start): {start:.2f} s")
    print(f"  `forgectl localize ONE.jpg`: {one_isolated:.2f} s isolated, {one_inproc:.2f} s "
          f"with --no-isolate (+{one_isolated - one_inproc:.2f} s)")


if __name__ == "__main__":
    main()
