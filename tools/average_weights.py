"""Average several weights files of one method and network (a uniform "model soup").

Legs of one long run (each warm-started from the one before) end in one basin of the loss, and
the mean of their weights often generalizes better than any one of them (Wortsman et al. 2022,
"Model soups"). Every float tensor is the mean over the files (computed in float64); integer
tensors (counters) come from the last file.

The card is the last file's (its training history already reaches back through its warm
starts) with ``training.average`` naming every file averaged (sha256, steps, CPU hours, any
threshold folded into it), the new file's digest, and its metrics dropped (they were the last
file's alone). Choose a soup on a dev half and report the other half, as for any checkpoint;
fold a threshold afterwards with ``tools/calibrate_threshold.py``.

Usage::

    .venv/bin/python tools/average_weights.py OUT.safetensors A.safetensors B.safetensors [...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    import torch
    from safetensors.torch import load_file

    from forgectl.outputs import write_json
    from forgectl.training.trainer import WEIGHTS_FORMAT, save_tensors
    from forgectl.weights import check_digest, sha256_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("files", type=Path, nargs="+")
    args = ap.parse_args()
    if len(args.files) < 2:
        raise SystemExit("give at least two files to average")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new name")

    cards = []
    for path in args.files:
        card_path = path.with_suffix(".json")
        if not card_path.is_file():
            raise SystemExit(f"{path} has no model card {card_path.name}")
        card = json.loads(card_path.read_text())
        check_digest(path, card)
        cards.append(card)
    # One network: same method and config name here, same tensor names and shapes below (the
    # configs may differ in training settings such as the learning rate).
    if len({(c.get("method"), c.get("config_name")) for c in cards}) != 1:
        raise SystemExit("the files are not of one method and config")

    states = [load_file(str(p)) for p in args.files]
    keys = set(states[0])
    for path, state in zip(args.files[1:], states[1:], strict=True):
        if set(state) != keys or any(state[k].shape != states[0][k].shape for k in keys):
            raise SystemExit(f"{path} has other tensors than {args.files[0]}")
    averaged = {}
    for key in sorted(keys):
        last = states[-1][key]
        if last.is_floating_point():
            total = sum(s[key].to(torch.float64) for s in states)
            averaged[key] = (total / len(states)).to(last.dtype).contiguous()
        else:
            averaged[key] = last
    card = json.loads(json.dumps(cards[-1]))
    method = card.get("method", "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(args.out, averaged, {"format": WEIGHTS_FORMAT, "method": method,
                                      "config": card.get("config_name", "")})
    card["training"]["average"] = {
        "rule": "uniform mean of every float tensor (float64), integer tensors from the last "
                "file (tools/average_weights.py)",
        "files": [
            {"path": str(p), "sha256": c["weights"]["sha256"],
             "steps": c.get("training", {}).get("steps"),
             "cpu_hours_total": c.get("training", {}).get("cpu_hours_total"),
             **({"calibration": c["calibration"]} if c.get("calibration") else {})}
            for p, c in zip(args.files, cards, strict=True)
        ],
    }
    card.pop("calibration", None)
    card["metrics"] = {"note": "the averaged file's own figures are added when it is evaluated"}
    card["weights"]["file"] = args.out.name
    card["weights"]["sha256"] = sha256_file(args.out)
    card["weights"]["bytes"] = args.out.stat().st_size
    card["weights"]["selected"] = {"which": "average", "files": len(args.files)}
    write_json(args.out.with_suffix(".json"), card)
    print(f"averaged {len(args.files)} files into {args.out}")


if __name__ == "__main__":
    main()
