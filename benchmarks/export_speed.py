"""Seconds per image of omni on the ONNX runtime vs PyTorch (the figures in docs/EXPORT.md).

Usage (from the repository root; one process, both runtimes measured in it):

    OMP_NUM_THREADS=1 FORGECTL_THREADS=1 .venv/bin/python benchmarks/export_speed.py
    .venv/bin/python benchmarks/export_speed.py --weights weights/omni-tiny.safetensors --runs 9

Without ``--weights`` a randomly initialised tiny omni is written to a temporary folder (speed
does not depend on the weights' values). The model is exported to ONNX with the usual parity
check, then ``backend.localize`` runs on a CASIA-size (384 x 256) synthetic image, as a JPEG
(one tile, gate pass) and as a PNG (RGB route: PyTorch skips the frequency stream there, the
exported graph always computes it). Reported: median seconds over ``--runs`` after one
warm-up run, and the onnx / torch ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def random_weights(folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from forgectl.nets.omni import OmniIML
    from forgectl.recipes.omni import recipe as training_recipe

    torch.manual_seed(0)
    config = copy.deepcopy(training_recipe().configs["tiny"])
    config["model"]["pretrained"] = False
    model = OmniIML(config["model"], with_box_head=False, pretrained=False)
    path = folder / "omni-tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_suffix(".json").write_text(json.dumps({"method": "omni", "config": config}))
    return path


def median_seconds(backend, image, runs: int) -> float:
    backend.localize(image)  # warm-up: session/model load, allocator
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        backend.localize(image)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import torch

    from forgectl.backends.base import compute_threads
    from forgectl.backends.omni import OmniBackend
    from forgectl.export import export_model, sample_images

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weights = args.weights or random_weights(folder)
        torch_backend = OmniBackend(weights=weights)
        t0 = time.perf_counter()
        report = export_model(torch_backend, "onnx", folder / "omni.onnx")
        export_s = time.perf_counter() - t0
        onnx_backend = OmniBackend(weights=report.path, runtime="onnx")
        print(f"threads {compute_threads()} (FORGECTL_THREADS), torch {torch.__version__}, "
              f"weights {'random-init tiny' if args.weights is None else weights.name}")
        print(f"export + parity: {export_s:.1f} s, max |heatmap diff| {report.max_abs_diff:.1e}")
        jpeg, png = sample_images(((384, 256, 90), (384, 256, None)))
        for label, image in (("jpeg 384x256 (gate route)", jpeg), ("png 384x256 (RGB route)", png)):
            t_torch = median_seconds(torch_backend, image, args.runs)
            t_onnx = median_seconds(onnx_backend, image, args.runs)
            print(f"{label}: torch {t_torch:.3f} s, onnx {t_onnx:.3f} s, "
                  f"onnx/torch {t_onnx / t_torch:.2f}  (median of {args.runs})")


if __name__ == "__main__":
    main()
