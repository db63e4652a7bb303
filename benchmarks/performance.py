"""The speed table of docs/PERFORMANCE.md: every method, CASIA size and 12 MP, median seconds
and peak RSS, per runtime (torch / onnx / int8) for learned methods, with casia1-dev F1 beside each
runtime; and the start-up of the commands a user types first.

    .venv/bin/python benchmarks/performance.py --out perf.json            # everything
    .venv/bin/python benchmarks/performance.py -m omni,ela --skip-f1       # a quick look

Also the batch throughput of ``localize`` (default method) on the first ``--batch-images``
casia1-dev images with ``-j 1`` and ``-j 2`` (FORGECTL_THREADS unset: -j splits the cores).

Each (method, runtime, size) runs in a fresh process: it loads the method, warms it up on a
small image (the one-time load is reported apart, as ``load_s``), then times ``--repeats``
analyses of the image and reports the median and the process's peak RSS. F1 comes from
``forgectl benchmark DATASET -m METHOD --runtime R -j 1`` (mean per-image F1 at the method's
threshold, docs/METRICS.md). The 12 MP image is made here, deterministically (4000 x 3000, a
synthetic scene upscaled, JPEG quality 90), unless ``--big`` names one. Run it on an idle
machine: the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
FORGECTL = [PY, "-m", "forgectl"]

_CHILD = r"""
import json, resource, statistics, sys, time
from pathlib import Path
start = time.perf_counter()
from forgectl import registry
from forgectl.intake import image_from_array, load_image
from forgectl.synth.scenes import natural_image
method, runtime, path, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
backend = registry.load(method, runtime=runtime)
backend.localize(image_from_array(natural_image(96, 128, seed=0)))  # weights, sessions, caches
load_s = time.perf_counter() - start
image = load_image(Path(path), max_pixels=None)
times = []
for _ in range(repeats):
    t = time.perf_counter()
    backend.localize(image)
    times.append(time.perf_counter() - t)
print(json.dumps({"median_s": statistics.median(times), "runs_s": times, "load_s": load_s,
                  "runtime": backend.runtime_label,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def make_big(folder: Path) -> Path:
    """A deterministic 12 MP JPEG (4000 x 3000)."""
    import cv2
    from PIL import Image

    from forgectl.synth.scenes import natural_image

    small = natural_image(750, 1000, seed=7)
    big = cv2.resize(small, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    path = folder / "big12.jpg"
    Image.fromarray(big).save(path, quality=90)
    return path


def time_method(method: str, runtime: str, image: Path, repeats: int) -> dict:
    done = subprocess.run([PY, "-c", _CHILD, method, runtime, str(image), str(repeats)],
                          capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def f1_of(method: str, runtime: str, dataset: Path, work: Path) -> float | None:
    """casia1-dev F1 of one method on one runtime: from ``work/bench-M-R/report.json`` when an
    earlier run (``--only-f1``, which needs no idle machine) left it, else measured now."""
    out = work / f"bench-{method}-{runtime}"
    if (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())["rows"][0]["localization"]["f1"]
    done = subprocess.run([*FORGECTL, "benchmark", str(dataset), "-m", method, "--runtime",
                           runtime, "-j", "1", "--bootstrap", "0", "--no-plots", "--out",
                           str(out)], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        return None
    row = json.loads((out / "report.json").read_text())["rows"][0]
    return row["localization"]["f1"]


def runtimes_of(method: str) -> list[str]:
    """The runtimes a method's rows cover: int8 / onnx / torch for learned methods (int8 where
    the method has it and its int8 twin is shipped) and the fusion (int8 when one of its members
    has a shipped int8 twin), ``auto`` (numpy) for classical ones."""
    from forgectl import registry

    def has_int8(name: str) -> bool:  # the default runtime picks a shipped int8 twin
        return registry.load(name).runtime == "int8"

    kind = registry.get_spec(method).kind
    if kind == "fusion":
        learned = [m for m in registry.available() if registry.get_spec(m).kind == "learned"]
        return (["int8"] if any(has_int8(m) for m in learned) else []) + ["onnx", "torch"]
    if kind == "learned":
        return [r for r in ("int8", "onnx", "torch")
                if r in registry.get_class(method).runtimes and (r != "int8" or has_int8(method))]
    return ["auto"]


def command_wall(args: list[str], repeats: int, cwd: Path, threads: bool = True) -> float:
    """Median wall time of a whole forgectl process (start to exit); ``threads=False`` leaves
    ``FORGECTL_THREADS`` unset (``localize -j N`` then splits the machine itself)."""
    env = dict(os.environ)
    if not threads:
        env.pop("FORGECTL_THREADS", None)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([str(REPO / ".venv" / "bin" / "forgectl"), *args], cwd=cwd,
                       capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from forgectl import registry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--methods", default="all", help="comma-separated, or all")
    ap.add_argument("--casia-image", type=Path,
                    default=REPO.parent / "shared" / "bench" / "casia1-dev" / "images" /
                    "Sp_D_CNN_A_ani0049_ani0084_0266.jpg",
                    help="a CASIA-size image (default: one of casia1-dev; else the example)")
    ap.add_argument("--big", type=Path, help="a 12 MP image (default: made here)")
    ap.add_argument("--dataset", type=Path, default=REPO.parent / "shared" / "bench" /
                    "casia1-dev", help="for the F1 column")
    ap.add_argument("--repeats", type=int, default=3, help="runs per CASIA-size cell")
    ap.add_argument("--big-repeats", type=int, default=3, help="runs per 12 MP cell")
    ap.add_argument("--skip-f1", action="store_true")
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--f1-dir", type=Path, help="where the F1 benchmark runs go (and are "
                    "reused from); default: a new temporary folder")
    ap.add_argument("--only-f1", action="store_true", help="only the F1 runs (into --f1-dir)")
    ap.add_argument("--batch-images", type=int, default=60, help="casia1-dev images for the "
                    "localize -j 1 / -j 2 throughput (0: skip)")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()

    os.environ.setdefault("FORGECTL_THREADS", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    methods = (registry.available() if args.methods == "all"
               else [m.strip() for m in args.methods.split(",") if m.strip()])
    casia = args.casia_image if args.casia_image.is_file() else REPO / "examples" / "splice.jpg"
    work = Path(tempfile.mkdtemp(prefix="forgectl-perf-"))
    f1_dir = args.f1_dir or work
    f1_dir.mkdir(parents=True, exist_ok=True)
    if args.only_f1:
        for method in methods:
            for runtime in runtimes_of(method):
                print(method, runtime, f1_of(method, runtime, args.dataset, f1_dir),
                      file=sys.stderr, flush=True)
        return
    big = args.big or make_big(work)
    rows = []
    for method in methods:
        for runtime in runtimes_of(method):
            row = {"method": method, "runtime": runtime,
                   "casia": time_method(method, runtime, casia, args.repeats),
                   "12mp": time_method(method, runtime, big, args.big_repeats)}
            if not args.skip_f1 and args.dataset.is_dir():
                row["f1"] = f1_of(method, runtime, args.dataset, f1_dir)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    startup = {}
    if not args.skip_startup:
        out = work / "startup-out"
        startup = {
            "forgectl --help": command_wall(["--help"], 5, work),
            "forgectl methods": command_wall(["methods"], 5, work),
            "localize example (auto)": command_wall(
                ["localize", str(REPO / "examples" / "splice.jpg"), "--out", str(out)], 3, work),
            "localize example (omni)": command_wall(
                ["localize", str(REPO / "examples" / "splice.jpg"), "-m", "omni", "--out",
                 str(out)], 3, work),
            "explain CASIA image (auto)": command_wall(
                ["explain", str(casia), "--out", str(work / "explain")], 3, work),
        }
    batch = {}
    if args.batch_images and args.dataset.is_dir():
        images = sorted((args.dataset / "images").glob("*"))[: args.batch_images]
        for jobs in (1, 2):
            seconds = command_wall(["localize", *map(str, images), "-j", str(jobs), "--out",
                                    str(work / f"batch-j{jobs}")], 1, work, threads=False)
            batch[f"-j {jobs}"] = {"images": len(images), "seconds": seconds,
                                   "images_per_s": len(images) / seconds}
        batch["ratio -j 2 / -j 1"] = batch["-j 2"]["images_per_s"] / batch["-j 1"][
            "images_per_s"]
    report = {"casia_image": str(casia), "big_image": str(big), "threads":
              os.environ["FORGECTL_THREADS"], "rows": rows, "startup_s": startup,
              "batch": batch, "cpu_count": os.cpu_count()}
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def _cell(d: dict) -> tuple[str, str]:
    if "error" in d:
        return "error", "-"
    return f"{d['median_s']:.2f}", f"{d['peak_rss_mb']:.0f}"


def markdown(report: dict) -> str:
    lines = ["| method | runtime | CASIA s | CASIA peak MB | 12 MP s | 12 MP peak MB | load s | "
             "casia1-dev F1 |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        cs, cm = _cell(r["casia"])
        bs, bm = _cell(r["12mp"])
        runtime = r["casia"].get("runtime") or "numpy"
        load = r["casia"].get("load_s")
        f1 = r.get("f1")
        lines.append(f"| {r['method']} | {runtime} | {cs} | {cm} | {bs} | {bm} | "
                     f"{'-' if load is None else f'{load:.1f}'} | "
                     f"{'-' if f1 is None else f'{f1:.3f}'} |")
    if report["startup_s"]:
        lines += ["", "| command (process start to exit) | median s |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in report["startup_s"].items()]
    batch = report.get("batch") or {}
    if batch:
        lines += ["", "| localize (auto), casia1-dev images | images | s | images/s |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {v['images']} | {v['seconds']:.1f} | {v['images_per_s']:.2f} |"
                  for k, v in batch.items() if isinstance(v, dict)]
        lines.append(f"\nthroughput ratio -j 2 / -j 1: {batch['ratio -j 2 / -j 1']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
