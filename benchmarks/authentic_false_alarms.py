"""False alarms on authentic photos that are not CASIA's: a method's image verdicts and flagged
pixels on the corpus photos no shipped model trained on (README, docs/methods/auto.md).

The learned models and ``auto``'s fusion were fitted on synthetic forgeries of the corpus'
``train`` split; its ``val`` and ``test`` splits (``forgectl.synth.engine.split_sources``: by a
hash of the file name) are held out. Each held-out photo is analysed as it is (full resolution,
its own format) through ``forgectl localize --files-from -`` (worker processes, as a user's
batch runs), and the records are summarised per corpus source: how many images a CI gate
``--fail-on 0.5`` / ``0.8`` would flag, the share of flagged pixels (mean, and the share of
images with more than 1 % flagged), the median and maximum score, the median seconds (decode
and analysis)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/authentic_false_alarms.py ../shared/corpus \\
        --out /tmp/fa [--method auto] [--splits val,test] [-j 2]

Minutes on two cores (large wallpapers dominate); not to be run while another job uses them.
With ``--summary-only`` the records already in ``OUT`` are summarised again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def held_out(corpus: Path, splits: list[str]) -> list[Path]:
    from forgectl.synth.engine import list_images, split_sources

    photos = list_images(corpus)
    chosen = {p for split in splits for p in split_sources(photos, split)}
    return [p for p in photos if p in chosen]


def summarise(records: list[dict], corpus: Path) -> list[dict]:
    """One row per corpus source (its first folder), and one for all."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for rec in records:
        path = Path(rec["input"]["path"]).resolve()
        try:
            source = path.relative_to(corpus.resolve()).parts[0]
        except ValueError:
            source = "?"
        groups[source].append(rec)
        groups["all"].append(rec)
    rows = []
    for source in sorted(groups, key=lambda s: (s == "all", s)):
        recs = groups[source]
        ok = [r for r in recs if "error" not in r]
        scores = [float(r["score"]) for r in ok]
        flagged = [float(r["tampered_fraction"]) for r in ok]
        seconds = [sum(float(v) for v in r.get("timings", {}).values()) for r in ok]
        n = max(len(ok), 1)
        rows.append({
            "source": source, "images": len(recs), "errors": len(recs) - len(ok),
            "fail_on_0.5": sum(s >= 0.5 for s in scores) / n,
            "fail_on_0.8": sum(s >= 0.8 for s in scores) / n,
            "mean_flagged": sum(flagged) / n,
            "over_1pct_flagged": sum(f > 0.01 for f in flagged) / n,
            "median_score": statistics.median(scores) if scores else None,
            "max_score": max(scores) if scores else None,
            "median_s": statistics.median(seconds) if seconds else None,
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--method", default="auto")
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("-j", "--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, help="only the first N photos (a smoke run)")
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()

    if not args.summary_only:
        photos = held_out(args.corpus, args.splits.split(","))[: args.limit]
        cmd = [str(Path(sys.executable).parent / "forgectl"), "localize", "--files-from", "-",
               "-m", args.method, "--out", str(args.out), "--outputs", "mask", "-j",
               str(args.workers), "--resume"]
        env = dict(os.environ, FORGECTL_THREADS=os.environ.get("FORGECTL_THREADS", "1"))
        subprocess.run(cmd, input="\n".join(map(str, photos)) + "\n", text=True, env=env,
                       check=False, cwd=ROOT)
    from forgectl.outputs import read_jsonl

    records, _ = read_jsonl(args.out / "results.jsonl")
    rows = summarise(records, args.corpus)
    (args.out / "false_alarms.json").write_text(json.dumps(rows, indent=1))
    print(f"{args.method} on the corpus' held-out photos ({args.splits}), as they are:")
    print("| source | images | --fail-on 0.5 | --fail-on 0.8 | mean flagged | >1 % flagged "
          "| median / max score | median s |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        med = "n/a" if r["median_s"] is None else f"{r['median_s']:.2f}"
        scores = ("n/a" if r["median_score"] is None
                  else f"{r['median_score']:.2f} / {r['max_score']:.2f}")
        print(f"| {r['source']} | {r['images']} | {r['fail_on_0.5']:.1%} | "
              f"{r['fail_on_0.8']:.1%} | {r['mean_flagged']:.2%} | {r['over_1pct_flagged']:.1%} "
              f"| {scores} | {med} |")


if __name__ == "__main__":
    main()
