"""Every registered method on every file of the malformed-input corpus (tests/malformed.py).

Each file goes through `localize`'s worker process (decode, analyse, write outputs) with a
per-image timeout and memory bound, as a user's batch would. Reports, per method: results,
input errors, outcomes against what the file's family expects, crashes, hangs (timeouts),
memory-bound hits, internal errors, the worker's peak resident memory (polled every 50 ms)
and the slowest files::

    .venv/bin/python benchmarks/malformed_corpus.py [--methods ela,omni] [--timeout 60]

Minutes on two cores (the learned methods dominate); not part of the test suite, and not to be
run while another job uses the cores. Exit 1 if any file crashed, hung, hit the memory bound,
hit an internal error or contradicted its expectation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.malformed


def run_method(method: str, folder: Path, samples: list, out: Path, timeout: float,
               max_memory: int) -> dict:
    from forgectl import pipeline, registry

    backend = registry.load(method)
    plan = pipeline.plan_outputs([folder / s.name for s in samples], out)
    counts: Counter[str] = Counter()
    unexpected, slowest = [], []
    start = time.perf_counter()
    with pipeline.IsolatedRunner(backend, timeout=timeout, max_memory_mb=max_memory) as runner:
        for sample, item in zip(samples, plan, strict=True):
            t0 = time.perf_counter()
            record = runner.run(item)
            seconds = time.perf_counter() - t0
            slowest.append((round(seconds, 2), sample.name))
            kind = record.get("error_kind") if "error" in record else "ok"
            counts[kind] += 1
            got = {"ok": "ok", "input": "error"}.get(kind, kind)
            if got not in ("ok", "error") or (sample.expect != "any" and got != sample.expect):
                unexpected.append({"file": sample.name, "expected": sample.expect, "got": kind,
                                   "error": record.get("error")})
        peak = runner.peak_rss_mb
        restarts = runner.restarts
    return {"method": method, "files": len(samples), "seconds": round(time.perf_counter()
                                                                        - start, 1),
            "outcomes": dict(counts), "unexpected": unexpected, "peak_rss_mb": round(peak),
            "worker_restarts": restarts, "slowest": sorted(slowest, reverse=True)[:5]}


def main() -> None:
    from forgectl import registry
    from tests import malformed

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(registry.available()))
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per image")
    parser.add_argument("--max-memory", type=int, default=4000, help="MB per worker")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="forgectl-malformed-") as tmp:
        folder = Path(tmp) / "corpus"
        samples = malformed.build(folder)
        print(f"corpus: {len(samples)} files {malformed.by_family(samples)}", flush=True)
        reports = []
        for method in args.methods.split(","):
            report = run_method(method, folder, samples, Path(tmp) / f"out-{method}",
                                args.timeout, args.max_memory)
            reports.append(report)
            o = report["outcomes"]
            print(f"{method:10s} {report['files']} files in {report['seconds']} s: "
                  f"{o.get('ok', 0)} analysed, {o.get('input', 0)} input errors, "
                  f"{o.get('crash', 0)} crashes, {o.get('timeout', 0)} hangs, "
                  f"{o.get('memory', 0)} over memory, {o.get('internal', 0)} internal; "
                  f"{len(report['unexpected'])} unexpected; peak worker RSS "
                  f"{report['peak_rss_mb']} MB; slowest {report['slowest'][:3]}", flush=True)
            for bad in report["unexpected"]:
                print(f"    {bad}")
    if args.json:
        args.json.write_text(json.dumps({"files": len(samples), "methods": reports}, indent=2))
    if any(r["unexpected"] for r in reports):
        sys.exit(1)


if __name__ == "__main__":
    main()
