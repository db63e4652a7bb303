"""Fold a chosen decision threshold into a mask network's output bias (a dev-set calibration).

A sigmoid heatmap thresholded at ``t`` gives the same mask as the heatmap of logits shifted by
``-logit(t)`` thresholded at 0.5. Shifting the bias of the final 1x1 classifier does exactly
that (bilinear upsampling of logits is affine with weights summing to 1, so a constant shift
passes through it), so the shipped heatmap's 0.5 is the chosen operating point, every runtime
and export inherits it, and the default threshold stays 0.5.

A two-class head (softmax over pristine, forged: the heatmap is ``sigmoid(l_forged -
l_pristine)``, as MUN's) takes the shift on the forged class's bias only: ``--bias-index 1``.

The threshold is read from a ``forgectl benchmark`` report (the dataset-wide best threshold of
the method, ``localization.best_threshold``) or given with ``--threshold``; the model card
records the shift, where it was chosen and the file's new sha256.

Usage::

    .venv/bin/python tools/calibrate_threshold.py WEIGHTS.safetensors \\
        --report BENCH/report.json --method omni [--bias-key decoder.classifier.bias]
    .venv/bin/python tools/calibrate_threshold.py weights/mun-tiny.safetensors \\
        --report BENCH/report.json --method mun --bias-key mun.decoder.classifier.bias \\
        --bias-index 1 [--max-authentic-fpr 0.05]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def best_threshold(
    report: Path, method: str, max_authentic_fpr: float | None = None
) -> tuple[float, dict]:
    """The threshold to fold from ``method``'s clean row of a benchmark report, and the row.

    Without a bound: the dataset-wide best threshold of mean per-image F1. With
    ``max_authentic_fpr``: the best F1 among thresholds whose authentic images' mean flagged
    fraction stays within the bound (the rule ``auto`` uses for its map threshold).
    """
    from forgectl.metrics import best_threshold_bounded

    data = json.loads(report.read_text())
    for row in data["rows"]:
        if row["method"] == method and row["setting"] == "clean":
            if max_authentic_fpr is None:
                return float(row["localization"]["best_threshold"]), row
            curve = row["f1_by_threshold"]
            if curve.get("authentic_fpr") is None:
                raise SystemExit(f"{report} has no authentic_fpr curve: re-run the benchmark")
            return best_threshold_bounded(
                curve["f1"], curve["authentic_fpr"], curve["thresholds"], max_authentic_fpr
            ), row
    raise SystemExit(f"no clean row for {method!r} in {report}")


def _dataset_of(report: Path) -> dict:
    """Where a benchmark report's threshold comes from: its dataset and command."""
    manifest = json.loads(report.read_text()).get("manifest", {})
    return {"dataset": manifest.get("dataset"), "command": manifest.get("command")}


def main() -> None:
    from safetensors.torch import load_file

    from forgectl.outputs import write_json
    from forgectl.training.trainer import WEIGHTS_FORMAT, save_tensors
    from forgectl.weights import sha256_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", type=Path)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--method", default="omni")
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--max-authentic-fpr", type=float, default=None,
                    help="choose the best-F1 threshold whose authentic images' mean flagged "
                         "fraction is at most this (e.g. 0.05); default: no bound")
    ap.add_argument("--bias-key", default="decoder.classifier.bias")
    ap.add_argument("--bias-index", type=int, default=None,
                    help="shift only this element of the bias (the forged class of a "
                         "two-class head); default: the whole (one-class) bias")
    args = ap.parse_args()

    row = None
    if args.threshold is not None:
        t = args.threshold
    elif args.report is not None:
        t, row = best_threshold(args.report, args.method, args.max_authentic_fpr)
    else:
        raise SystemExit("give --threshold or --report")
    if not 0.0 < t < 1.0:
        raise SystemExit(f"threshold must be in (0, 1), got {t}")
    shift = -math.log(t / (1.0 - t))

    card_path = args.weights.with_suffix(".json")
    card = json.loads(card_path.read_text())
    if card.get("calibration"):
        raise SystemExit(f"{args.weights} is already calibrated: {card['calibration']}")
    state = load_file(str(args.weights))
    if args.bias_key not in state:
        raise SystemExit(f"{args.weights} has no tensor {args.bias_key!r}")
    bias = state[args.bias_key].clone()
    if args.bias_index is None:
        if bias.numel() != 1:
            raise SystemExit(f"{args.bias_key} has {bias.numel()} elements: give --bias-index")
        bias += shift
    else:
        bias[args.bias_index] += shift
    state[args.bias_key] = bias
    save_tensors(args.weights, state, {"format": WEIGHTS_FORMAT, "method": args.method,
                                       "config": card.get("config_name", "")})
    card["calibration"] = {
        "threshold_folded": round(t, 4),
        "logit_shift": round(shift, 6),
        "tensor": args.bias_key,
        **({"tensor_index": args.bias_index} if args.bias_index is not None else {}),
        "chosen_on": None if row is None else _dataset_of(args.report),
        "chosen_by": (
            "given with --threshold" if row is None
            else "dataset-wide best threshold of mean per-image F1 (forgectl benchmark)"
            + ("" if args.max_authentic_fpr is None else
               f" among thresholds with authentic mean flagged fraction"
               f" <= {args.max_authentic_fpr}")
        ),
        "note": "heatmap 0.5 of this file = threshold t of the uncalibrated network",
    }
    card["weights"]["sha256"] = sha256_file(args.weights)
    card["weights"]["bytes"] = args.weights.stat().st_size
    write_json(card_path, card)
    print(f"folded threshold {t:.3f} (logit shift {shift:+.4f}) into {args.weights}")


if __name__ == "__main__":
    main()
