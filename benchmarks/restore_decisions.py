"""Per image: what the restorer decides on the restoration table's images, and why.

The table (``benchmarks/restore_table.py``) counts how many undisturbed images a module
changed; this says which ones and on what evidence. For each image of the same sample (same
photos, seed and forgeries) and each setting asked for, one line: the image's brightest value,
the classifier's type, strength and confidence, where the strength came from (``classifier``,
``gain_fit``, ``darkest``, ...) and the veto, if any::

    .venv/bin/python benchmarks/restore_decisions.py --corpus ../shared/corpus/dresden_prnu \\
        --split all --photos 12 --per-kind 8 --setting none --setting contrast:0.7 \\
        --weights weights/reconwave-restore-tiny-ft.safetensors

``--jpeg Q`` also re-saves every disturbed image as JPEG at quality Q (a disturbance that
went through a lossy save, where the histogram fingerprints are smeared). The last lines
count, per setting, the images restored and their decisions' sources.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FORGECTL_SHARED", REPO.parent / "shared"))


def parse_setting(text: str) -> tuple[str, float | None]:
    """``none``, ``brightness:A`` or ``contrast:B`` -> (kind, value)."""
    if text == "none":
        return "none", None
    kind, _, value = text.partition(":")
    if kind not in ("brightness", "contrast") or not value:
        raise SystemExit(f"restore_decisions: bad --setting {text!r} (none, brightness:A, "
                         "contrast:B)")
    return kind, float(value)


def main() -> None:
    from forgectl.backends.restorer import Restorer
    from forgectl.evaluation import restoration_table as rt
    from forgectl.intake import encode_jpeg, image_from_bytes

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=SHARED / "corpus")
    ap.add_argument("--split", default="test", choices=["test", "all"])
    ap.add_argument("--photos", type=int, default=12)
    ap.add_argument("--per-kind", type=int, default=8)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--setting", action="append", default=None,
                    help="none, brightness:A or contrast:B (repeatable; default: none)")
    ap.add_argument("--jpeg", type=int, default=0, help="re-save disturbed images at this "
                    "JPEG quality (0: no)")
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--runtime", default="torch", choices=["auto", "torch", "onnx"])
    args = ap.parse_args()

    settings = [parse_setting(s) for s in (args.setting or ["none"])]
    photos = rt.held_out_photos(args.corpus, args.photos, 0, args.split)
    images = rt.synthetic_set(photos, args.per_kind, seed=args.seed)
    restorer = Restorer(args.weights, runtime=args.runtime)
    summary: dict[str, Counter] = {}
    for kind, value in settings:
        label = kind if value is None else f"{kind}:{value:g}"
        counts = summary.setdefault(label, Counter())
        for img in images:
            rgb = rt.disturb(img.rgb, kind, value)
            if args.jpeg and kind != "none":
                rgb = np.asarray(image_from_bytes(encode_jpeg(rgb, args.jpeg)).rgb)
            f = restorer.decide(rgb)
            strength = f.get("alpha") if f.get("type") == "brightness" else f.get("beta")
            counts["restored" if f.get("restored") else "left"] += 1
            if f.get("restored"):
                counts[f"source={f.get('source')}"] += 1
            print(f"{label:<14} {img.name:<40} brightest {rgb.max() / 255:.3f}  "
                  f"{f['type']:<10} {strength if strength is not None else '-'!s:<7} "
                  f"conf {f['confidence']:.3f}  source {f.get('source')}  "
                  f"veto {f.get('veto') or '-'}")
    for label, counts in summary.items():
        print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
