"""Split a benchmark dataset into two fixed halves: one to choose on, one to report.

Used by the recipe study and checkpoint/threshold choices (docs/TRAINING.md): choose on half
``A``, report half ``B``, so the reported figure was not used to choose. The split is a pure
function of the file names (:func:`forgectl.evaluation.datasets.halves`: sha256 of the image
path, stratified by label and manipulation type), so anyone gets the same halves. Each half
is a folder of symbolic links plus its own MANIFEST.tsv, readable by ``forgectl benchmark``;
the source dataset is not modified.

    python benchmarks/split_halves.py ../shared/bench/casia1-dev /tmp/casia-A /tmp/casia-B
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path


def split(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Rows of a MANIFEST into halves A and B (stratified, deterministic)."""
    from forgectl.evaluation.datasets import halves

    half_a, half_b = halves([r["image_path"] for r in rows],
                            [(r["label"], r.get("manipulation_type", "")) for r in rows])
    return [rows[i] for i in half_a], [rows[i] for i in half_b]


def write_half(src: Path, dst: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for row in rows:
        for col in ("image_path", "mask_path"):
            rel = row.get(col)
            if not rel:
                continue
            link = dst / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink((src / rel).resolve(), link)
    with open(dst / "MANIFEST.tsv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("half_a", type=Path)
    ap.add_argument("half_b", type=Path)
    args = ap.parse_args()
    with open(args.dataset / "MANIFEST.tsv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    half_a, half_b = split(rows)
    write_half(args.dataset, args.half_a, half_a, fields)
    write_half(args.dataset, args.half_b, half_b, fields)
    print(f"A: {len(half_a)} items in {args.half_a}; B: {len(half_b)} items in {args.half_b}")


if __name__ == "__main__":
    main()
