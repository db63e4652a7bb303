"""Omni-IML cost figures: parameters, training step time, inference time and peak memory.

Usage::

    .venv/bin/python benchmarks/omni_cost.py params
    .venv/bin/python benchmarks/omni_cost.py train-step [--threads 2] [--box-head dense|rcnn]
        [--config tiny|tiny-scratch]
    .venv/bin/python benchmarks/omni_cost.py box-heads --threads 1
    .venv/bin/python benchmarks/omni_cost.py infer --height 256 --width 384 [--threads 2]
    .venv/bin/python benchmarks/omni_cost.py infer --height 3000 --width 4000 --repeats 1

``infer`` runs the real backend (tiling, gate pass, blending) with a randomly initialised tiny
model (speed does not depend on the weights) on a synthetic photo-like JPEG, and prints the
median seconds and the process's peak resident memory (run each size in its own process so the
peak belongs to it). Timings on a shared machine vary with the load: note ``uptime``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def params() -> dict:
    from forgectl.nets.omni import OmniIML, count_parameters, omni_config

    out = {}
    for name in ("tiny", "paper"):
        model = OmniIML(omni_config(name), with_box_head=True, pretrained=False)
        box = count_parameters(model.box_head)
        out[name] = {"inference": count_parameters(model) - box, "box_head_training_only": box,
                     "encoder": count_parameters(model.encoder)}
    return out


def train_step(threads: int, box_head: str, steps: int, config: str) -> dict:
    import torch

    from forgectl.nets.omni import OmniIML, omni_config

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = omni_config(config)
    cfg["box_head"]["kind"] = box_head
    model = OmniIML(cfg, with_box_head=True, pretrained=False).train()
    b, s = 8, 256
    x = torch.randn(b, 3, s, s)
    dct = torch.randint(-30, 30, (b, s, s))
    qt = torch.randint(1, 100, (b, 8, 8))
    has_jpeg = torch.ones(b, dtype=torch.bool)
    target = torch.zeros(b, 1, s, s)
    target[:, :, 64:128, 64:160] = 1
    boxes = [torch.tensor([[64.0, 64.0, 160.0, 128.0]]) for _ in range(b)]
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    times, cpu = [], []
    for _ in range(steps + 1):
        t, c = time.perf_counter(), time.process_time()
        out = model(x, dct, qt, has_jpeg, mask_target=target, boxes=boxes)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out["mask"], target)
        loss = loss + sum(out["box_losses"].values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"config": config, "batch": b, "size": s, "threads": threads, "box_head": box_head,
            "median_s": round(statistics.median(times[1:]), 3),
            "steps_s": [round(v, 3) for v in times[1:]],
            "median_cpu_s": round(statistics.median(cpu[1:]), 3),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def box_heads(threads: int, steps: int) -> dict:
    """Forward + backward of each training-only box branch alone (tiny's maps, batch 8)."""
    import torch

    from forgectl.nets.detection import create_box_head

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    feats = [torch.randn(8, 40, 32, 32, requires_grad=True),
             torch.randn(8, 112, 16, 16, requires_grad=True)]
    boxes = [torch.tensor([[64.0, 64.0, 160.0, 128.0], [10.0, 10.0, 30.0, 40.0]])] * 6
    boxes += [torch.zeros(0, 4)] * 2
    out = {}
    for kind in ("dense", "rcnn"):
        head = create_box_head(kind, [40, 112], [8, 16], 48).train()
        cpu = []
        for _ in range(steps + 1):
            c = time.process_time()
            sum(head(feats, boxes, (256, 256)).values()).backward()
            cpu.append(time.process_time() - c)
        out[kind] = {"median_cpu_s": round(statistics.median(cpu[1:]), 3),
                     "parameters": sum(p.numel() for p in head.parameters())}
    return out


def _photo_like(height: int, width: int, quality: int):
    """A smooth, slightly noisy JPEG, made in row bands (no large float temporaries)."""
    from forgectl.intake import image_from_array

    rng = np.random.default_rng(0)
    rgb = np.empty((height, width, 3), np.uint8)
    xx = np.arange(width, dtype=np.float32)[None, :]
    for y0 in range(0, height, 256):
        yy = np.arange(y0, min(height, y0 + 256), dtype=np.float32)[:, None]
        for c in range(3):
            band = 120 + 60 * np.sin(xx / (30 + 9 * c)) * np.cos(yy / (41 + 7 * c))
            band += rng.normal(0, 4, band.shape).astype(np.float32)
            rgb[y0:y0 + len(yy), :, c] = np.clip(band, 0, 255).astype(np.uint8)
    return image_from_array(rgb, jpeg_quality=quality)


def infer(height: int, width: int, threads: int, repeats: int, tile: int, overlap: int) -> dict:
    os.environ["FORGECTL_THREADS"] = str(threads)
    import torch
    from safetensors.torch import save_file

    from forgectl.backends.omni import OmniBackend
    from forgectl.nets.omni import OmniIML
    from forgectl.recipes.omni import recipe as training_recipe

    config = training_recipe().configs["tiny"]
    torch.manual_seed(0)
    model = OmniIML(config["model"], pretrained=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "omni-tiny.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        path.with_suffix(".json").write_text(json.dumps({"config": config}))
        del model
        backend = OmniBackend(weights=path, tile=tile, overlap=overlap)
        backend.localize(_photo_like(256, 256, 90))  # load the model, warm up
        base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        image = _photo_like(height, width, 90)
        times, cpu = [], []
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            result = backend.localize(image)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mp = height * width / 1e6
    med = statistics.median(times)
    return {"height": height, "width": width, "megapixels": round(mp, 2), "threads": threads,
            "tile": tile, "overlap": overlap,
            "tiles": result.facts["tiles"], "median_s": round(med, 3),
            "s_per_megapixel": round(med / mp, 3), "runs_s": [round(v, 3) for v in times],
            "median_cpu_s": round(statistics.median(cpu), 3),
            "load_average": [round(v, 2) for v in os.getloadavg()],
            "peak_rss_mb": round(peak_mb, 1),
            "peak_rss_mb_after_model_load_and_small_warmup": round(base_mb, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["params", "train-step", "box-heads", "infer"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--box-head", default="dense", choices=["dense", "rcnn"])
    ap.add_argument("--config", default="tiny", help="train-step: omni config name")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tile", type=int, default=384)
    ap.add_argument("--overlap", type=int, default=64)
    args = ap.parse_args()
    if args.what == "params":
        out = params()
    elif args.what == "box-heads":
        out = box_heads(args.threads, args.steps)
    elif args.what == "train-step":
        out = train_step(args.threads, args.box_head, args.steps, args.config)
    else:
        out = infer(args.height, args.width, args.threads, args.repeats, args.tile, args.overlap)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
