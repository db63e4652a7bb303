"""ReConWave-Net Table 1 here: PSNR / SSIM of unrestored vs restored brightness and contrast
disturbances, on synthetic copy-move, splice and removal images made from held-out photos.

Usage (from the repository root):

    .venv/bin/python benchmarks/restore_table.py                       # classical baseline only
    .venv/bin/python benchmarks/restore_table.py --weights W.safetensors   # + learned column
    .venv/bin/python benchmarks/restore_table.py --fit-reference       # REFERENCE_QUANTILES

The photos are the first ``--photos`` of the corpus's ``test`` split
(:func:`forgectl.synth.engine.split_sources`, by a hash of the file name; training never sees
them); ``--per-kind`` forgeries of each kind are made from them with a fixed seed. Rows: alpha =
0.5, alpha = -0.5, beta = 0.7, beta = 2.0 (the paper's grid) and an undisturbed control row.
``--json`` also writes the full table (overall and per kind). ``--skip N`` starts after the first
N photos: a validation set apart from the table (``--skip 12 --seed 7`` chose between weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FORGECTL_SHARED", REPO.parent / "shared"))

from forgectl.analysis.restoration import QUANTILE_LEVELS, classical_restore  # noqa: E402
from forgectl.backends.restorer import Restorer  # noqa: E402
from forgectl.evaluation import restoration_table as rt  # noqa: E402


def fit_reference(corpus: Path, count: int, seed: int) -> None:
    """Print the mean quantile function of ``count`` random training-split photos."""
    from PIL import Image

    from forgectl.synth.engine import list_images, split_sources

    paths = split_sources(list_images(corpus), "train")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(paths), min(count, len(paths)), replace=False))
    rows = []
    for i in pick:
        with Image.open(paths[i]) as im:
            im.draft("RGB", (512, 512))  # libjpeg's fast reduced decode for large JPEGs
            im = im.convert("RGB")
            im.thumbnail((512, 512))
            values = np.asarray(im, np.float64).reshape(-1) / 255.0
        rows.append(np.quantile(values, QUANTILE_LEVELS))
    mean = np.mean(rows, axis=0)
    print(f"# {len(rows)} training-split photos of {corpus}, levels {QUANTILE_LEVELS}")
    print("REFERENCE_QUANTILES = (" + ", ".join(f"{v:.4f}" for v in mean) + ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    ap.add_argument("--photos", type=int, default=12, help="held-out photos used")
    ap.add_argument(
        "--skip", type=int, default=0, help="leave out the first N held-out photos (validation)"
    )
    ap.add_argument("--split", default="test", choices=["test", "all"],
                    help="photos of --corpus: its test split (default) or all of them (a "
                    "source left out of training, benchmarks/restore_loso.py)")
    ap.add_argument("--per-kind", type=int, default=12, help="forgeries per kind")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--weights", type=Path, help="learned restoration weights (optional)")
    ap.add_argument("--runtime", default="auto", choices=["auto", "torch", "onnx"],
                    help="runtime of the learned column (auto: the ONNX twins when present)")
    ap.add_argument("--json", type=Path, help="write the full table here")
    ap.add_argument(
        "--card",
        action="store_true",
        help="also record the learned column in the --weights model card (metrics.restoration)",
    )
    ap.add_argument(
        "--fit-reference",
        action="store_true",
        help="print the classical baseline's reference quantiles and exit",
    )
    ap.add_argument("--reference-photos", type=int, default=200)
    args = ap.parse_args()

    if args.fit_reference:
        fit_reference(args.corpus, args.reference_photos, seed=0)
        return
    photos = rt.held_out_photos(args.corpus, args.photos, args.skip, args.split)
    images = rt.synthetic_set(photos, args.per_kind, seed=args.seed)
    restorers: dict[str, rt.Restore] = {"classical": lambda rgb: classical_restore(rgb)[0]}
    if args.weights:
        learned = Restorer(args.weights, runtime=args.runtime)
        restorers["learned"] = lambda rgb: learned.restore(rgb)[0]
    start = time.perf_counter()
    table = rt.restoration_table(images, restorers)
    table.facts.update(
        {
            "photos": [p.name for p in photos],
            "seed": args.seed,
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    sizes = [img.rgb.shape[:2] for img in images]
    print(
        f"{len(images)} images ({table.facts['kinds']}) from {len(photos)} held-out photos, "
        f"sizes {min(sizes)}..{max(sizes)}, {table.facts['seconds']} s\n"
    )
    print(rt.format_markdown(table))
    for kind, cells in table.by_kind.items():
        print(f"\n{kind}:\n{rt.format_markdown(table, cells)}")
    if args.json:
        args.json.write_text(json.dumps(table.to_dict(), indent=2))
    if args.card and args.weights:
        record_in_card(args.weights, table.to_dict(), sys.argv[1:])


def record_in_card(weights: Path, table: dict, argv: list[str]) -> None:
    """Put a table's (``Table.to_dict()``) learned, classical and unrestored cells in the
    weights' model card, under ``metrics.restoration``."""
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    wanted = ("unrestored", "learned", "classical")
    cells = {k: v for k, v in table["cells"].items() if k.split(" | ")[1] in wanted}
    learned = [
        v["psnr"] for k, v in cells.items() if k.endswith("| learned") and not k.startswith("none")
    ]
    card.setdefault("metrics", {})["restoration"] = {
        "command": "benchmarks/restore_table.py " + " ".join(argv),
        "images": table["facts"].get("images"),
        "kinds": table["facts"].get("kinds"),
        "mean_learned_psnr_over_settings": round(sum(learned) / len(learned), 3),
        "cells": cells,
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")

if __name__ == "__main__":
    main()
