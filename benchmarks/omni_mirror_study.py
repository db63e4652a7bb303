"""Which test-time mirrors pay for omni: left-right only (as shipped), plus top-bottom, plus both.

Runs ``forgectl benchmark DATASET -m omni`` in this process with ``OmniBackend.analyze``
replaced by one that averages the heatmaps of the chosen mirror set. Every mirror moves whole
8x8 blocks (as :func:`forgectl.backends.learned.average_with_mirror` does), so the JPEG grid
stays a grid and the coefficient plane is the original's with its blocks reordered
(:func:`forgectl.analysis.network_inputs.flip_blocks`); partial blocks keep fewer passes.

    FORGECTL_THREADS=1 python benchmarks/omni_mirror_study.py hv4 /work/casia-A OUT

MODE: ``h`` (left-right: the shipped flip, a check that this script reproduces the backend),
``hv3`` (also top-bottom: three passes), ``hv4`` (also both at once: four passes).
Results: docs/methods/omni.md "Test-time flip".
"""

from __future__ import annotations

import sys

import numpy as np

from forgectl.analysis.network_inputs import dct_planes, flip_blocks
from forgectl.backends import omni as O
from forgectl.backends.base import Result
from forgectl.intake import ForensicImage

MODES = ("h", "hv3", "hv4")


def mirrored_heatmap(backend: O.OmniBackend, image: ForensicImage, mode: str) -> np.ndarray:
    """(H, W) float32: the mean of the heatmaps of ``image`` and its mirrors in ``mode``."""
    clip = int(backend.model_config()["frequency"].get("clip", 20))
    idx, qtable, has_jpeg = dct_planes(image, clip)
    rgb = image.rgb
    h, w = rgb.shape[:2]
    h8, w8 = h // 8 * 8, w // 8 * 8
    plane = np.zeros((-(-h // 8) * 8, -(-w // 8) * 8), idx.dtype)
    plane[:h, :w] = idx

    def run(pixels: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
        return backend._heatmap(np.ascontiguousarray(pixels), np.ascontiguousarray(coefficients),
                                qtable, has_jpeg)[0].astype(np.float32)

    total = run(rgb, idx)
    count = np.ones_like(total)
    lr = run(rgb[:, :w8][:, ::-1], flip_blocks(plane[:, :w8], axis=1)[:h])
    total[:, :w8] += lr[:, ::-1]
    count[:, :w8] += 1
    if mode in ("hv3", "hv4"):
        tb = run(rgb[:h8][::-1], flip_blocks(plane[:h8], axis=0)[:, :w])
        total[:h8] += tb[::-1]
        count[:h8] += 1
    if mode == "hv4":
        both = run(rgb[:h8, :w8][::-1, ::-1],
                   flip_blocks(flip_blocks(plane[:h8, :w8], axis=0), axis=1))
        total[:h8, :w8] += both[::-1, ::-1]
        count[:h8, :w8] += 1
    return total / count


def main() -> None:
    if len(sys.argv) != 4 or sys.argv[1] not in MODES:
        sys.exit(f"usage: omni_mirror_study.py {{{','.join(MODES)}}} DATASET OUT")
    mode, dataset, out = sys.argv[1:]

    def analyze(self: O.OmniBackend, image: ForensicImage) -> Result:
        heat = mirrored_heatmap(self, image, mode)
        return Result.from_heatmap(heat, self.threshold, facts={"mirrors": mode})

    O.OmniBackend.analyze = analyze  # type: ignore[method-assign]
    from forgectl.cli import main as cli

    sys.argv = ["forgectl", "benchmark", dataset, "-m", "omni", "--runtime", "onnx", "-j", "1",
                "--bootstrap", "0", "--no-plots", "-o", out]
    cli()


if __name__ == "__main__":
    main()
