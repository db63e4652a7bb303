"""Time and peak memory of one method on one (large) image, for the method docs.

Run it under ``/usr/bin/time -v`` to get the process's peak RSS too::

    /usr/bin/time -v .venv/bin/python benchmarks/one_image.py METHOD IMAGE

Single-threaded OpenCV so figures do not depend on other jobs' core use.
"""

from __future__ import annotations

import os
import resource
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    import cv2

    from forgectl import registry
    from forgectl.intake import load_image

    cv2.setNumThreads(1)
    method, path = sys.argv[1], sys.argv[2]
    backend = registry.load(method)
    imported = _peak_mb()
    image = load_image(path)
    loaded = _peak_mb()
    start = time.perf_counter()
    result = backend.localize(image)
    seconds = time.perf_counter() - start
    print(
        f"{method} on {image.width}x{image.height}: analyze {seconds:.1f} s; peak RSS "
        f"{imported:.0f} MB after imports, {loaded:.0f} MB after load_image, "
        f"{_peak_mb():.0f} MB after analyze; score {result.score:.2f}, "
        f"flagged {result.tampered_fraction:.4f}"
    )
    # A fusion (auto) also reports each member's time: its cost against the sum of its parts.
    members = result.facts.get("members") if isinstance(result.facts, dict) else None
    if members:
        parts = ", ".join(f"{m['method']} {m['seconds']:.1f} s" for m in members)
        total = sum(m["seconds"] for m in members)
        print(f"  members: {parts}; sum {total:.1f} s; fusion "
              f"{result.facts.get('fusion_seconds', 0):.1f} s")


if __name__ == "__main__":
    main()
