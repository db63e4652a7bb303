"""How closely the decoder fallback reproduces jpegio's JPEG internals (docs/OUTPUTS.md,
``jpeg.reader``).

For every JPEG under the given folders: the luminance coefficients and tables ``load_image``
reads through jpegio, against those it recomputes when ``import jpegio`` fails. Prints each
file's share of equal coefficients (with ``-v``), the worst file, and the share over all.
Methods' figures with the fallback: run ``forgectl benchmark`` in a process where jpegio
cannot be imported (``sys.modules["jpegio"] = None`` before forgectl's CLI runs). With
``--time IMAGE``: the median of 5 reads of IMAGE's internals by each reader instead (idle
cores). Usage::

    .venv/bin/python benchmarks/jpeg_reader_agreement.py ../shared/bench/casia1-dev
    .venv/bin/python benchmarks/jpeg_reader_agreement.py --time big.jpg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--time", type=Path, help="time both readers on this JPEG instead")
    args = ap.parse_args()

    import forgectl.intake as intake

    if args.time is not None:
        import statistics
        import time

        for name, read in (("jpegio", intake._read_jpeg_internals),
                           ("decoder", intake._decoded_internals)):
            times = []
            for _ in range(5):
                start = time.perf_counter()
                read(str(args.time))
                times.append(time.perf_counter() - start)
            print(f"{args.time}: {name} median {statistics.median(times):.3f} s of 5")
        return

    paths = sorted(p for folder in args.folders for p in folder.rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg"))
    equal = total = 0
    tables_differ = 0
    worst = (1.0, "")
    for path in paths:
        exact = intake._read_jpeg_internals(str(path))
        saved = sys.modules.get("jpegio")
        sys.modules["jpegio"] = None  # type: ignore[assignment]  # import jpegio fails
        try:
            decoded = intake._read_jpeg_internals(str(path))
        finally:
            if saved is None:
                sys.modules.pop("jpegio", None)
            else:
                sys.modules["jpegio"] = saved
        if exact is None or decoded is None:
            print(f"{path}: skipped (no JPEG internals)")
            continue
        tables_differ += any(not np.array_equal(a, b) for a, b in
                             zip(exact.quant_tables, decoded.quant_tables, strict=True))
        y = decoded.coefficients[0]
        same = exact.coefficients[0][: y.shape[0], : y.shape[1]] == y
        equal += int(same.sum())
        total += same.size
        share = float(same.mean())
        worst = min(worst, (share, str(path)))
        if args.verbose:
            print(f"{path}: {share:.5f}")
    print(f"{len(paths)} JPEGs: {equal / max(total, 1):.4%} of luminance coefficients equal; "
          f"worst {worst[0]:.4%} ({worst[1]}); tables differ in {tables_differ}")


if __name__ == "__main__":
    main()
