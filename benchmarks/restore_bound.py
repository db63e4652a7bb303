"""How much of an image the paper's disturbances destroy, per corpus source, and the PSNR an
oracle reaches that restores every surviving value exactly and fills each destroyed one with
the clean image's mean of the destroyed values (per channel).

A brightness shift of +-0.5 or a gain of 2.0 clips every value it pushes past 0 or 255: those
values are gone, and no restoration can know them. The oracle knows everything but their
individual values, so a method that beats it clearly must guess the lost content well (a
learned inpainting can, a little); where half of the values are lost, its ~20 dB is about what
any restoration reaches on that setting. Numbers for ``docs/methods/reconwave.md`` (issue #19
part 3: the four-setting mean per held-out source). Usage::

    .venv/bin/python benchmarks/restore_bound.py --corpus ../shared/corpus --photos 12
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FORGECTL_SHARED", REPO.parent / "shared"))


def oracle_fill_psnr(clean: np.ndarray, disturbed: np.ndarray) -> tuple[float, float]:
    """(PSNR dB of the oracle restoration, fraction of destroyed values) of one image pair,
    both (H, W, 3) uint8."""
    truth = clean.astype(np.float64)
    lost = (disturbed == 0) | (disturbed == 255)
    filled = truth.copy()
    for c in range(3):
        where = lost[..., c]
        if where.any():
            filled[..., c][where] = truth[..., c][where].mean()
    mse = float(np.mean((filled - truth) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    return psnr, float(lost.mean())


def main() -> None:
    from forgectl.evaluation import restoration_table as rt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    ap.add_argument("--photos", type=int, default=12, help="photos per source")
    ap.add_argument("--per-kind", type=int, default=4, help="forgeries per kind")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()

    groups = [("mix (test split)", args.corpus, "test")]
    groups += [(p.name, p, "all") for p in sorted(args.corpus.iterdir()) if p.is_dir()]
    labels = [s[0] for s in rt.SETTINGS]
    print("| source | " + " | ".join(f"{lab}: lost / oracle dB" for lab in labels)
          + " | oracle four-setting mean |")
    print("|---|" + "---:|" * (len(labels) + 1))
    for name, folder, split in groups:
        photos = rt.held_out_photos(folder, args.photos, 0, split)
        if not photos:
            continue
        images = rt.synthetic_set(photos, args.per_kind, seed=args.seed)
        cells, means = [], []
        for _, kind, value in rt.SETTINGS:
            pairs = [oracle_fill_psnr(img.rgb, rt.disturb(img.rgb, kind, value))
                     for img in images]
            finite = [p for p, _ in pairs if np.isfinite(p)]
            psnr = float(np.mean(finite)) if finite else float("inf")
            means.append(psnr)
            cells.append(f"{np.mean([f for _, f in pairs]):.2f} / {psnr:.1f}")
        finite_means = [m for m in means if np.isfinite(m)]
        # An exact setting (nothing lost: beta = 0.7) counts as the table's exact cell, 53.4 dB
        # (8-bit rounding), not infinity.
        mean = np.mean([m if np.isfinite(m) else 53.4 for m in means]) if finite_means else 53.4
        print(f"| {name} ({len(photos)} photos) | " + " | ".join(cells) + f" | {mean:.1f} |")


if __name__ == "__main__":
    main()
