"""How often omni's modal gate routes an image to the RGB stream, and on what.

Two read-outs for a weights file (issue #19: "the gate's RGB share on synthetic validation,
with what triggers it, and on casia1-dev"):

- synthetic: ``--n`` samples from the corpus *val* photos with ``reshare_prob`` files shared
  again after their save (the history the ``iou+history`` gate label marks), the RGB share
  split by history: reshared or not, JPEG or not (non-JPEG files always take the RGB route, so
  they are counted apart);
- real: every image of ``--dataset`` folders (``facts.modality`` of ``localize``).

The gate decides per image from the first tile, exactly as ``forgectl localize`` does (the
backend's own path). Usage::

    FORGECTL_THREADS=2 .venv/bin/python benchmarks/gate_share.py \\
        --weights weights/omni-tiny.safetensors --images ../shared/corpus --n 200 \\
        --dataset ../shared/bench/casia1-dev --out gate.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from pathlib import Path


def main() -> None:
    from forgectl.backends.omni import OmniBackend
    from forgectl.evaluation.datasets import load_dataset
    from forgectl.intake import load_image
    from forgectl.outputs import write_json
    from forgectl.synth.engine import SynthConfig, SynthesisEngine, list_images, split_sources
    from forgectl.synth.histories import HistoryConfig, reshared

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--images", type=Path, help="corpus folder (synthetic read-out)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2029)
    ap.add_argument("--reshare-prob", type=float, default=0.5)
    ap.add_argument("--dataset", type=Path, nargs="*", default=[],
                    help="benchmark dataset folders (real read-out)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    backend = OmniBackend(weights=args.weights)
    report: dict = {"weights": str(args.weights),
                    "command": shlex.join(["benchmarks/gate_share.py", *sys.argv[1:]])}
    if args.images is not None:
        config = SynthConfig(history=HistoryConfig(reshare_prob=args.reshare_prob))
        engine = SynthesisEngine(split_sources(list_images(args.images), "val"),
                                 seed=args.seed, config=config)
        counts: Counter[tuple[str, str]] = Counter()
        probs: dict[str, list[float]] = {"reshared": [], "not reshared": []}
        for i in range(args.n):
            sample = engine.sample(i)
            facts = backend.localize(sample.image).facts
            group = "reshared" if reshared(sample.history) else "not reshared"
            if facts["gate_probability"] is None:
                group = "no JPEG data (always RGB)"
            else:
                probs[group].append(float(facts["gate_probability"]))
            counts[(group, facts["modality"])] += 1
        groups = sorted({g for g, _ in counts})
        report["synthetic"] = {
            "samples": args.n, "seed": args.seed, "reshare_prob": args.reshare_prob,
            "by_history": {g: {"images": counts[(g, "rgb")] + counts[(g, "fused")],
                               "rgb": counts[(g, "rgb")],
                               "rgb_share": round(counts[(g, "rgb")]
                                                  / max(1, counts[(g, "rgb")]
                                                        + counts[(g, "fused")]), 4),
                               "median_gate_p": _median(probs.get(g, []))}
                           for g in groups},
        }
        jpeg = [g for g in groups if g != "no JPEG data (always RGB)"]
        n_jpeg = sum(counts[(g, m)] for g in jpeg for m in ("rgb", "fused"))
        report["synthetic"]["rgb_share_of_jpeg_files"] = round(
            sum(counts[(g, "rgb")] for g in jpeg) / max(1, n_jpeg), 4)
    for folder in args.dataset:
        items = [it for it in load_dataset(folder).items if it.problem is None]
        routes: Counter[str] = Counter()
        gate_ps: list[float] = []
        for item in items:
            facts = backend.localize(load_image(item.image)).facts
            routes[facts["modality"]] += 1
            if facts["gate_probability"] is not None:
                gate_ps.append(float(facts["gate_probability"]))
        report.setdefault("real", {})[str(folder)] = {
            "images": sum(routes.values()), "rgb": routes["rgb"],
            "rgb_share": round(routes["rgb"] / max(1, sum(routes.values())), 4),
            "median_gate_p": _median(gate_ps), "max_gate_p": max(gate_ps, default=None)}
    write_json(args.out, report)
    print(json.dumps(report, indent=1))


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[len(ordered) // 2], 4)


if __name__ == "__main__":
    main()
