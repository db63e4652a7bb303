"""Omni-IML: a generalist localizer with a modal gate between RGB and RGB + JPEG DCT streams.

C. Qu, Y. Zhong, F. Guo, L. Jin, "Omni-IML: Towards Unified Image Manipulation Localization",
arXiv:2411.14823 (2024). The network is :class:`forgectl.nets.omni.OmniIML`; this module feeds
it (pixels, the file's own Y DCT coefficients and quantization table, tiling on the 8x8 grid)
and defines its training recipe.

Inference never resizes: the image is padded to a multiple of 32, and images larger than one
tile are cut into overlapping tiles on the JPEG grid whose outputs are blended. The modality is
decided once per image: for tiled images up to ``gate_tiles`` tiles spread over the image run
the full model with the gate, their mean gate probability fixes the route, and every other
tile is decoded on that route (tiles the gate saw are decoded again only if their own route
disagreed), so the decision costs little more than one pass.
Without JPEG data (PNG, TIFF, ...) the frequency stream does not apply and the gate is forced
to RGB; the JSON facts say so.

The tiling loop calls the network only through a :data:`~forgectl.backends.base.TileRunner`
(numpy feeds ``image, dct, qtable, route`` -> ``mask, gate, use_rgb``), so the same loop runs
the PyTorch model (``runtime="torch"``) or the graph ``forgectl export`` wrote
(:func:`tile_graph`, ``runtime="onnx"``; contract in docs/EXPORT.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from forgectl.backends.base import (
    Backend,
    ExportGraph,
    MethodSpec,
    Result,
    TileRunner,
    compute_threads,
)
from forgectl.errors import UsageError, WeightsError
from forgectl.intake import ForensicImage
from forgectl.training.recipe import Recipe, SynthSample

if TYPE_CHECKING:
    import torch

    from forgectl.nets.omni import OmniIML

PAPER = (
    "C. Qu, Y. Zhong, F. Guo, L. Jin, 'Omni-IML: Towards Unified Image Manipulation "
    "Localization', arXiv:2411.14823, 2024"
)
#: Network input sizes must be multiples of the encoder's last stride.
MULTIPLE = 32
#: Keys of the training-only box branch, present in trained state dicts, unused at inference.
TRAINING_ONLY_PREFIXES = ("box_head.",)
#: Values of the per-tile network's ``route`` input: the gate decides, RGB + DCT, RGB only.
ROUTE_GATE, ROUTE_FUSED, ROUTE_RGB = -1, 0, 1
#: The per-tile network's inputs and outputs (the TileRunner contract, docs/EXPORT.md).
INPUT_NAMES = ("image", "dct", "qtable", "route")
OUTPUT_NAMES = ("mask", "gate", "use_rgb")
#: Size the export traces at (7 x 9 cells of 32): no parity sample has it, so a shape frozen
#: into the graph shows up as a parity failure.
TRACE_SIZE = (224, 288)


def torch_threads() -> int:
    """``FORGECTL_THREADS`` or 2 (the CPU budget of one forgectl process)."""
    return compute_threads()


def normalize_rgb(rgb: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, H, W) float32 ``(rgb / 255 - mean) / std``."""
    x = np.asarray(rgb, np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
        :, None, None
    ]


def dct_planes(image: ForensicImage, clip: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(indices, qtable, has_jpeg)`` for an image.

    indices: (8 * ceil(H / 8), 8 * ceil(W / 8)) uint8 ``min(|Y coefficient|, clip)`` on the
    image's own grid; qtable: (8, 8) int64 Y steps. Without JPEG data both are placeholders
    (zeros, ones) and ``has_jpeg`` is False.
    """
    bh, bw = -(-image.height // 8), -(-image.width // 8)
    if image.jpeg is None:
        return np.zeros((8 * bh, 8 * bw), np.uint8), np.ones((8, 8), np.int64), False
    coef = image.jpeg.y_coefficients(image.height, image.width)
    # = nets.frequency.coefficient_indices, inlined: the ONNX runtime path must not import torch.
    idx = np.minimum(np.abs(np.asarray(coef, np.int64)), clip).astype(np.uint8)
    return idx, image.jpeg.y_quant.astype(np.int64), True


def tile_graph(model: OmniIML) -> torch.nn.Module:
    """Omni-IML on one tile as a traceable module: the network ``forgectl export`` writes.

    ``OmniIML.forward`` branches in Python on tensor values (skip the frequency stream when
    every image takes the RGB route, skip the gate when the route is given), which a traced
    graph cannot do. Here the frequency stream and the gate always run and ``route`` picks
    the stride-8 map with tensor ops, so one graph serves both the gate pass and the
    fixed-route passes of the tiling loop. After the route it mirrors ``OmniIML.forward``
    (the export parity check compares the two through the same tiling loop).

    Shapes: ``image (1, 3, H, W)`` float32 normalized, ``dct (1, H, W)`` uint8, ``qtable
    (1, 8, 8)`` int64, ``route (1,)`` int64 (:data:`ROUTE_GATE`, :data:`ROUTE_FUSED`,
    :data:`ROUTE_RGB`) -> ``mask (1, 1, H, W)`` probability, ``gate (1,)`` P(RGB alone is
    better), ``use_rgb (1,)`` bool route taken; H and W multiples of 32.
    """
    import torch
    import torch.nn.functional as F

    class OmniTileGraph(torch.nn.Module):
        def __init__(self, net: OmniIML) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: torch.Tensor, dct: torch.Tensor, qtable: torch.Tensor,
                    route: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            net = self.net
            # has_jpeg is fixed: "no JPEG data" is expressed by route 1 (RGB only) instead.
            head = net.encode_head(image, dct, qtable, torch.ones(1, dtype=torch.bool))
            gate_logit = head["gate_logit"]
            follow = route < 0
            # Boolean algebra, not torch.where: onnxruntime has no Where kernel for bool.
            use_rgb = (follow & (gate_logit >= 0)) | (~follow & (route > 0))
            s8 = torch.where(use_rgb.view(-1, 1, 1, 1), head["rgb8"], head["fused8"])
            maps = [*head["stage_outputs"], *net.encoder.run(s8, net.i8 + 1)]
            s16, s32 = maps[net.i16], maps[net.i32]
            s8, s16 = net.anomaly(s8, s16)
            dec = net.decoder([maps[net.i4], s8, s16, s32])
            mask = F.interpolate(dec["mask"], size=image.shape[-2:], mode="bilinear",
                                 align_corners=False)
            return torch.sigmoid(mask), torch.sigmoid(gate_logit), use_rgb

    return OmniTileGraph(model).eval()


class OmniBackend(Backend):
    """Omni-IML inference.

    Options: ``tile`` (tile size in pixels, multiple of 32, default 384: the fastest per pixel
    of 320-1024 measured on 2 cores), ``overlap`` (tile
    overlap, multiple of 8, default 64), ``gate_tiles`` (tiles of a large image the gate
    looks at, default 8).
    """

    spec = MethodSpec(
        name="omni",
        summary="Omni-IML: learned localizer, gate between RGB and RGB+JPEG-DCT streams",
        kind="learned",
        uses_jpeg=True,
        weights="omni-tiny.safetensors",
        paper=PAPER,
    )
    runtimes = ("torch", "onnx")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tile = int(self.options.get("tile", 384))
        self.overlap = int(self.options.get("overlap", 64))
        self.gate_tiles = int(self.options.get("gate_tiles", 8))
        if self.tile < 64 or self.tile % MULTIPLE:
            raise UsageError(f"omni: tile must be a multiple of {MULTIPLE} and >= 64")
        if self.overlap < 0 or self.overlap % 8 or self.overlap >= self.tile // 2:
            raise UsageError("omni: overlap must be a multiple of 8, below half the tile")
        if self.gate_tiles < 1:
            raise UsageError("omni: gate_tiles must be >= 1")
        self._model: OmniIML | None = None
        self._config: dict[str, Any] | None = None
        self._norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    # ------------------------------------------------------------------ loading

    def model_config(self) -> dict[str, Any]:
        """The network config from the model card next to the weights."""
        if self._config is None:
            try:
                card = self.model_card()
            except ValueError as exc:  # json.JSONDecodeError
                raise WeightsError(f"model card of {self.weights_path} is not JSON: {exc}"
                                   ) from exc
            if not card or not isinstance(card.get("config"), dict):
                raise WeightsError(
                    f"omni needs the model card {self.weights_path.with_suffix('.json')} "
                    "with the network config"
                )
            config = card["config"]
            self._config = config["model"] if "model" in config else config
        return self._config

    def model(self) -> OmniIML:
        if self._model is None:
            import torch

            from forgectl.backends.base import load_checked_state
            from forgectl.nets.omni import OmniIML

            torch.set_num_threads(torch_threads())
            try:
                model = OmniIML(self.model_config(), with_box_head=False, pretrained=False)
            except (KeyError, TypeError, ValueError) as exc:
                raise WeightsError(f"omni model card config is invalid: {exc}") from exc
            load_checked_state(model, self.weights_path, TRAINING_ONLY_PREFIXES)
            self._model = model
        return self._model

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` the encoder expects. With ``runtime="onnx"`` they come from the
        contract embedded in the exported file, so that path never imports torch."""
        if self._norm is None:
            if self.runtime == "onnx":
                try:
                    spec = self.model_card()["export"]["inputs"]["image"]
                    self._norm = tuple(spec["mean"]), tuple(spec["std"])
                except (KeyError, TypeError) as exc:
                    raise WeightsError(f"{self.weights_path.name}: model card has no input "
                                       f"normalization ({exc})") from exc
            else:
                from forgectl.nets.encoders import encoder_entry

                entry = encoder_entry(self.model_config()["encoder"])
                self._norm = tuple(entry.mean), tuple(entry.std)
        return self._norm

    # ------------------------------------------------------------------ inference

    def torch_runner(self) -> TileRunner:
        """The PyTorch model as a :data:`TileRunner` (``gate`` is NaN unless the gate ran)."""
        import torch

        model = self.model()
        # "No JPEG data" travels as route 1 (RGB only), as in the exported graph.
        has_jpeg = torch.tensor([True])

        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            x, d, q = (torch.from_numpy(feeds[k]) for k in ("image", "dct", "qtable"))
            route = int(feeds["route"][0])
            with torch.inference_mode():
                if route == ROUTE_GATE:
                    out = model(x, d, q, has_jpeg)
                    gate = torch.sigmoid(out["gate_logit"]).float().numpy()
                else:
                    # A fixed route skips the gate, and on the RGB route the frequency stream.
                    out = model(x, d, q, has_jpeg, use_rgb=torch.tensor([route == ROUTE_RGB]))
                    gate = np.full(1, np.nan, np.float32)
                return {"mask": torch.sigmoid(out["mask"]).float().numpy(), "gate": gate,
                        "use_rgb": out["use_rgb"].numpy()}

        return run

    def _tile_feeds(self, rgb: np.ndarray, idx: np.ndarray, qtable: np.ndarray, tile: Any,
                    route: int) -> dict[str, np.ndarray]:
        """One tile's network inputs (shapes in :func:`tile_graph`)."""
        mean, std = self.normalization()
        win = (slice(tile.y0, tile.y0 + tile.height), slice(tile.x0, tile.x0 + tile.width))
        return {
            "image": np.ascontiguousarray(normalize_rgb(rgb[win], mean, std)[None]),
            "dct": np.ascontiguousarray(idx[win])[None],
            "qtable": qtable[None],
            "route": np.array([route], np.int64),
        }

    def _gated_tiles(self, run: TileRunner, plan: Any, rgb: np.ndarray, idx: np.ndarray,
                     qtable: np.ndarray, acc: Any) -> tuple[float, bool, list[Any]]:
        """Decide the image's route and decode the tiles the gate looked at.

        Up to ``gate_tiles`` tiles spread over the image run the full model, the gate deciding
        per tile; their area-weighted mean gate probability is the image's decision. Those
        whose own route agrees are kept, the others are decoded again on the image's route.
        Returns ``(probability, use_rgb, tiles still to decode)``.
        """
        tiles = list(plan.tiles)
        k = min(len(tiles), self.gate_tiles)
        chosen = sorted({round(i * (len(tiles) - 1) / max(1, k - 1)) for i in range(k)})
        probs, areas, heats = [], [], []
        for i in chosen:
            tile = tiles[i]
            out = run(self._tile_feeds(rgb, idx, qtable, tile, ROUTE_GATE))
            probs.append(float(out["gate"][0]))
            areas.append(max(1, min(tile.height, plan.height - tile.y0)
                             * min(tile.width, plan.width - tile.x0)))
            heats.append((bool(out["use_rgb"][0]), out["mask"][0, 0]))
        gate_p = float(np.average(probs, weights=areas))
        use_rgb = gate_p >= 0.5
        pending = [t for j, t in enumerate(tiles) if j not in chosen]
        for i, (tile_rgb, heat) in zip(chosen, heats, strict=True):
            if tile_rgb == use_rgb:
                acc.add(tiles[i], heat)
            else:
                pending.append(tiles[i])
        return gate_p, use_rgb, pending

    def analyze(self, image: ForensicImage) -> Result:
        from forgectl.nets.tiling import BlendAccumulator, pad_to, plan_tiles

        run = self.tile_runner()
        clip = int(self.model_config()["frequency"].get("clip", 20))
        idx, qtable, has_jpeg = dct_planes(image, clip)
        plan = plan_tiles(image.height, image.width, self.tile, self.overlap, MULTIPLE)
        # Pad, never resize: the DCT grid must stay where the encoder put it.
        rgb = pad_to(image.rgb, plan.padded_height, plan.padded_width)
        idx = pad_to(idx, plan.padded_height, plan.padded_width)

        acc = BlendAccumulator(plan)
        gate_p: float | None = None
        use_rgb = True  # images without JPEG data: RGB route, frequency stream skipped
        pending = list(plan.tiles)
        if has_jpeg:
            gate_p, use_rgb, pending = self._gated_tiles(run, plan, rgb, idx, qtable, acc)
        route = ROUTE_RGB if use_rgb else ROUTE_FUSED
        for tile in pending:
            out = run(self._tile_feeds(rgb, idx, qtable, tile, route))
            acc.add(tile, np.asarray(out["mask"][0, 0], np.float32))
        heat = acc.result()

        facts: dict[str, Any] = {
            "modality": "rgb" if use_rgb else "fused",
            "gate_probability": None if gate_p is None else round(gate_p, 4),
            "gate_rule": "rgb when P(RGB alone is better) >= 0.5",
            "frequency_stream": "used" if has_jpeg else f"not applicable: {image.format}",
            "tiles": len(plan.tiles),
            "gate_tiles": min(len(plan.tiles), self.gate_tiles) if has_jpeg else 0,
            "tile_size": None if plan.single else self.tile,
            "encoder": self.model_config().get("encoder"),
        }
        note = "" if has_jpeg else (
            f"{image.format} input has no DCT coefficients: RGB stream only (gate forced to RGB)"
        )
        return Result.from_heatmap(heat, self.threshold, note=note, facts=facts)

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note or "not applicable to this input"
        f = result.facts
        if f.get("gate_probability") is None:
            route = "RGB stream only (no JPEG coefficients)"
        elif f.get("modality") == "rgb":
            route = f"RGB stream (gate P(RGB better) = {f['gate_probability']:.2f})"
        else:
            route = f"RGB + DCT stream (gate P(RGB better) = {f['gate_probability']:.2f})"
        return (
            f"Omni-IML via the {route} flags {100 * result.tampered_fraction:.1f}% of pixels "
            f"as manipulated at threshold {self.threshold:.2f}; image score {result.score:.2f}"
        )

    # ------------------------------------------------------------------ export

    def export_graph(self) -> ExportGraph:
        """:func:`tile_graph` of the loaded model, its trace example and its contract."""
        mean, std = self.normalization()
        clip = int(self.model_config()["frequency"].get("clip", 20))
        rng = np.random.default_rng(0)
        h, w = TRACE_SIZE
        example = {
            "image": rng.standard_normal((1, 3, h, w)).astype(np.float32),
            "dct": rng.integers(0, clip + 1, (1, h, w)).astype(np.uint8),
            "qtable": rng.integers(1, 64, (1, 8, 8)).astype(np.int64),
            "route": np.array([ROUTE_GATE], np.int64),
        }
        contract = {
            "inputs": {
                "image": {"shape": [1, 3, "height", "width"], "dtype": "float32",
                          "meaning": "RGB, channels first, (rgb / 255 - mean) / std",
                          "mean": list(mean), "std": list(std)},
                "dct": {"shape": [1, "height", "width"], "dtype": "uint8",
                        "meaning": f"min(|quantized Y DCT coefficient|, {clip}) on the file's "
                        "own 8x8 grid, block (i, j) at [8i:8i+8, 8j:8j+8] in natural order; "
                        "zeros without JPEG data", "clip": clip},
                "qtable": {"shape": [1, 8, 8], "dtype": "int64",
                           "meaning": "Y quantization steps in natural (row-major) order; "
                           "ones without JPEG data"},
                "route": {"shape": [1], "dtype": "int64",
                          "meaning": f"{ROUTE_GATE}: the gate decides; {ROUTE_FUSED}: RGB + "
                          f"DCT; {ROUTE_RGB}: RGB only (inputs without JPEG data)"},
            },
            "outputs": {
                "mask": {"shape": [1, 1, "height", "width"], "dtype": "float32",
                         "meaning": "probability that each pixel was manipulated"},
                "gate": {"shape": [1], "dtype": "float32",
                         "meaning": "gate's P(RGB alone is better); computed on every route"},
                "use_rgb": {"shape": [1], "dtype": "bool",
                            "meaning": "route taken (True: RGB only)"},
            },
            "constraints": {
                "batch": 1,
                "multiple": MULTIPLE,
                "padding": "pad bottom/right to multiples of 32, RGB with 0 before normalizing "
                "and dct with 0; never resize (the DCT grid must stay aligned)",
            },
            "tiling": {"tile": self.tile, "overlap": self.overlap,
                       "gate_tiles": self.gate_tiles},
        }
        return ExportGraph(
            module=tile_graph(self.model()),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes={"image": {2: "height", 3: "width"}, "dct": {1: "height", 2: "width"},
                          "mask": {2: "height", 3: "width"}},
            example=example,
            contract=contract,
        )


# ====================================================================== training recipe


def _recipe_config(name: str, training: dict[str, Any]) -> dict[str, Any]:
    from forgectl.nets.encoders import encoder_entry
    from forgectl.nets.omni import omni_config

    model = omni_config(name)
    source = encoder_entry(model["encoder"]).pretrained_source if model["pretrained"] else None
    return {**training, "model": model,
            "pretrained": f"ImageNet weights from {source}" if source else None}


class OmniRecipe(Recipe):
    """How Omni-IML is trained on synthetic samples.

    ``prepare``: a ``crop x crop`` window on the 8x8 grid (padded when the image is smaller;
    with probability ``focus_prob`` it contains a random manipulated pixel), random horizontal
    and vertical flips that move whole blocks (the DCT magnitudes stay valid), the Y DCT
    indices and table (zeros and a ``has_jpeg = False`` flag for non-JPEG files, which forces
    the RGB route), and the boxes of the mask's components clipped to the crop.

    ``loss``: BCE + Dice on the final mask; BCE on the decoder's coarse mask (stride 4) and on
    both gate heads' coarse masks (stride 8; the fused one only for JPEG samples); BCE of the
    gate classifier against the IoU rule (JPEG samples only); the box-branch losses.
    """

    name = "omni"

    def __init__(self) -> None:
        training = {
            "crop": 256, "batch_size": 8, "lr": 3e-4, "weight_decay": 0.05, "steps": 6000,
            "warmup_steps": 200, "min_lr_ratio": 0.02, "grad_clip": 1.0,
            "focus_prob": 0.5, "flip_prob": 0.5,
            "loss_weights": {"bce": 1.0, "dice": 1.0, "decoder_coarse": 0.4, "coarse_rgb": 0.4,
                             "coarse_fused": 0.4, "gate": 0.2, "box": 0.2},
        }
        paper = {**training, "crop": 512, "batch_size": 16, "lr": 1e-4, "steps": 100000,
                 "warmup_steps": 1000}
        self.configs = {"tiny": _recipe_config("tiny", training),
                        "paper": _recipe_config("paper", paper),
                        "tiny-scratch": _recipe_config("tiny-scratch", training)}

    def build_model(self, config: dict[str, Any]) -> torch.nn.Module:
        from forgectl.nets.omni import OmniIML

        return OmniIML(config["model"], with_box_head=True)

    def prepare(self, sample: SynthSample, config: dict[str, Any], rng: np.random.Generator
                ) -> dict[str, Any]:
        import torch

        from forgectl.nets.encoders import encoder_entry
        from forgectl.nets.frequency import flip_blocks
        from forgectl.nets.tiling import pad_to, random_grid_origin

        crop = int(config["crop"])
        if crop % MULTIPLE:
            raise UsageError(f"omni: crop must be a multiple of {MULTIPLE}")
        model_cfg = config["model"]
        image = sample.image
        idx, qtable, has_jpeg = dct_planes(image, int(model_cfg["frequency"]["clip"]))
        mask = (np.asarray(sample.mask) > 0).astype(np.uint8)
        focus_y = focus_x = None
        if mask.any() and rng.random() < float(config.get("focus_prob", 0.0)):
            ys, xs = np.nonzero(mask)
            pick = int(rng.integers(len(ys)))
            focus_y, focus_x = int(ys[pick]), int(xs[pick])
        y0 = random_grid_origin(image.height, crop, rng, focus_y)
        x0 = random_grid_origin(image.width, crop, rng, focus_x)
        win = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        rgb = pad_to(image.rgb[win], crop, crop)
        mask = pad_to(mask[win], crop, crop)
        idx = pad_to(idx[win], crop, crop)
        boxes = _crop_boxes(np.asarray(sample.boxes, np.float32).reshape(-1, 4), x0, y0, mask)
        flip_p = float(config.get("flip_prob", 0.0))
        for axis in (0, 1):
            if rng.random() < flip_p:
                rgb = np.flip(rgb, axis)
                mask = np.flip(mask, axis)
                idx = flip_blocks(idx, axis)
                lo, hi = (1, 3) if axis == 0 else (0, 2)
                boxes[:, [lo, hi]] = crop - boxes[:, [hi, lo]]
        entry = encoder_entry(model_cfg["encoder"])
        return {
            "image": torch.from_numpy(normalize_rgb(np.ascontiguousarray(rgb), entry.mean,
                                                    entry.std)),
            "dct": torch.from_numpy(np.ascontiguousarray(idx)),
            "qtable": torch.from_numpy(qtable),
            "has_jpeg": torch.tensor(has_jpeg),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None],
            "boxes": torch.from_numpy(boxes),
        }

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        out: dict[str, Any] = {}
        for key in items[0]:
            values = [it[key] for it in items]
            out[key] = values if key == "boxes" else torch.stack(values)
        return out

    def loss(self, model: torch.nn.Module, batch: dict[str, Any], config: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        import torch.nn.functional as F

        from forgectl.training.losses import bce_loss, combine, dice_loss

        mask = batch["mask"].float()
        has_jpeg = batch["has_jpeg"].bool()
        out = model(batch["image"], batch["dct"], batch["qtable"], has_jpeg, mask_target=mask,
                    boxes=batch["boxes"] if model.training else None)
        small = F.adaptive_avg_pool2d(mask, out["coarse_rgb"].shape[-2:])
        terms = {
            "bce": bce_loss(out["mask"], mask),
            "dice": dice_loss(out["mask"], mask),
            "decoder_coarse": bce_loss(
                out["decoder_coarse"],
                F.adaptive_avg_pool2d(mask, out["decoder_coarse"].shape[-2:])),
            "coarse_rgb": bce_loss(out["coarse_rgb"], small),
        }
        if out["coarse_fused"] is not None and bool(has_jpeg.any()):
            terms["coarse_fused"] = bce_loss(out["coarse_fused"][has_jpeg], small[has_jpeg])
            terms["gate"] = F.binary_cross_entropy_with_logits(
                out["gate_logit"][has_jpeg], out["gate_label"][has_jpeg].float())
            terms["gate_rgb_share"] = out["gate_label"][has_jpeg].float().mean().detach()
        weights = dict(config.get("loss_weights", {}))
        weights["gate_rgb_share"] = 0.0  # logged, not optimized
        for key, value in out["box_losses"].items():
            terms[key] = value
            weights[key] = weights.get("box", 1.0)
        return combine(terms, weights)

    def predict(self, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        import torch

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(batch["image"], batch["dct"], batch["qtable"],
                            batch["has_jpeg"].bool())
            return torch.sigmoid(out["mask"])
        finally:
            model.train(was_training)


def _crop_boxes(boxes: np.ndarray, x0: int, y0: int, mask: np.ndarray) -> np.ndarray:
    """Boxes of the full image -> boxes in a crop, each tightened to its mask pixels there.

    A component cut by the crop keeps only its visible part; boxes with no manipulated pixel
    left are dropped. Returns (N, 4) float32 ``x0, y0, x1, y1`` (exclusive ends).
    """
    h, w = mask.shape
    out = []
    for bx0, by0, bx1, by1 in boxes:
        cx0, cy0 = max(0, int(np.floor(bx0)) - x0), max(0, int(np.floor(by0)) - y0)
        cx1, cy1 = min(w, int(np.ceil(bx1)) - x0), min(h, int(np.ceil(by1)) - y0)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        ys, xs = np.nonzero(mask[cy0:cy1, cx0:cx1])
        if len(ys) == 0:
            continue
        out.append([cx0 + xs.min(), cy0 + ys.min(), cx0 + xs.max() + 1, cy0 + ys.max() + 1])
    return np.asarray(out, np.float32).reshape(-1, 4)


def training_recipe() -> Recipe:
    """The recipe the shared trainer uses for ``forgectl train omni``."""
    return OmniRecipe()
