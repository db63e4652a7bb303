"""`forgectl export`: write a learned method's network as ONNX or TorchScript, parity-checked.

The file holds the per-tile network with the model card embedded; `forgectl localize --runtime
onnx --weights FILE.onnx` runs it through the method's own tiling. Contract: docs/EXPORT.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from forgectl.commands._options import MethodOpt, WeightsOpt


def export(
    method: MethodOpt,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", metavar="FILE",
                     help="File to write (.onnx for ONNX, e.g. .pt for "
                     "TorchScript).", show_default=False),
    ] = None,
    shipped: Annotated[
        bool,
        typer.Option("--shipped", help="Write the ONNX twins the default runtime runs: the "
                     "method's and its auxiliary networks', beside the shipped weights "
                     "(replacing older twins)."),
    ] = False,
    int8: Annotated[
        bool,
        typer.Option("--int8", help="Statically quantize the float ONNX twin (or --weights "
                     "FILE.onnx) to int8, calibrated on --calibration photos, and write the "
                     "int8 twin beside the shipped weights (or to --out); the int8 runtime "
                     "runs it. Methods with an int8 recipe: omni."),
    ] = False,
    calibration: Annotated[
        Path | None,
        typer.Option("--calibration", metavar="DIR",
                     help="With --int8: a folder of pristine JPEG photos "
                     "to calibrate activation ranges on (never a benchmark set).",
                     show_default=False),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", metavar="onnx|torchscript", help="onnx or torchscript.")
    ] = "onnx",
    weights: WeightsOpt = None,
    tolerance: Annotated[
        float,
        typer.Option("--tolerance", min=0.0,
                     help="Largest |heatmap difference| from PyTorch allowed on the samples."),
    ] = 1e-4,  # = forgectl.export.DEFAULT_TOLERANCE (not imported: --help stays light)
) -> None:
    """Export a learned method's network (dynamic height and width, model card embedded).

    The export is checked first: the backend runs a few synthetic sample images on PyTorch
    and on the exported file through the same tiling; any heatmap differing by more than
    --tolerance fails the export (exit 1) and nothing is written.
    """
    from forgectl import registry
    from forgectl.errors import UsageError, require_torch
    from forgectl.export import export_model, export_shipped

    spec = registry.get_spec(method)
    if spec.kind != "learned":
        learned = [m for m in registry.available() if registry.get_spec(m).kind == "learned"]
        raise UsageError(
            f"{method} is a classical method with no network to export (learned methods: "
            f"{', '.join(learned) or 'none registered'})"
        )
    if int8:
        _export_int8(method, out, weights, calibration, shipped, fmt)
        return
    if calibration is not None:
        raise UsageError("--calibration goes with --int8")
    if (out is None) == (not shipped):
        raise UsageError("give either --out FILE or --shipped")
    if shipped and (weights is not None or fmt != "onnx"):
        raise UsageError("--shipped exports the shipped weights as onnx (no --weights/--format)")
    require_torch("forgectl export")
    backend = registry.load(method, weights=weights, runtime="torch")
    reports = (export_shipped(backend, tolerance) if shipped
               else [export_model(backend, fmt, out, tolerance=tolerance)])
    for report in reports:
        typer.echo(
            f"forgectl: exported {method} ({report.weights}) as {report.format} to "
            f"{report.path} ({report.size_bytes / 1e6:.1f} MB); parity max |diff| "
            f"{report.max_abs_diff:.1e} on {len(report.samples)} samples (tolerance "
            f"{report.tolerance:.0e})",
            err=True,
        )


def _export_int8(method: str, out: Path | None, weights: Path | None,
                 calibration: Path | None, shipped: bool, fmt: str) -> None:
    """``forgectl export --int8``: the int8 twin from the float one."""
    from forgectl import registry
    from forgectl.backends.learned import twin_name
    from forgectl.errors import UsageError
    from forgectl.export import calibration_images, quantize_int8
    from forgectl.weights import weights_dir

    if shipped or fmt != "onnx":
        raise UsageError("--int8 writes an ONNX file (no --shipped/--format)")
    if calibration is None or not calibration.is_dir():
        raise UsageError("--int8 needs --calibration FOLDER of pristine JPEG photos")
    if "int8" not in registry.get_class(method).runtimes:
        raise UsageError(f"{method} has no int8 recipe (methods with one: omni)")
    backend = registry.load(method, weights=weights, runtime="onnx")
    target = out if out is not None else weights_dir() / twin_name(
        str(registry.get_spec(method).weights), "int8")
    if target.suffix.lower() != ".onnx":
        raise UsageError(f"--out must end in .onnx (got {target.name})")
    report = quantize_int8(backend, calibration_images(calibration), target)
    typer.echo(
        f"forgectl: quantized {method} ({report.weights}) to int8 in {report.path} "
        f"({report.size_bytes / 1e6:.1f} MB); mean |heatmap diff| from the float twin at most "
        f"{report.max_abs_diff:.3f} on {len(report.samples)} samples (tolerance "
        f"{report.tolerance})",
        err=True,
    )
