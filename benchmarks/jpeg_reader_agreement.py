"""How closely the decoder fallback reproduces jpegio's JPEG internals (docs/OUTPUTS.md,
``jpeg.reader``).

For every JPEG under the given folders: the luminance coefficients and tables ``load_image``
reads through jpegio, against those the decoder reader recomputes (``FORGECTL_JPEG_READER``).
Prints each file's share of equal coefficients (with ``-v``), the worst file, and the share
over all. Methods' figures with the decoder: ``FORGECTL_JPEG_READER=decoder forgectl
benchmark ...``. With ``--time IMAGE``: the median of 5 reads of IMAGE's internals by each
reader instead (idle cores). Usage::

    .venv/bin/python benchmarks/jpeg_reader_agreement.py ../shared/bench/casia1-dev
    .venv/bin/python benchmarks/jpeg_reader_agreement.py --time big.jpg
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="*", type=Path)
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--time", type=Path, help="time both readers on this JPEG instead")
    args = ap.parse_args()

    import forgectl.intake as intake

    def read(path: Path, reader: str) -> intake.JpegData | None:
        os.environ[intake.JPEG_READER_ENV] = reader
        return intake._read_jpeg_internals(str(path))

    if args.time is not None:
        import statistics
        import time

        for name in ("jpegio", "decoder"):
            times = []
            for _ in range(5):
                start = time.perf_counter()
                read(args.time, name)
                times.append(time.perf_counter() - start)
            print(f"{args.time}: {name} median {statistics.median(times):.3f} s of 5")
        return

    paths = sorted(p for folder in args.folders for p in folder.rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg"))
    equal = total = 0
    tables_differ = 0
    worst = (1.0, "")
    for path in paths:
        exact, decoded = read(path, "jpegio"), read(path, "decoder")
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
