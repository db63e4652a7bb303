"""Run methods over a dataset (optionally perturbed) and summarize the metrics.

:func:`evaluate_backend` evaluates one backend on one setting and returns a JSON-ready summary
(the trainer uses it for dev-set validation); :func:`run_benchmark` runs several methods over
several settings for ``forgectl benchmark``. Definitions of every figure: ``docs/METRICS.md``.

Per image, the fixed-threshold metrics use the backend's own ``result.mask`` (exactly the mask
``forgectl localize`` writes), while the threshold sweeps (best dataset threshold, oracle) use
the heatmap. A bad item (unreadable image or mask, size mismatch, a method error) becomes an
``error`` record: counted, listed, left out of the metrics, never fatal to the run.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from forgectl import __version__
from forgectl import metrics as M
from forgectl.backends.base import Backend
from forgectl.errors import CANNOT_RUN, ForgectlError, InputError
from forgectl.evaluation.datasets import Dataset, Item, file_list_sha256, load_mask
from forgectl.evaluation.perturb import Perturbation
from forgectl.intake import jpeg_reader, load_image

ProgressFn = Callable[[int], None]
#: (peak RSS in MB, how it was measured, RSS in MB when the run began or None).
MemoryInfo = tuple[float, str, float | None]


# --------------------------------------------------------------------------- memory


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMemory:
    """Peak resident set size (RSS) of this process from :meth:`start` on.

    On Linux the kernel's high-water mark is reset first (``/proc/self/clear_refs`` <- ``5``)
    and read back as ``VmHWM``, so the peak belongs to this span only. Elsewhere (or when the
    reset is refused) it falls back to ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the
    process's lifetime peak, and says so in :attr:`source`.
    """

    def __init__(self) -> None:
        self.source = "getrusage-lifetime"
        self.start_mb: float | None = None

    def start(self) -> PeakMemory:
        rss = _proc_status_kb("VmRSS")
        #: Resident memory when the span began (MB), or None where /proc is unavailable.
        self.start_mb = rss / 1024.0 if rss is not None else None
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            if _proc_status_kb("VmHWM") is not None:
                self.source = "vmhwm-reset"
        except OSError:
            self.source = "getrusage-lifetime"
        return self

    def peak_mb(self) -> float | None:
        """The peak in MB; None where neither source exists (Windows has no ``resource``)."""
        if self.source == "vmhwm-reset":
            kb = _proc_status_kb("VmHWM")
            if kb is not None:
                return kb / 1024.0
        try:
            import resource
        except ImportError:
            self.source = "unavailable"
            return None
        # ru_maxrss is in kilobytes on Linux, bytes on macOS.
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0


# --------------------------------------------------------------------------- one item


def _empty_record(item: Item) -> dict[str, Any]:
    return {
        "key": item.key,
        "label": item.label,
        "manipulation": item.manipulation,
        "status": "error",
        "error": None,
        "note": "",
        "width": None,
        "height": None,
        "score": None,
        "seconds": None,
        "flagged_fraction": None,
        "f1": None,
        "iou": None,
        "precision": None,
        "recall": None,
        "pixel_auc": None,
        "gt_fraction": None,
        "tp": None,
        "fp": None,
        "fn": None,
    }


def analyze_item(
    backend: Backend,
    item: Item,
    perturbation: Perturbation | None = None,
    thresholds: np.ndarray = M.THRESHOLDS,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run ``backend`` on one dataset item and score it.

    Returns:
        ``(record, curve)``. ``record`` is JSON-ready (status ``ok``, ``not_applicable`` or
        ``error`` with the reason). ``curve`` is (T, 3) TP/FP/FN per threshold for a tampered
        image, (T,) flagged-pixel fraction per threshold for an authentic one, None on error.
    """
    rec = _empty_record(item)
    if item.problem:
        rec["error"] = item.problem
        return rec, None
    stage = "reading the image"
    try:
        image = load_image(item.image)
        rec["width"], rec["height"] = image.width, image.height
        gt = None
        if item.tampered:
            stage = "reading the mask"
            assert item.mask is not None
            gt = load_mask(item.mask, (image.height, image.width))
            if not gt.any():
                raise InputError(f"mask {item.mask.name} marks no pixel as tampered")
        if perturbation is not None:
            stage = f"applying {perturbation.label}"
            image, gt = perturbation.apply(image, gt)
            rec["width"], rec["height"] = image.width, image.height  # the size analysed
        stage = f"running {backend.spec.name}"
        t0 = time.perf_counter()
        result = backend.localize(image)
        seconds = time.perf_counter() - t0
    except CANNOT_RUN:
        raise  # the method cannot run at all: a report of N identical errors says less
    except ForgectlError as exc:
        rec["error"] = str(exc)
        return rec, None
    except Exception as exc:  # a failure on one item must not end the benchmark; it is listed
        rec["error"] = f"{stage} failed: {type(exc).__name__}: {exc}"
        return rec, None

    # The --restore pre-stage's decision (forgectl.restore.RestoringBackend), when there is one.
    stage = getattr(backend, "restore_stage_record", None)
    if stage is not None:
        rec["restored"] = stage["fired"]
        rec["method_saw_restored"] = stage["method_saw_restored"]
    rec["status"] = "ok" if result.applicable else "not_applicable"
    rec["note"] = result.note
    rec["score"] = result.score
    rec["seconds"] = seconds
    rec["flagged_fraction"] = result.tampered_fraction
    curve: np.ndarray
    if gt is not None:
        tp, fp, fn = M.mask_counts(result.mask, gt)
        rec.update(M.scores_from_counts(tp, fp, fn))
        rec.update(tp=tp, fp=fp, fn=fn, gt_fraction=float(gt.mean()))
        rec["pixel_auc"] = M.pixel_auc(result.heatmap, gt)
        curve = M.threshold_counts(result.heatmap, gt, thresholds)
    else:
        hm = np.sort(result.heatmap.ravel())
        t = np.asarray(thresholds, dtype=np.float32)
        curve = (hm.size - np.searchsorted(hm, t, side="left")) / max(1, hm.size)
    return rec, curve


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _backend_recipe(backend: Backend) -> tuple[str, dict[str, Any], Any]:
    """Registry name, constructor arguments and ``--restore`` stage (or None) that rebuild
    ``backend`` in another process."""
    kwargs: dict[str, Any] = dict(backend.options)
    kwargs["threshold"] = backend.threshold
    if backend.weights_path is not None:
        kwargs["weights"] = str(backend.weights_path)
    return backend.spec.name, kwargs, getattr(backend, "restore_stage", None)


def _init_worker(
    name: str,
    kwargs: dict[str, Any],
    stage: Any,
    warm_item: Item,
    perturbation: Perturbation | None,
    thresholds: np.ndarray,
) -> None:
    from forgectl import registry

    try:
        _WORKER["backend"] = registry.load(name, **kwargs)
        if stage is not None:
            _WORKER["backend"] = stage.wrap(_WORKER["backend"])
        _WORKER["memory"] = PeakMemory().start()
        # One untimed pass so lazy imports and first-call set-up are not counted as speed.
        analyze_item(_WORKER["backend"], warm_item, perturbation, thresholds)
    except ForgectlError as exc:
        # Raised from the first task instead: an initializer's exception only breaks the pool
        # (a traceback on stderr, BrokenProcessPool here); a task's reaches the parent intact.
        _WORKER["failure"] = exc


def _worker_task(
    index: int, item: Item, perturbation: Perturbation | None, thresholds: np.ndarray
) -> tuple[int, dict[str, Any], np.ndarray | None, MemoryInfo, float, float]:
    if "failure" in _WORKER:
        raise _WORKER["failure"]
    start = time.monotonic()
    rec, curve = analyze_item(_WORKER["backend"], item, perturbation, thresholds)
    end = time.monotonic()
    memory: PeakMemory = _WORKER["memory"]
    return index, rec, curve, (memory.peak_mb(), memory.source, memory.start_mb), start, end


def _run_items(
    backend: Backend,
    items: Sequence[Item],
    perturbation: Perturbation | None,
    workers: int,
    thresholds: np.ndarray,
    progress: ProgressFn | None,
) -> tuple[list[dict[str, Any]], list[np.ndarray | None], float, MemoryInfo]:
    """Analyse every item, results in item order.

    Returns:
        records, curves, wall seconds (first item start to last item end, after an untimed
        warm-up pass on the first item) and :data:`MemoryInfo`.
    """
    records: list[dict[str, Any] | None] = [None] * len(items)
    curves: list[np.ndarray | None] = [None] * len(items)
    if not items:
        return [], [], 0.0, (0.0, "none", None)
    if workers <= 1 or len(items) <= 1:
        memory = PeakMemory().start()
        analyze_item(backend, items[0], perturbation, thresholds)  # untimed warm-up
        start = time.monotonic()
        for i, item in enumerate(items):
            records[i], curves[i] = analyze_item(backend, item, perturbation, thresholds)
            if progress is not None:
                progress(1)
        wall = time.monotonic() - start
        mem = (memory.peak_mb(), memory.source, memory.start_mb)
        return [r for r in records if r is not None], curves, wall, mem

    import multiprocessing

    name, kwargs, stage = _backend_recipe(backend)
    # "spawn": a fresh interpreter per worker, safe with libraries that start threads (torch).
    context = multiprocessing.get_context("spawn")
    peak: float | None = None
    source, start_mb = "none", None
    first, last = float("inf"), float("-inf")
    try:
        with ProcessPoolExecutor(
            max_workers=min(workers, len(items)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(name, kwargs, stage, items[0], perturbation, thresholds),
        ) as pool:
            futures = [
                pool.submit(_worker_task, i, item, perturbation, thresholds)
                for i, item in enumerate(items)
            ]
            for fut in as_completed(futures):
                i, rec, curve, (mb, source, mb0), t0, t1 = fut.result()
                records[i], curves[i] = rec, curve
                first, last = min(first, t0), max(last, t1)
                if mb is not None:
                    peak = mb if peak is None else max(peak, mb)
                if mb0 is not None:
                    start_mb = max(start_mb or 0.0, mb0)
                if progress is not None:
                    progress(1)
    except ForgectlError:
        raise
    except Exception as exc:  # a worker that cannot start (weights, imports) stops the run
        raise ForgectlError(f"a {name} worker process failed: {type(exc).__name__}: {exc}") from exc
    return [r for r in records if r is not None], curves, last - first, (peak, source, start_mb)


# --------------------------------------------------------------------------- summary


def _ci(value_ci: tuple[float, float] | None) -> list[float] | None:
    return [round(value_ci[0], 6), round(value_ci[1], 6)] if value_ci else None


def _r(v: float | None, nd: int = 6) -> float | None:
    return None if v is None else round(float(v), nd)


def summarize(
    records: list[dict[str, Any]],
    curves: list[np.ndarray | None],
    *,
    thresholds: np.ndarray = M.THRESHOLDS,
    score_threshold: float = 0.5,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Dataset-level figures from per-item records and curves (see docs/METRICS.md).

    Localization figures are means over tampered images evaluated without error; detection
    figures use every evaluated image; authentic figures use authentic images only. A method
    that is not applicable to an image counts as flagging nothing there (score 0).
    """
    ok = [i for i, r in enumerate(records) if r["status"] != "error"]
    tam = [i for i in ok if records[i]["label"] == "tampered"]
    aut = [i for i in ok if records[i]["label"] == "authentic"]
    boot = {"n_resamples": n_boot, "confidence": confidence, "seed": seed}

    def col(idx: list[int], key: str) -> np.ndarray:
        return np.array([records[i][key] for i in idx], dtype=np.float64)

    loc: dict[str, Any] = {"n": len(tam)}
    for key in ("f1", "iou", "precision", "recall"):
        loc[key] = _r(col(tam, key).mean()) if tam else None
    for key in ("f1", "iou"):
        loc[f"{key}_ci"] = _ci(M.bootstrap_ci(col(tam, key), **boot)) if tam else None
    aucs = [records[i]["pixel_auc"] for i in tam if records[i]["pixel_auc"] is not None]
    loc["pixel_auc"] = _r(M.mean_or_none(aucs))
    loc["pixel_auc_n"] = len(aucs)
    loc["pixel_auc_ci"] = _ci(M.bootstrap_ci(np.array(aucs), **boot)) if aucs else None
    counts = np.stack([curves[i] for i in tam]) if tam else np.zeros((0, len(thresholds), 3))
    best = M.best_threshold_f1(counts, thresholds)
    loc["best_threshold"] = _r(best[0], 3) if best else None
    loc["best_threshold_f1"] = _r(best[1]) if best else None
    loc["oracle_f1"] = _r(M.oracle_f1(counts))
    # Pooled: pixels summed over all images first, so large images weigh more. Shown for
    # comparison with papers that report it, never as the headline.
    pooled = [sum(int(records[i][k]) for i in tam) for k in ("tp", "fp", "fn")]
    loc["f1_pooled"] = _r(M.scores_from_counts(*pooled)["f1"]) if tam else None
    # Reference: the F1 of flagging every pixel, 2g / (1 + g) for a tampered fraction g. A
    # method's F1 is only informative above it (large masks make it high).
    g = col(tam, "gt_fraction")
    loc["f1_flag_everything"] = _r(np.mean(2 * g / (1 + g))) if tam else None
    by_type: dict[str, list[int]] = {}
    for i in tam:
        by_type.setdefault(records[i]["manipulation"] or "unspecified", []).append(i)
    loc["by_type"] = {
        t: {"n": len(idx), "f1": _r(col(idx, "f1").mean()), "iou": _r(col(idx, "iou").mean())}
        for t, idx in sorted(by_type.items())
    }
    f1_curve = M.f1_from_counts(counts).mean(axis=0) if tam else None
    # Authentic images' mean flagged fraction at every threshold: with the F1 curve it lets a
    # threshold be chosen under a false-alarm bound (metrics.best_threshold_bounded).
    fpr_curve = np.mean([curves[i] for i in aut], axis=0) if aut else None

    det: dict[str, Any] = {
        "n_tampered": len(tam),
        "n_authentic": len(aut),
        "score_threshold": score_threshold,
    }
    scores = col(ok, "score")
    labels = np.array([records[i]["label"] == "tampered" for i in ok], dtype=bool)
    det["image_auc"] = _r(M.image_auc(scores, labels)) if ok else None
    det["balanced_accuracy"] = (
        _r(M.balanced_accuracy(scores, labels, score_threshold)) if ok else None
    )
    # Scores read as probabilities: how far they are from the observed rates (docs/METRICS.md).
    det["ece"] = _r(M.expected_calibration_error(scores, labels)) if ok else None
    det["calibration"] = [{k: _r(v) if isinstance(v, float) else v for k, v in p.items()}
                          for p in M.calibration_bins(scores, labels)] if ok else []
    both = bool(tam) and bool(aut)
    det["image_auc_ci"] = (
        _ci(M.bootstrap_ci((scores, labels), M.image_auc, strata=labels, **boot)) if both else None
    )
    det["balanced_accuracy_ci"] = (
        _ci(
            M.bootstrap_ci(
                (scores, labels),
                lambda s, y: M.balanced_accuracy(s, y, score_threshold),
                strata=labels,
                **boot,
            )
        )
        if both
        else None
    )

    auth: dict[str, Any] = {"n": len(aut)}
    fpr = col(aut, "flagged_fraction")
    auth["fpr"] = _r(fpr.mean()) if aut else None
    auth["fpr_ci"] = _ci(M.bootstrap_ci(fpr, **boot)) if aut else None
    auth["images_with_flagged_pixels"] = _r(np.mean(fpr > 0)) if aut else None
    if aut and best:
        k = int(np.argmin(np.abs(np.asarray(thresholds) - best[0])))
        auth["fpr_at_best_threshold"] = _r(np.mean([curves[i][k] for i in aut]))
    else:
        auth["fpr_at_best_threshold"] = None

    errors = [{"key": r["key"], "error": r["error"]} for r in records if r["status"] == "error"]
    return {
        "counts": {
            "items": len(records),
            "tampered": sum(r["label"] == "tampered" for r in records),
            "authentic": sum(r["label"] == "authentic" for r in records),
            "evaluated": len(ok),
            "errors": len(errors),
            "not_applicable": sum(r["status"] == "not_applicable" for r in records),
        },
        "localization": loc,
        "detection": det,
        "authentic": auth,
        "f1_by_threshold": {
            "thresholds": [round(float(t), 3) for t in thresholds],
            "f1": [round(float(v), 6) for v in f1_curve] if f1_curve is not None else None,
            "authentic_fpr": (
                [round(float(v), 6) for v in fpr_curve] if fpr_curve is not None else None
            ),
        },
        "bootstrap": {"method": "percentile", **boot},
        "errors": errors,
    }


# --------------------------------------------------------------------------- runs


def evaluate_backend(
    backend: Backend,
    dataset: Dataset,
    limit: int | None = None,
    perturbation: Perturbation | None = None,
    workers: int = 1,
    *,
    seed: int = 0,
    score_threshold: float = 0.5,
    n_boot: int = 1000,
    thresholds: np.ndarray = M.THRESHOLDS,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate one backend on a dataset (one setting) and summarize.

    Args:
        backend: a loaded backend; its ``threshold`` makes the masks of the fixed-threshold
            metrics. With ``workers > 1`` each worker process rebuilds it from the registry
            (name, options, threshold, weights file).
        dataset: from :func:`forgectl.evaluation.datasets.load_dataset`.
        limit: evaluate a deterministic stratified sample of this many items (``seed``).
        perturbation: applied to every image (and mask) before the method, or None.
        workers: parallel processes (1 = in this process).
        score_threshold: image score at or above which an image counts as detected.
        n_boot: bootstrap resamples of the confidence intervals (``seed`` seeds them too).

    Returns:
        JSON-ready summary: ``method``, ``setting``, ``threshold``, ``counts``,
        ``localization`` (f1, iou, precision, recall, pixel_auc, best_threshold(_f1),
        oracle_f1, f1_pooled, by_type, *_ci), ``detection`` (image_auc, balanced_accuracy),
        ``authentic`` (fpr), ``f1_by_threshold``, ``speed``, ``errors``, ``items``.
    """
    items = dataset.sample(limit, seed).items
    records, curves, wall, (peak_mb, mem_source, start_mb) = _run_items(
        backend, items, perturbation, workers, thresholds, progress
    )
    summary = summarize(
        records,
        curves,
        thresholds=thresholds,
        score_threshold=score_threshold,
        n_boot=n_boot,
        seed=seed,
    )
    if any("restored" in r for r in records):  # the --restore pre-stage ran
        summary["restoration"] = {
            "restored": sum(bool(r.get("restored")) for r in records),
            "method_saw_restored": sum(bool(r.get("method_saw_restored")) for r in records),
            "authentic_restored": sum(bool(r.get("restored")) for r in records
                                      if r["label"] == "authentic"),
        }
    seconds = [r["seconds"] for r in records if r["seconds"] is not None]
    analysed = len(seconds)
    summary["speed"] = {
        "median_s_per_image": _r(float(np.median(seconds)), 5) if seconds else None,
        "images_per_s": _r(analysed / wall, 3) if wall > 0 and analysed else None,
        "wall_s": _r(wall, 3),
        "workers": max(1, workers),
        "runtime": backend.runtime_label,
        "peak_rss_mb": _r(peak_mb, 1),
        "peak_rss_source": mem_source,
        "rss_at_start_mb": _r(start_mb, 1),
    }
    head = {
        "method": backend.spec.name,
        "setting": perturbation.label if perturbation else "clean",
        "perturbation": (
            {"kind": perturbation.kind, "param": perturbation.param, "value": perturbation.value}
            if perturbation
            else None
        ),
        "threshold": backend.threshold,
    }
    return {**head, **summary, "items": records}


def run_benchmark(
    dataset: Dataset,
    backends_by_name: dict[str, Backend],
    settings: Sequence[Perturbation | None],
    *,
    workers: int = 1,
    seed: int = 0,
    score_threshold: float = 0.5,
    n_boot: int = 1000,
    on_start: Callable[[str, str, int], None] | None = None,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """Every method on every setting (``None`` = clean); one summary row per pair, in order.

    ``dataset`` is evaluated whole: sample it first for ``--limit``.
    """
    rows = []
    for name, backend in backends_by_name.items():
        for setting in settings:
            if on_start is not None:
                on_start(name, setting.label if setting else "clean", len(dataset))
            rows.append(
                evaluate_backend(
                    backend,
                    dataset,
                    perturbation=setting,
                    workers=workers,
                    seed=seed,
                    score_threshold=score_threshold,
                    n_boot=n_boot,
                    progress=progress,
                )
            )
    return rows


def _library_versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("numpy", "opencv-python-headless", "pillow", "scipy", "jpegio", "torch"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def run_manifest(
    dataset: Dataset,
    evaluated: Dataset,
    backends_by_name: dict[str, Backend],
    options: dict[str, Any],
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """What reproduces a run: versions, method weights (SHA-256), dataset file-list hash,
    options and the command line."""
    methods = []
    for name, b in backends_by_name.items():
        methods.append(
            {
                "name": name,
                "kind": b.spec.kind,
                "options": dict(b.options),
                "threshold": b.threshold,
                "runtime": b.runtime_label,
                "weights": str(b.weights_path) if b.weights_path else None,
                "weights_sha256": b.weights_sha256,
                "mask_rule": "method" if b.spec.decides_mask else "heatmap >= threshold",
            }
        )
    return {
        "schema": "forgectl.benchmark/1",
        "forgectl_version": __version__,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": list(argv) if argv is not None else list(sys.argv),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "libraries": _library_versions(),
        "jpeg_reader": jpeg_reader(),  # jpegio or the decoder (docs/OUTPUTS.md)
        "dataset": {
            "path": str(dataset.root.resolve()),
            "layout": dataset.layout,
            "items_total": len(dataset),
            "items_evaluated": len(evaluated),
            "tampered_evaluated": evaluated.n_tampered,
            "authentic_evaluated": evaluated.n_authentic,
            "file_list_sha256": file_list_sha256(evaluated.items),
            "warnings": list(dataset.warnings),
        },
        "options": options,
        "methods": methods,
    }


def dev_evaluator(
    method: str, dev: Path, limit: int | None = None, options: dict[str, Any] | None = None
) -> Callable[[Path], dict[str, Any]]:
    """``weights file -> metrics`` of ``method`` with those weights on a real dev dataset:
    what ``forgectl train --dev`` reports at each validation (never used to choose weights).
    """
    from forgectl import registry
    from forgectl.evaluation.datasets import load_dataset

    dataset = load_dataset(dev)

    def evaluate(weights: Path) -> dict[str, Any]:
        backend = registry.load(method, weights=weights, **(options or {}))
        summary = evaluate_backend(backend, dataset, limit=limit, n_boot=200)
        loc, det, aut = summary["localization"], summary["detection"], summary["authentic"]
        return {
            "dataset": str(dev),
            "n": summary["counts"]["evaluated"],
            "errors": summary["counts"]["errors"],
            "f1": loc["f1"],
            "iou": loc["iou"],
            "pixel_auc": loc["pixel_auc"],
            "best_threshold_f1": loc["best_threshold_f1"],
            "image_auc": det["image_auc"],
            "authentic_fpr": aut["fpr"],
        }

    return evaluate
