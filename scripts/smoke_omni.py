"""Omni-IML smoke training: does the loss fall on a handful of synthetic samples?

A mechanics check, not a result: the shared trainer with the omni tiny recipe cycles over a few
fixed synthetic samples, validates on samples from the same pool, ships weights and a card into
``OUT``, and loads them back through :class:`OmniBackend`.

Usage::

    .venv/bin/python scripts/smoke_omni.py OUT [--steps 60] [--samples 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from forgectl.backends.omni import OmniBackend, training_recipe
    from forgectl.training.synth import SynthesisEngine, list_images, split_sources
    from forgectl.training.trainer import RunOptions, TrainData, Trainer, run_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--photos", type=Path, default=Path("../shared/corpus/sun_hays80"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    paths = split_sources(list_images(args.photos), "train")[:30]
    engine = SynthesisEngine(paths, seed=3)
    fixed = [engine.sample(i, kind="splice" if i % 4 else "authentic")
             for i in range(args.samples)]

    class Cycle:
        def sample(self, index: int):
            return fixed[index % len(fixed)]

    recipe = training_recipe()
    config = run_config(recipe, "tiny", {"steps": args.steps, "batch_size": 4, "lr": 1e-3,
                                         "warmup_steps": 5})
    config["focus_prob"] = 1.0
    options = RunOptions(run_dir=args.out / "run", out_dir=args.out / "weights",
                         threads=args.threads, val_every=0, val_samples=8, progress=False,
                         ckpt_every=0, best_metric="val_loss", ship="last")
    info = {"note": f"smoke: {args.samples} fixed samples, validation from the same pool"}
    t = time.time()
    card = Trainer(recipe, "tiny", config, TrainData(Cycle(), Cycle(), info), options).run()
    steps = [json.loads(line) for line in open(args.out / "run" / "train.jsonl")]
    steps = [r for r in steps if r.get("event") == "step"]
    for r in steps[:: max(1, len(steps) // 10)] + steps[-1:]:
        print(json.dumps({k: r.get(k) for k in ("step", "loss", "bce", "dice", "gate",
                                                 "det_box", "compute_s")}))
    print(json.dumps({"wall_s": round(time.time() - t, 1), "final": card["metrics"]["final"]}))
    backend = OmniBackend(weights=args.out / "weights" / "omni-tiny.safetensors")
    result = backend.localize(fixed[1].image)
    print(json.dumps({"facts": result.facts, "reading": backend.reading(result)}))


if __name__ == "__main__":
    main()
