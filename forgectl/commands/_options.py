"""Option aliases shared by several commands, so names and help stay the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

MethodOpt = Annotated[
    str, typer.Option("--method", "-m", metavar="NAME",
                      help="Method name (see `forgectl methods`).")
]
OutDirOpt = Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Output folder.")]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", metavar="FILE",
                 help="Weights file (default: the method's shipped weights)."),
]
ThresholdOpt = Annotated[
    float | None,
    typer.Option("--threshold", "-t", min=0.0, max=1.0, help="Heatmap threshold for the mask."),
]
MaxPixelsOpt = Annotated[
    int,
    typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this."),
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Descend into sub-folders of folder inputs.")
]
RuntimeOpt = Annotated[
    str,
    typer.Option(
        "--runtime", metavar="auto|int8|onnx|torch",
        help="Where a learned method's network runs: auto (its shipped int8 or float ONNX "
        "graph in onnxruntime when there is one, else PyTorch; --weights FILE runs on what "
        "FILE is), int8, onnx, or torch (needs the train extra).",
    ),
]
#: = forgectl.intake.DEFAULT_MAX_PIXELS, written out for the same reason as RESTORE_DEFAULT.
MAX_PIXELS_DEFAULT = 100_000_000
#: = forgectl.backends.restorer.DEFAULT_RESTORE_WEIGHTS, likewise.
RESTORE_WEIGHTS_DEFAULT = "reconwave-restore-tiny-ft.safetensors"
#: = forgectl.restore.DEFAULT_RESTORE_MODE, written out so that `forgectl --help` does not
#: import numpy and the imaging stack (a test keeps the two equal).
RESTORE_DEFAULT = "off"
RestoreOpt = Annotated[
    str,
    typer.Option(
        "--restore", metavar="auto|on|off",
        help="Brightness/contrast restoration before the method (docs/RESTORE.md): auto "
        "(restore when the restoration module sees a disturbance), on (also try its likeliest "
        "disturbance when unsure), off.",
    ),
]
