"""Omni speed study (issue #20): int8 ONNX, tile latency, 12 MP tile sweep, overheads.

Measures a static int8 twin of the ONNX graph, per-tile latency, tile/overlap at 12 MP and
the costs outside the network.

Usage (from the repository root; every figure compares alternatives interleaved in one
process, so on a shared machine read the ratios, not the absolute times)::

    # static int8 (QDQ) twin of weights/omni-tiny.onnx, calibrated on corpus tiles
    .venv/bin/python benchmarks/omni_speed.py quantize --out /tmp/omni-int8/omni-tiny.int8.onnx
    # dynamic int8 for comparison (ConvInteger: slower than fp32 in onnxruntime on CPU)
    .venv/bin/python benchmarks/omni_speed.py quantize --dynamic --out /tmp/omni-int8/dyn.onnx
    # per-tile latency: median of 20 calls per model and size, calls interleaved
    .venv/bin/python benchmarks/omni_speed.py latency \
        --models weights/omni-tiny.onnx,/tmp/omni-int8/omni-tiny.int8.onnx --sizes 384,768
    # |heatmap difference| against the first model through the real backend (tiling, gate)
    .venv/bin/python benchmarks/omni_speed.py diff \
        --models weights/omni-tiny.onnx,/tmp/omni-int8/omni-tiny.int8.onnx
    # analyze seconds at 12 MP for each model x tile x overlap, rounds interleaved
    .venv/bin/python benchmarks/omni_speed.py sweep --image /work/big12.jpg \
        --models weights/omni-tiny.onnx,/tmp/omni-int8/omni-tiny.int8.onnx \
        --tiles 384,512,768,1024 --overlaps 32,64 --rounds 2
    # where the time outside the network goes at 12 MP (dct planes, normalization, blending,
    # Result.from_heatmap), next to the faster forms suggested for issue #20
    .venv/bin/python benchmarks/omni_speed.py profile --image /work/big12.jpg

Accuracy is ``forgectl benchmark`` on the quantized file, e.g.::

    FORGECTL_THREADS=1 .venv/bin/forgectl benchmark /work/shared/bench/casia1-dev -m omni \
        --weights omni=/tmp/omni-int8/omni-tiny.int8.onnx --runtime onnx -j 1 --bootstrap 0 \
        --no-plots --out /tmp/omni-int8/bench

Calibration tiles come from ``/work/shared/corpus`` (never from the benchmark sets), fed as
``OmniBackend._tile_feeds`` builds them (normalized RGB, the file's DCT plane and Y table),
route 0 (RGB + DCT).

Findings (2 cores, AVX512-VNNI, shared machine; onnxruntime 1.31):

- static int8 (``SETTINGS``) per tile: 0.73-0.84 x fp32 time idle (384, 768, 1024 px), 0.60-0.74
  x under load; dynamic int8 4.3-5.0 x *slower* (ConvInteger). Quantizing stage 0 of the RGB
  encoder costs casia1-dev F1 -0.022; kept in float, F1 +0.0065 +- 0.0029 (paired) vs fp32.
  Two pitfalls: ``CalibMaxIntermediateOutputs`` drops data in this onnxruntime (use
  ``CalibStridedMinMax``), and quantizing non-residual Adds (padding arithmetic) yields a
  graph that fails at run time (QLinearConcat shape mismatch).
- 12 MP (4000 x 3000): tile 1024 / overlap 32 plans 12 tiles (12.6 MP processed) against 130
  (19.2 MP) at 384 / 64; about 0.65-0.79 x the time with fp32, 0.51-0.63 x with int8.
- Outside the network, ``BlendAccumulator.result`` + ``Result.from_heatmap`` right after the
  tile loop cost 0.7-1.6 s at 12 MP (about 250 MB of fresh temporaries, first touched as huge
  pages); in place they cost 0.06 s with identical outputs (``profile --network``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from forgectl.backends.omni import OmniBackend
from forgectl.export import INT8_SETTINGS

REPO = Path(__file__).resolve().parent.parent
FP32 = REPO / "weights" / "omni-tiny.onnx"
CORPUS = Path("/work/shared/corpus")

#: The quantization settings the study kept (issue #20), as ``forgectl export --int8`` ships
#: them; ``quantize`` records them in the card.
SETTINGS: dict[str, Any] = {**INT8_SETTINGS, "kept_float": list(OmniBackend.INT8_KEPT_FLOAT)}


# ---------------------------------------------------------------------------------- inputs


def backend(weights: Path = FP32, **options: Any) -> Any:
    from forgectl.backends.omni import OmniBackend

    return OmniBackend(weights=weights, runtime="onnx", **options)


def corpus_jpegs(seed: int, n: int | None = None) -> list[Path]:
    files = sorted(p for p in CORPUS.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
    np.random.default_rng(seed).shuffle(files)
    return files if n is None else files[:n]


def tile_feeds(be: Any, path: Path, size: int, count: int, rng: np.random.Generator,
               route: int) -> list[dict[str, np.ndarray]]:
    """``count`` random ``size`` tiles (on the 8-pixel grid) of one photo, fed exactly as
    ``OmniBackend.analyze`` feeds its tiles (padding, dct plane, qtable, route)."""
    from forgectl.analysis.network_inputs import dct_planes
    from forgectl.intake import load_image
    from forgectl.tiling import Tile, pad_to, round_up

    image = load_image(path)
    clip = int(be.model_config()["frequency"].get("clip", 20))
    idx, qtable, _ = dct_planes(image, clip)
    ph = max(size, round_up(image.height, 32))
    pw = max(size, round_up(image.width, 32))
    rgb, idx = pad_to(image.rgb, ph, pw), pad_to(idx, ph, pw)
    out = []
    for _ in range(count):
        y0 = 8 * int(rng.integers(0, (ph - size) // 8 + 1))
        x0 = 8 * int(rng.integers(0, (pw - size) // 8 + 1))
        out.append(be._tile_feeds(rgb, idx, qtable, Tile(y0, x0, size, size), route))
    return out


def session(path: Path | str, threads: int = 2) -> Any:
    """An onnxruntime session set up as ``OnnxRunner`` sets it up."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------- quantize


def excluded_nodes(model: Any) -> list[str]:
    """Nodes kept in float: the shipped recipe's (``OmniBackend.int8_float_nodes``)."""
    return backend().int8_float_nodes(model)


def stamp_card(quantized: Path, source: Path, note: dict[str, Any]) -> None:
    """Copy the fp32 file's metadata (model card: ``export.method`` is what the backend
    checks) onto the quantized model, with a ``quantization`` entry."""
    import onnx

    ref = onnx.load(str(source), load_external_data=False)
    model = onnx.load(str(quantized))
    del model.metadata_props[:]
    for prop in ref.metadata_props:
        value = prop.value
        if prop.key == "model_card":
            card = json.loads(value)
            card["quantization"] = note
            value = json.dumps(card)
        entry = model.metadata_props.add()
        entry.key, entry.value = prop.key, value
    onnx.save(model, str(quantized))


def CorpusTiles(feeds: list[dict[str, np.ndarray]]) -> Any:  # noqa: N802 (a reader class)
    """Calibration reader over corpus tiles: the one ``forgectl export --int8`` uses."""
    from forgectl.export import CalibrationFeeds

    return CalibrationFeeds(feeds)


def quantize(args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(args.source), str(pre), skip_symbolic_shape=True)
        exclude = excluded_nodes(onnx.load(str(pre)))
        t0 = time.perf_counter()
        if args.dynamic:
            note = {"precision": "int8 dynamic (weights int8, activations quantized at run "
                    "time)", "op_types": ["Conv", "MatMul"], "excluded_nodes": len(exclude)}
            quantize_dynamic(str(pre), str(out), op_types_to_quantize=["Conv", "MatMul"],
                             per_channel=True, weight_type=QuantType.QInt8,
                             nodes_to_exclude=exclude)
        else:
            be = backend(args.source)
            rng = np.random.default_rng(1)
            feeds = []
            for path in corpus_jpegs(seed=1234, n=args.images):
                feeds += tile_feeds(be, path, args.size, args.per_image, rng, route=0)
            feeds = feeds[: len(feeds) // 8 * 8]
            note = {"precision": "int8 (static, QDQ)", **SETTINGS,
                    "calibration_data": f"{len(feeds)} tiles of {args.size} px from "
                    f"{args.images} corpus JPEGs (seed 1234), route 0 (RGB + DCT)",
                    "excluded_nodes": len(exclude),
                    "made_by": "benchmarks/omni_speed.py quantize"}
            quantize_static(
                str(pre), str(out), CorpusTiles(feeds), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv", "MatMul", "Add"], per_channel=True,
                reduce_range=False, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                calibrate_method=CalibrationMethod.Percentile,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                               "CalibStridedMinMax": 8, "CalibTensorRangeSymmetric": False,
                               "CalibPercentile": 99.999},
            )
    stamp_card(out, Path(args.source), note)
    return {"out": str(out), "bytes": out.stat().st_size, "seconds": round(
        time.perf_counter() - t0, 1), "excluded_nodes": len(exclude)}


# ---------------------------------------------------------------------------------- latency


def latency(args: argparse.Namespace) -> dict[str, Any]:
    models = args.models.split(",")
    sessions = {m: session(m, args.threads) for m in models}
    be = backend()
    big = [p for p in corpus_jpegs(0) if "dresden" in str(p)][0]  # 3000 x 2000 and up
    out: dict[str, Any] = {"load_average": [round(v, 2) for v in os.getloadavg()]}
    for size in (int(s) for s in args.sizes.split(",")):
        feeds = tile_feeds(be, big, size, 1, np.random.default_rng(0), route=0)[0]
        for s in sessions.values():  # warm-up: allocator, first-shape kernels
            s.run(None, feeds)
            s.run(None, feeds)
        times: dict[str, list[float]] = {m: [] for m in models}
        for _ in range(args.repeats):
            for m in models:
                t0 = time.perf_counter()
                sessions[m].run(None, feeds)
                times[m].append(time.perf_counter() - t0)
        base = statistics.median(times[models[0]])
        out[str(size)] = {m: {"median_ms": round(1000 * statistics.median(t), 1),
                              "ratio": round(statistics.median(t) / base, 3)}
                          for m, t in times.items()}
    out["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    return out


# ---------------------------------------------------------------------------------- diff


def diff(args: argparse.Namespace) -> dict[str, Any]:
    """Heatmaps of each model against the first, through ``backend.localize``."""
    from forgectl.intake import load_image

    models = args.models.split(",")
    backends = {m: backend(Path(m)) for m in models}
    rows = []
    for path in corpus_jpegs(seed=99, n=args.images):
        image = load_image(path)
        ref = backends[models[0]].localize(image)
        row: dict[str, Any] = {"image": str(path.relative_to(CORPUS)),
                               "size": f"{image.width}x{image.height}",
                               "modality": ref.facts.get("modality")}
        for m in models[1:]:
            res = backends[m].localize(image)
            d = np.abs(res.heatmap - ref.heatmap)
            row[Path(m).name] = {"max": round(float(d.max()), 4),
                                 "mean": round(float(d.mean()), 5),
                                 "p99": round(float(np.percentile(d, 99)), 4),
                                 "mask_flips": round(float((res.mask != ref.mask).mean()), 5),
                                 "score_diff": round(res.score - ref.score, 4)}
        rows.append(row)
    return {"reference": models[0], "rows": rows}


# ---------------------------------------------------------------------------------- sweep


def timed(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
          acc: list[float]) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    def wrapper(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = run(feeds)
        acc.append(time.perf_counter() - t0)
        return out

    return wrapper


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    """``backend.localize`` on one large image for every model x tile x overlap, all
    configurations once per round (interleaved), one session per model shared by its
    configurations."""
    from forgectl.intake import load_image

    image = load_image(args.image)
    models = args.models.split(",")
    runners = {m: backend(Path(m)).onnx_runner() for m in models}
    pairs = ([tuple(int(v) for v in pair.split(":")) for pair in args.configs.split(",")]
             if args.configs else [(int(t), int(o)) for t in args.tiles.split(",")
                                   for o in args.overlaps.split(",")])
    configs = [(m, t, o) for t, o in pairs for m in models]
    backends = {}
    for m, t, o in configs:
        be = backend(Path(m), tile=t, overlap=o)
        be._onnx = runners[m]  # share the session (the backend caches its runner here)
        backends[(m, t, o)] = be
    results: dict[tuple[str, int, int], dict[str, Any]] = {
        c: {"total_s": [], "network_s": [], "cpu_s": [], "calls": 0} for c in configs}
    if args.warmup:  # allocator and kernels for each tile shape
        for c in configs:
            backends[c].localize(image)
    for _ in range(args.rounds):
        for c in configs:
            net: list[float] = []
            be = backends[c]
            with be.running(timed(runners[c[0]], net)):
                t0, c0 = time.perf_counter(), time.process_time()
                res = be.localize(image)
                total, cpu = time.perf_counter() - t0, time.process_time() - c0
            r = results[c]
            r["total_s"].append(round(total, 2))
            r["cpu_s"].append(round(cpu, 2))
            r["network_s"].append(round(sum(net), 2))
            r["calls"] = len(net)
            r["tiles"] = res.facts["tiles"]
            r["modality"] = res.facts["modality"]
            print(json.dumps({"model": Path(c[0]).name, "tile": c[1], "overlap": c[2],
                              "total_s": round(total, 2), "cpu_s": round(cpu, 2),
                              "network_s": round(sum(net), 2),
                              "calls": len(net)}), file=sys.stderr, flush=True)
    ref = results.get((models[0], 384, 64))
    base = statistics.median(ref["total_s"]) if ref else None
    base_cpu = statistics.median(ref["cpu_s"]) if ref else None
    rows = []
    for (m, t, o), r in results.items():
        med = statistics.median(r["total_s"])
        rows.append({"model": Path(m).name, "tile": t, "overlap": o, "tiles": r["tiles"],
                     "network_calls": r["calls"], "modality": r["modality"],
                     "median_s": round(med, 2),
                     "median_network_s": round(statistics.median(r["network_s"]), 2),
                     "ratio_to_fp32_384_64": round(med / base, 3) if base else None,
                     "median_cpu_s": round(statistics.median(r["cpu_s"]), 2),
                     "cpu_ratio_to_fp32_384_64": round(statistics.median(r["cpu_s"]) / base_cpu,
                                                       3) if base_cpu else None,
                     "runs_s": r["total_s"], "runs_cpu_s": r["cpu_s"]})
    return {"image": str(args.image), "size": f"{image.width}x{image.height}",
            "load_average": [round(v, 2) for v in os.getloadavg()], "rows": rows}


# ---------------------------------------------------------------------------------- profile


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def in_situ(args: argparse.Namespace, image: Any) -> dict[str, Any]:
    """``backend.localize`` with a stub network (zeros, no cost; or with ``--network MODEL``
    the real one, timed): the seconds outside the network, timed per step by wrapping the
    functions ``analyze`` calls."""
    import forgectl.backends.omni as omni_module
    import forgectl.tiling as tiling
    from forgectl.backends.base import Result

    be = backend(tile=args.tile, overlap=args.overlap)
    spent: dict[str, float] = {}

    def clock(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    def stub(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h, w = feeds["image"].shape[-2:]
        return {"mask": np.zeros((1, 1, h, w), np.float32), "gate": np.zeros(1, np.float32),
                "use_rgb": np.zeros(1, bool)}

    if args.network:
        stub = clock("network", backend(Path(args.network)).onnx_runner())

    saved = (omni_module.dct_planes, omni_module.normalize_rgb, tiling.pad_to,
             tiling.BlendAccumulator.add, tiling.BlendAccumulator.result,
             Result.__dict__["from_heatmap"])
    omni_module.dct_planes = clock("dct_planes", saved[0])
    omni_module.normalize_rgb = clock("normalize_rgb (per tile)", saved[1])
    tiling.pad_to = clock("pad_to (rgb, dct)", saved[2])
    tiling.BlendAccumulator.add = clock("BlendAccumulator.add", saved[3])
    tiling.BlendAccumulator.result = clock("BlendAccumulator.result", saved[4])
    Result.from_heatmap = classmethod(clock("Result.from_heatmap", saved[5].__func__))
    runs = []
    try:
        with be.running(stub):
            be.localize(image)  # warm-up
            for _ in range(args.repeats):
                spent.clear()
                t0 = time.perf_counter()
                be.localize(image)
                total = time.perf_counter() - t0
                runs.append({"total_s": total, **spent})
    finally:
        (omni_module.dct_planes, omni_module.normalize_rgb, tiling.pad_to,
         tiling.BlendAccumulator.add, tiling.BlendAccumulator.result) = saved[:5]
        Result.from_heatmap = saved[5]
    keys = list(runs[0])
    med = {k: round(statistics.median(r[k] for r in runs), 3) for k in keys}
    med["other (tile slicing, runner call, localize checks)"] = round(
        med["total_s"] - sum(v for k, v in med.items() if k != "total_s"), 3)
    return med


def finish_after_network(args: argparse.Namespace, image: Any) -> dict[str, Any]:
    """``acc.result()`` + ``Result.from_heatmap`` right after the network ran on every tile
    (as in ``analyze``: the big fresh arrays are first touched then, as transparent huge pages
    since numpy madvises them), next to the in-place form suggested for issue #20."""
    from forgectl.analysis.network_inputs import dct_planes
    from forgectl.backends.base import Result
    from forgectl.tiling import BlendAccumulator, pad_to

    be = backend(Path(args.network), tile=args.tile, overlap=args.overlap)
    run = be.tile_runner()
    idx, qtable, _ = dct_planes(image, int(be.model_config()["frequency"].get("clip", 20)))
    plan = be.plan(image.height, image.width)
    rgb = pad_to(image.rgb, plan.padded_height, plan.padded_width)
    idx = pad_to(idx, plan.padded_height, plan.padded_width)

    def network() -> Any:
        acc = BlendAccumulator(plan)
        for tile in plan.tiles:
            out = run(be._tile_feeds(rgb, idx, qtable, tile, 0))
            acc.add(tile, np.asarray(out["mask"][0, 0], np.float32))
        return acc

    def now(acc: Any) -> tuple[np.ndarray, np.ndarray, float]:
        res = Result.from_heatmap(acc.result(), 0.5)
        return res.heatmap, res.mask, res.score

    def suggested(acc: Any) -> tuple[np.ndarray, np.ndarray, float]:
        # BlendAccumulator.result in place (the accumulator is done), then from_heatmap in place
        np.maximum(acc.weight, 1e-12, out=acc.weight)
        np.divide(acc.total, acc.weight, out=acc.total)
        h = acc.total[: plan.height, : plan.width]
        np.nan_to_num(h, copy=False)
        np.clip(h, 0.0, 1.0, out=h)
        flat = np.ascontiguousarray(h).reshape(-1)
        k = 0.99 * (flat.size - 1)  # np.percentile's linear interpolation, one partition
        lo, hi = int(np.floor(k)), min(int(np.floor(k)) + 1, flat.size - 1)
        part = np.partition(flat, (lo, hi))
        return h, h >= 0.5, float(part[lo] + (k - lo) * (part[hi] - part[lo]))

    times: dict[str, list[float]] = {"now_s": [], "suggested_s": []}
    outs = {}
    for _ in range(args.repeats):
        for key, fn in (("now_s", now), ("suggested_s", suggested)):
            acc = network()
            t0 = time.perf_counter()
            outs[key] = fn(acc)
            times[key].append(time.perf_counter() - t0)
    a, b = outs["now_s"], outs["suggested_s"]
    return {**{k: round(statistics.median(v), 3) for k, v in times.items()},
            "runs": {k: [round(x, 3) for x in v] for k, v in times.items()},
            "equal": bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
                          and abs(a[2] - b[2]) < 1e-7)}


def profile(args: argparse.Namespace) -> dict[str, Any]:
    """Non-network cost of ``OmniBackend.analyze`` on a large image: in place (stub network,
    :func:`in_situ`), then each step alone next to the faster form suggested for issue #20
    (best of ``--repeats``; the suggested forms are checked to give the same values)."""
    from forgectl.analysis.network_inputs import dct_planes, normalize_rgb
    from forgectl.backends.base import Result
    from forgectl.intake import load_image
    from forgectl.tiling import BlendAccumulator, pad_to

    r = args.repeats
    t0 = time.perf_counter()
    image = load_image(args.image)
    out: dict[str, Any] = {"tile": args.tile, "overlap": args.overlap,
                           "load_image_s": round(time.perf_counter() - t0, 3)}
    out["in_situ_median_s"] = in_situ(args, image)
    if args.network:
        out["result_and_from_heatmap_after_network"] = finish_after_network(args, image)
    be = backend(tile=args.tile, overlap=args.overlap)
    mean, std = be.normalization()
    clip = int(be.model_config()["frequency"].get("clip", 20))
    parts: dict[str, Any] = {}
    t, (idx, qtable, _) = _best(lambda: dct_planes(image, clip), r)
    coef = image.jpeg.y_coefficients(image.height, image.width)

    def dct_suggested() -> np.ndarray:
        return np.minimum(np.abs(coef), clip).astype(np.uint8)  # int32 throughout

    t2, idx2 = _best(dct_suggested, r)
    parts["dct_planes"] = {"now_s": round(t, 3), "suggested_s": round(t2, 3),
                           "equal": bool(np.array_equal(idx, idx2))}
    plan = be.plan(image.height, image.width)
    rgb = pad_to(image.rgb, plan.padded_height, plan.padded_width)
    idx = pad_to(idx, plan.padded_height, plan.padded_width)
    wins = [rgb[t.y0:t.y0 + t.height, t.x0:t.x0 + t.width] for t in plan.tiles]
    # normalize_rgb's own float32 arithmetic on the 256 grey levels: a bit-exact table.
    lut = ((np.arange(256, dtype=np.float32) / 255.0 - np.asarray(mean, np.float32)[:, None])
           / np.asarray(std, np.float32)[:, None])  # (3, 256)

    def norm_suggested(win: np.ndarray) -> np.ndarray:
        x = np.empty((1, 3, *win.shape[:2]), np.float32)  # the network's layout, one pass
        for c in range(3):
            np.take(lut[c], win[..., c], out=x[0, c])
        return x

    t, _ = _best(lambda: [np.ascontiguousarray(normalize_rgb(w, mean, std)[None])
                          for w in wins], r)
    t2, _ = _best(lambda: [norm_suggested(w) for w in wins], r)
    diff = float(np.abs(norm_suggested(wins[0])[0] - normalize_rgb(wins[0], mean, std)).max())
    parts["normalize_rgb_all_tiles"] = {"now_s": round(t, 3), "suggested_s": round(t2, 3),
                                        "max_abs_diff": diff, "tiles": len(wins)}
    heat = np.random.default_rng(0).random((args.tile, args.tile), dtype=np.float32)

    def blend() -> np.ndarray:
        acc = BlendAccumulator(plan)
        for tile in plan.tiles:
            acc.add(tile, heat)
        return acc.result()

    t, blended = _best(blend, r)
    parts["blend_add_and_result"] = {"now_s": round(t, 3)}
    hm = np.ascontiguousarray(blended, np.float32)
    t, res = _best(lambda: Result.from_heatmap(hm, 0.5), r)

    def from_heatmap_suggested() -> tuple[np.ndarray, np.ndarray, float]:
        h = np.nan_to_num(hm, copy=True)  # the one copy; then in place
        np.clip(h, 0.0, 1.0, out=h)
        flat = h.reshape(-1)
        k = 0.99 * (flat.size - 1)  # np.percentile's linear interpolation, by one partition
        lo, hi = int(np.floor(k)), min(int(np.floor(k)) + 1, flat.size - 1)
        part = np.partition(flat, (lo, hi))
        return h, h >= 0.5, float(part[lo] + (k - lo) * (part[hi] - part[lo]))

    t2, (h2, m2, score2) = _best(from_heatmap_suggested, r)
    parts["Result.from_heatmap"] = {
        "now_s": round(t, 3), "suggested_s": round(t2, 3),
        "equal": bool(np.array_equal(h2, res.heatmap) and np.array_equal(m2, res.mask)
                      and abs(score2 - res.score) < 1e-7),
        "now_parts_s": {
            "nan_to_num": round(_best(lambda: np.nan_to_num(hm), r)[0], 3),
            "clip": round(_best(lambda: np.clip(hm, 0.0, 1.0), r)[0], 3),
            "percentile_99": round(_best(lambda: np.percentile(hm, 99), r)[0], 3),
            "threshold": round(_best(lambda: hm >= 0.5, r)[0], 3)}}
    out["steps_alone_best_s"] = parts
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    q = sub.add_parser("quantize", help="static (or --dynamic) int8 twin of the fp32 graph")
    q.add_argument("--source", type=Path, default=FP32)
    q.add_argument("--out", type=Path, default=Path("/tmp/omni-int8/omni-tiny.int8.onnx"))
    q.add_argument("--images", type=int, default=48, help="corpus JPEGs for calibration")
    q.add_argument("--per-image", type=int, default=2, help="random tiles per image")
    q.add_argument("--size", type=int, default=384, help="calibration tile size")
    q.add_argument("--dynamic", action="store_true", help="quantize_dynamic instead")
    lat = sub.add_parser("latency", help="per-tile latency, models interleaved")
    lat.add_argument("--models", default=str(FP32))
    lat.add_argument("--sizes", default="384,768")
    lat.add_argument("--repeats", type=int, default=20)
    lat.add_argument("--threads", type=int, default=2)
    d = sub.add_parser("diff", help="heatmap differences against the first model")
    d.add_argument("--models", required=True)
    d.add_argument("--images", type=int, default=6)
    s = sub.add_parser("sweep", help="large image: model x tile x overlap")
    s.add_argument("--image", type=Path, default=Path("/work/big12.jpg"))
    s.add_argument("--models", default=str(FP32))
    s.add_argument("--tiles", default="384,512,768,1024")
    s.add_argument("--overlaps", default="32,64")
    s.add_argument("--configs", default=None, help="TILE:OVERLAP pairs instead of the grid, "
                   "e.g. 384:64,1024:32")
    s.add_argument("--rounds", type=int, default=2)
    s.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True)
    p = sub.add_parser("profile", help="non-network costs of analyze at 12 MP")
    p.add_argument("--image", type=Path, default=Path("/work/big12.jpg"))
    p.add_argument("--tile", type=int, default=384)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--network", default=None, help="time the steps around this ONNX model "
                   "instead of a zero-cost stub")
    args = ap.parse_args()
    fn = {"quantize": quantize, "latency": latency, "diff": diff, "sweep": sweep,
          "profile": profile}[args.what]
    print(json.dumps(fn(args), indent=1))


if __name__ == "__main__":
    main()
