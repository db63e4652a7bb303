"""Benchmark reports: rich tables, ``report.json``, ``report.csv``, ``items.csv`` and PNG plots.

A report is ``{"manifest": ..., "rows": [...]}``: one row per (method, setting) as returned by
:func:`forgectl.evaluation.runner.evaluate_backend` (per-image records go to ``items.csv``).
Every file is written atomically; plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from forgectl.outputs import atomic_write, write_bytes, write_json

#: Columns of report.csv: (column name, path into a row).
CSV_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("method", ("method",)),
    ("setting", ("setting",)),
    ("threshold", ("threshold",)),
    ("items", ("counts", "items")),
    ("tampered", ("counts", "tampered")),
    ("authentic", ("counts", "authentic")),
    ("errors", ("counts", "errors")),
    ("not_applicable", ("counts", "not_applicable")),
    ("f1", ("localization", "f1")),
    ("f1_ci_low", ("localization", "f1_ci", 0)),
    ("f1_ci_high", ("localization", "f1_ci", 1)),
    ("iou", ("localization", "iou")),
    ("iou_ci_low", ("localization", "iou_ci", 0)),
    ("iou_ci_high", ("localization", "iou_ci", 1)),
    ("precision", ("localization", "precision")),
    ("recall", ("localization", "recall")),
    ("pixel_auc", ("localization", "pixel_auc")),
    ("pixel_auc_ci_low", ("localization", "pixel_auc_ci", 0)),
    ("pixel_auc_ci_high", ("localization", "pixel_auc_ci", 1)),
    ("best_threshold", ("localization", "best_threshold")),
    ("best_threshold_f1", ("localization", "best_threshold_f1")),
    ("oracle_f1", ("localization", "oracle_f1")),
    ("f1_flag_everything", ("localization", "f1_flag_everything")),
    ("f1_pooled", ("localization", "f1_pooled")),
    ("image_auc", ("detection", "image_auc")),
    ("image_auc_ci_low", ("detection", "image_auc_ci", 0)),
    ("image_auc_ci_high", ("detection", "image_auc_ci", 1)),
    ("balanced_accuracy", ("detection", "balanced_accuracy")),
    ("balanced_accuracy_ci_low", ("detection", "balanced_accuracy_ci", 0)),
    ("balanced_accuracy_ci_high", ("detection", "balanced_accuracy_ci", 1)),
    ("score_threshold", ("detection", "score_threshold")),
    ("ece", ("detection", "ece")),
    ("authentic_fpr", ("authentic", "fpr")),
    ("authentic_fpr_ci_low", ("authentic", "fpr_ci", 0)),
    ("authentic_fpr_ci_high", ("authentic", "fpr_ci", 1)),
    ("authentic_fpr_at_best_threshold", ("authentic", "fpr_at_best_threshold")),
    ("median_s_per_image", ("speed", "median_s_per_image")),
    ("images_per_s", ("speed", "images_per_s")),
    ("peak_rss_mb", ("speed", "peak_rss_mb")),
    ("rss_at_start_mb", ("speed", "rss_at_start_mb")),
    ("workers", ("speed", "workers")),
    ("runtime", ("speed", "runtime")),
)

ITEM_COLUMNS = (
    "key",
    "label",
    "manipulation",
    "status",
    "error",
    "note",
    "width",
    "height",
    "score",
    "seconds",
    "flagged_fraction",
    "f1",
    "iou",
    "precision",
    "recall",
    "pixel_auc",
    "gt_fraction",
    "tp",
    "fp",
    "fn",
)


def get_path(row: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    """``row[a][b][c]`` for a path, or None when any step is missing."""
    value: Any = row
    for step in path:
        if value is None:
            return None
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        writer.writerow(["" if v is None else v for v in r])
    return buf.getvalue()


def write_reports(
    report: dict[str, Any],
    items: dict[tuple[str, str], list[dict[str, Any]]],
    out: Path,
    plots: bool = True,
) -> dict[str, str]:
    """Write report.json, report.csv, items.csv and (optionally) plots/*.png into ``out``.

    Args:
        report: ``{"manifest", "rows"}``; rows carry no per-image records.
        items: per-image records by ``(method, setting)``.

    Returns:
        Written paths by kind.
    """
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    write_json(out / "report.json", report)
    written["json"] = str(out / "report.json")
    header = [name for name, _ in CSV_COLUMNS]
    table = [[get_path(row, path) for _, path in CSV_COLUMNS] for row in report["rows"]]
    with atomic_write(out / "report.csv", "w") as fh:
        fh.write(_csv_text(header, table))
    written["csv"] = str(out / "report.csv")
    item_rows = [
        [method, setting, *[rec.get(c) for c in ITEM_COLUMNS]]
        for (method, setting), recs in items.items()
        for rec in recs
    ]
    with atomic_write(out / "items.csv", "w") as fh:
        fh.write(_csv_text(["method", "setting", *ITEM_COLUMNS], item_rows))
    written["items"] = str(out / "items.csv")
    if plots:
        for name, path in write_plots(report["rows"], out / "plots").items():
            written[f"plot:{name}"] = path
    return written


# --------------------------------------------------------------------------- tables


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _with_ci(value: Any, ci: Any) -> str:
    if value is None:
        return "-"
    if not ci:
        return _fmt(value)
    return f"{value:.3f} ({ci[0]:.2f}-{ci[1]:.2f})"


def render_tables(report: dict[str, Any]) -> list[Any]:
    """Two rich tables: localization (tampered images) and detection / authentic / speed."""
    from rich.table import Table

    rows = report["rows"]
    thr = sorted({r["threshold"] for r in rows})
    thr_text = ", ".join(f"{t:g}" for t in thr)
    loc = Table(
        title=f"Localization on tampered images (mean per image; fixed threshold {thr_text})",
        title_justify="left",
    )
    for col in (
        "method",
        "setting",
        "n",
        "F1 (95% CI)",
        "IoU (95% CI)",
        "P",
        "R",
        "pixel AUC",
        "best-thr F1 (t)",
        "oracle F1",
    ):
        loc.add_column(col, justify="left" if col in ("method", "setting") else "right")
    det = Table(title="Detection (image score), authentic images, speed", title_justify="left")
    for col in (
        "method",
        "setting",
        "errors",
        "n/a",
        "image AUC (95% CI)",
        "bal. acc",
        "ECE",
        "auth. FPR",
        "s/img (median)",
        "img/s",
        "peak RSS MB",
        "runtime",
    ):
        det.add_column(col, justify="left" if col in ("method", "setting") else "right")
    for r in rows:
        L, D, A, S, C = r["localization"], r["detection"], r["authentic"], r["speed"], r["counts"]
        best = (
            f"{L['best_threshold_f1']:.3f} ({L['best_threshold']:g})"
            if L["best_threshold_f1"] is not None
            else "-"
        )
        loc.add_row(
            r["method"],
            r["setting"],
            str(L["n"]),
            _with_ci(L["f1"], L["f1_ci"]),
            _with_ci(L["iou"], L["iou_ci"]),
            _fmt(L["precision"]),
            _fmt(L["recall"]),
            _fmt(L["pixel_auc"]),
            best,
            _fmt(L["oracle_f1"]),
        )
        det.add_row(
            r["method"],
            r["setting"],
            str(C["errors"]),
            str(C["not_applicable"]),
            _with_ci(D["image_auc"], D["image_auc_ci"]),
            _fmt(D["balanced_accuracy"]),
            _fmt(D.get("ece")),
            _fmt(A["fpr"], 4),
            _fmt(S["median_s_per_image"], 4),
            _fmt(S["images_per_s"], 1),
            _fmt(S["peak_rss_mb"], 0),
            S.get("runtime") or "-",
        )
    return [loc, det]


# --------------------------------------------------------------------------- plots

#: Bars of the per-method chart: (label, path into a row, path to its CI or None).
BAR_METRICS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("F1 @ fixed t", ("localization", "f1"), ("localization", "f1_ci")),
    ("IoU @ fixed t", ("localization", "iou"), ("localization", "iou_ci")),
    ("F1 @ best t\n(dataset)", ("localization", "best_threshold_f1"), None),
    ("oracle F1\n(per image)", ("localization", "oracle_f1"), None),
    ("pixel AUC", ("localization", "pixel_auc"), ("localization", "pixel_auc_ci")),
    ("image AUC", ("detection", "image_auc"), ("detection", "image_auc_ci")),
    (
        "balanced\naccuracy",
        ("detection", "balanced_accuracy"),
        ("detection", "balanced_accuracy_ci"),
    ),
    ("authentic\nFPR", ("authentic", "fpr"), ("authentic", "fpr_ci")),
)

#: Metrics drawn against perturbation strength.
SWEEP_METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("F1 @ fixed threshold", ("localization", "f1")),
    ("F1 @ best dataset threshold", ("localization", "best_threshold_f1")),
    ("pixel AUC", ("localization", "pixel_auc")),
    ("image AUC", ("detection", "image_auc")),
)


def _figure_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _colours(methods: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _all_not_applicable(row: dict[str, Any]) -> bool:
    c = row["counts"]
    return c["evaluated"] > 0 and c["not_applicable"] == c["evaluated"]


def _threshold_axes(ax: Any, ylabel: str, title: str) -> None:
    """A panel with the heatmap threshold (0 to 1) along x and a quantity from 0 up."""
    ax.set_xlabel("heatmap threshold")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def write_plots(rows: list[dict[str, Any]], folder: Path) -> dict[str, str]:
    """Per-method bars, F1 against threshold, and one sweep chart per perturbation kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (used as matplotlib.ticker below)

    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = _colours(methods)
    clean = {r["method"]: r for r in rows if r["perturbation"] is None}
    written: dict[str, str] = {}

    if clean:
        fig, (ax, ax_t) = plt.subplots(
            1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [5, 1.3]}
        )
        width = 0.8 / max(1, len(clean))
        for k, (m, r) in enumerate(clean.items()):
            xs, ys, lo, hi = [], [], [], []
            for j, (_, path, ci_path) in enumerate(BAR_METRICS):
                v = get_path(r, path)
                if v is None:
                    continue
                ci = get_path(r, ci_path) if ci_path else None
                xs.append(j - 0.4 + width * (k + 0.5))
                ys.append(v)
                lo.append(v - ci[0] if ci else 0.0)
                hi.append(ci[1] - v if ci else 0.0)
            ax.bar(
                xs,
                ys,
                width * 0.92,
                label=m,
                color=colours[m],
                yerr=[lo, hi],
                capsize=2,
                error_kw={"elinewidth": 0.8},
            )
        ax.set_xticks(range(len(BAR_METRICS)), [b[0] for b in BAR_METRICS], fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("value (higher is better, except authentic FPR)")
        ax.axhline(0.5, color="grey", lw=0.6, ls=":")
        ax.grid(axis="y", alpha=0.3)
        n = next(iter(clean.values()))["counts"]
        ax.set_title(
            f"Clean images: {n['tampered']} tampered, {n['authentic']} authentic "
            "(error bars: 95% bootstrap CI)",
            fontsize=10,
        )
        ax.legend(fontsize=8, ncols=min(4, len(clean)))
        speeds = [(m, get_path(r, ("speed", "median_s_per_image"))) for m, r in clean.items()]
        speeds = [(m, 1000.0 * s) for m, s in speeds if s is not None]
        ax_t.barh(
            [m for m, _ in speeds],
            [s for _, s in speeds],
            height=0.6,
            color=[colours[m] for m, _ in speeds],
        )
        for y, (_, ms) in enumerate(speeds):
            ax_t.annotate(
                f"{ms:.0f}",
                (ms, y),
                xytext=(2, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax_t.set_ylim(len(speeds) - 0.5, -0.5) if len(speeds) > 1 else ax_t.set_ylim(-1, 1)
        ax_t.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(3))
        ax_t.set_xlabel("median ms / image")
        ax_t.set_title("Speed", fontsize=10)
        ax_t.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        write_bytes(folder / "methods.png", _figure_png(fig))
        plt.close(fig)
        written["methods"] = str(folder / "methods.png")

        # F1 on the forgeries and, beside it, what the same threshold costs on authentic
        # images: the two curves an operating point is chosen from.
        fig, (ax, ax_fp) = plt.subplots(1, 2, figsize=(11, 4.5))
        for m, r in clean.items():
            curve = r["f1_by_threshold"]
            if curve.get("authentic_fpr") is not None:
                ax_fp.plot(curve["thresholds"], curve["authentic_fpr"], color=colours[m],
                           label=m)
                fpr = r["authentic"].get("fpr")
                if fpr is not None:
                    ax_fp.plot([r["threshold"]], [fpr], "o", color=colours[m], ms=5)
            if curve["f1"] is None:
                continue
            ax.plot(curve["thresholds"], curve["f1"], color=colours[m], label=m)
            t, f1 = r["threshold"], r["localization"]["f1"]
            ax.plot([t], [f1], "o", color=colours[m], ms=5)
            bt, bf = r["localization"]["best_threshold"], r["localization"]["best_threshold_f1"]
            ax.plot([bt], [bf], "*", color=colours[m], ms=10)
        _threshold_axes(ax_fp, "flagged share of authentic images' pixels",
                        "False alarms against threshold (o: the method's mask)")
        if ax_fp.lines:
            ax_fp.legend(fontsize=8)
        else:
            ax_fp.text(0.5, 0.5, "no authentic images", ha="center", va="center",
                       transform=ax_fp.transAxes)
        ref = next(iter(clean.values()))["localization"].get("f1_flag_everything")
        if ref is not None:
            ax.axhline(ref, color="grey", lw=0.8, ls=":", label="flag every pixel")
        _threshold_axes(ax, "mean per-image F1 (tampered images)",
                        "F1 against threshold (o: the method's mask, *: best threshold)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        write_bytes(folder / "f1_vs_threshold.png", _figure_png(fig))
        plt.close(fig)
        written["f1_vs_threshold"] = str(folder / "f1_vs_threshold.png")

        # Reliability diagram: image scores read as probabilities against observed rates.
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="calibrated")
        for m, r in clean.items():
            points = r["detection"].get("calibration") or []
            if not points:
                continue
            ece = r["detection"].get("ece")
            ax.plot([p["confidence"] for p in points], [p["observed"] for p in points], "o-",
                    color=colours[m], ms=3, lw=1,
                    label=f"{m} (ECE {ece:.3f})" if ece is not None else m)
        ax.set_xlabel("image score (mean in bin)")
        ax.set_ylabel("fraction of tampered images in bin")
        ax.set_title("Reliability of the image score (10 bins)", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        write_bytes(folder / "reliability.png", _figure_png(fig))
        plt.close(fig)
        written["reliability"] = str(folder / "reliability.png")

    from forgectl.evaluation.perturb import KINDS

    kinds = list(dict.fromkeys(r["perturbation"]["kind"] for r in rows if r["perturbation"]))
    for kind in kinds:
        fig, axes = plt.subplots(1, len(SWEEP_METRICS), figsize=(4 * len(SWEEP_METRICS), 3.8))
        for ax, (title, path) in zip(axes, SWEEP_METRICS, strict=True):
            for m in methods:
                pts = sorted(
                    (r["perturbation"]["value"], get_path(r, path), _all_not_applicable(r))
                    for r in rows
                    if r["method"] == m
                    and r["perturbation"]
                    and r["perturbation"]["kind"] == kind
                    and get_path(r, path) is not None
                )
                if pts:
                    ax.plot(
                        [p[0] for p in pts], [p[1] for p in pts], "o-", color=colours[m], label=m
                    )
                    # x: the method could analyse none of the images (e.g. JPEG-only, PNG input)
                    na = [p for p in pts if p[2]]
                    if na:
                        ax.plot(
                            [p[0] for p in na],
                            [p[1] for p in na],
                            "x",
                            color="black",
                            ms=8,
                            zorder=5,
                        )
                ref = get_path(clean[m], path) if m in clean else None
                if ref is not None:
                    ax.axhline(ref, color=colours[m], ls="--", lw=0.9, alpha=0.7)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(KINDS[kind].axis_label)
            ax.grid(alpha=0.3)
            if "AUC" in title:
                ax.set_ylim(0, 1)
                ax.axhline(0.5, color="grey", lw=0.6, ls=":")  # chance level
            else:
                ax.set_ylim(bottom=0)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncols=min(8, len(labels)) or 1,
            fontsize=8,
            bbox_to_anchor=(0.5, -0.06),
            frameon=False,
        )
        fig.suptitle(
            f"Robustness to {kind} (dashed: clean images; x: method not applicable)", fontsize=11
        )
        fig.tight_layout()
        path_png = folder / f"sweep_{kind}.png"
        write_bytes(path_png, _figure_png(fig))
        plt.close(fig)
        written[f"sweep_{kind}"] = str(path_png)
    return written
