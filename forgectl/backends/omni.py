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

from forgectl.analysis.network_inputs import dct_planes, flip_blocks, normalize_rgb
from forgectl.backends.base import MethodSpec, Result
from forgectl.backends.learned import (
    ExportGraph,
    LearnedBackend,
    TileRunner,
    average_with_mirror,
    flip_option,
    tiling_options,
)
from forgectl.backends.options import Option
from forgectl.intake import ForensicImage

if TYPE_CHECKING:
    import torch

    from forgectl.nets.omni import OmniIML

PAPER = (
    "C. Qu, Y. Zhong, F. Guo, L. Jin, 'Omni-IML: Towards Unified Image Manipulation "
    "Localization', arXiv:2411.14823, 2024"
)
#: Network input sizes must be multiples of the encoder's last stride.
MULTIPLE = 32
#: Values of the per-tile network's ``route`` input: the gate decides, RGB + DCT, RGB only.
ROUTE_GATE, ROUTE_FUSED, ROUTE_RGB = -1, 0, 1
#: The per-tile network's inputs and outputs (the TileRunner contract, docs/EXPORT.md).
INPUT_NAMES = ("image", "dct", "qtable", "route")
OUTPUT_NAMES = ("mask", "gate", "use_rgb")
#: Size the export traces at (7 x 9 cells of 32): no parity sample has it, so a shape frozen
#: into the graph shows up as a parity failure.
TRACE_SIZE = (224, 288)


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
            dec, _ = net.decode(head["stage_outputs"], s8)
            mask = F.interpolate(dec["mask"], size=image.shape[-2:], mode="bilinear",
                                 align_corners=False)
            return torch.sigmoid(mask), torch.sigmoid(gate_logit), use_rgb

    return OmniTileGraph(model).eval()


class OmniBackend(LearnedBackend):
    """Omni-IML inference.

    Options: ``tile`` (tile size in pixels, multiple of 32, default 640), ``overlap`` (tile
    overlap, multiple of 8, default 32), ``gate_tiles`` (tiles of a large image the gate looks
    at, default 8). 640/32 came out of a sweep on 2 cores (``benchmarks/omni_speed.py sweep``):
    at 12 MP it processes 14.3 MP in 35 tiles where 384/64 processed 19.2 MP in 130, and on
    multi-tile images (casia1-dev upscaled 3x, and a mosaic of its images) its F1 was at least
    that of 384/64 (docs/PERFORMANCE.md). Images up to 640 px run as one tile either way.

    Runtimes: torch, onnx (``omni-tiny.onnx``) and int8 (``omni-tiny.int8.onnx``, statically
    quantized from the onnx twin by ``forgectl export --int8``; see :meth:`int8_float_nodes`).
    """

    spec = MethodSpec(
        name="omni",
        summary="Omni-IML: learned localizer, gate between RGB and RGB+JPEG-DCT streams",
        kind="learned",
        uses_jpeg=True,
        weights="omni-tiny.safetensors",
        paper=PAPER,
    )
    multiple = MULTIPLE
    runtimes = ("torch", "onnx", "int8")
    #: The training-only box branch, present in trained state dicts, unused at inference.
    training_only_prefixes = ("box_head.",)
    OPTIONS = (
        *tiling_options(tile=640, overlap=32),
        Option("gate_tiles", 8, "tiles of a large image the modal gate looks at", minimum=1,
               maximum=1024),
        flip_option(default=True),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tile = self.options["tile"]
        self.overlap = self.options["overlap"]
        self.gate_tiles = self.options["gate_tiles"]
        self.flip = bool(self.options["flip"])

    def build_network(self, config: dict[str, Any]) -> OmniIML:
        from forgectl.nets.omni import OmniIML

        return OmniIML(config, with_box_head=False, pretrained=False)

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

    # ------------------------------------------------------------------ int8

    #: What :meth:`int8_float_nodes` keeps in float, for the int8 twin's card.
    INT8_KEPT_FLOAT = (
        "stem and stage 0 of the RGB encoder (quantized they cost casia1-dev F1 0.02)",
        "the modal gate and every Sigmoid (probabilities near 0.5 decide the route)",
        "the mask heads: decoder classifier and the last 1x1 conv of each coarse head",
        "the decoder's per-image dynamic depth-wise kernels (weights made at run time)",
        "Add/Mul that are not residual (index and padding arithmetic, attention scaling)",
    )

    def int8_float_nodes(self, graph: Any) -> list[str]:
        """Names of the ONNX nodes of ``graph`` (an ``onnx.ModelProto`` after pre-processing)
        that the int8 twin keeps in float (:data:`INT8_KEPT_FLOAT`)."""
        producer = {o: n.op_type for n in graph.graph.node for o in n.output}
        heads = {"/coarse_rgb/coarse_rgb.1/Conv", "/coarse_fused/coarse_fused.1/Conv",
                 "/coarse_dct/coarse_dct.1/Conv",
                 "/decoder/coarse_head/coarse_head.1/Conv"}
        kept = []
        for node in graph.graph.node:
            name = node.name
            if (name.startswith(("/stages.0/", "/gate/", "/decoder/classifier")) or name in heads
                    or node.op_type == "Sigmoid"
                    or (node.op_type == "Conv" and name.startswith("/decoder/filters.")
                        and "pointwise" not in name)
                    or (node.op_type in ("Add", "Mul")
                        and not all(producer.get(i) in ("Conv", "Add") for i in node.input))):
                kept.append(name)
        return kept

    def calibration_feeds(self, image: ForensicImage, rng: np.random.Generator, count: int,
                          size: int = 384) -> list[dict[str, np.ndarray]]:
        """``count`` random ``size`` tiles of ``image`` on the 8-pixel grid, fed as
        :meth:`analyze` feeds them, on the RGB + DCT route. Adding RGB-route tiles (one in
        three) made the int8 heatmaps of pixel-only inputs further from float, not closer
        (mean |diff| 0.094 against 0.043 on the 120x88 PNG parity sample)."""
        from forgectl.tiling import Tile, pad_to, round_up

        clip = int(self.model_config()["frequency"].get("clip", 20))
        idx, qtable, _ = dct_planes(image, clip)
        ph, pw = max(size, round_up(image.height, 32)), max(size, round_up(image.width, 32))
        rgb, idx = pad_to(image.rgb, ph, pw), pad_to(idx, ph, pw)
        feeds = []
        for _ in range(count):
            y0 = 8 * int(rng.integers(0, (ph - size) // 8 + 1))
            x0 = 8 * int(rng.integers(0, (pw - size) // 8 + 1))
            feeds.append(self._tile_feeds(rgb, idx, qtable, Tile(y0, x0, size, size),
                                          ROUTE_FUSED))
        return feeds

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

    def _heatmap(self, rgb: np.ndarray, idx: np.ndarray, qtable: np.ndarray, has_jpeg: bool
                 ) -> tuple[np.ndarray, float | None, bool, Any]:
        """One pass over an image: ``rgb (H, W, 3)`` uint8 and its coefficient plane
        ``idx (H, W)`` on the same grid -> ``(heatmap (H, W), gate probability, use_rgb,
        plan)``."""
        from forgectl.tiling import BlendAccumulator, pad_to

        run = self.tile_runner()
        plan = self.plan(rgb.shape[0], rgb.shape[1])
        # Pad, never resize: the DCT grid must stay where the encoder put it.
        rgb = pad_to(rgb, plan.padded_height, plan.padded_width)
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
        return acc.result(), gate_p, use_rgb, plan

    @staticmethod
    def _mirrored_plane(idx: np.ndarray, w8: int) -> np.ndarray:
        """The coefficient plane of the image's first ``w8`` columns mirrored left-right: its
        8x8 blocks in mirrored order (:func:`flip_blocks`; a pixel mirror inside a block only
        changes coefficient signs, and the network reads magnitudes)."""
        h8 = -(-idx.shape[0] // 8) * 8
        plane = np.zeros((h8, w8), idx.dtype)
        plane[: idx.shape[0]] = idx[:, :w8]
        return flip_blocks(plane, axis=1)[: idx.shape[0]]

    def analyze(self, image: ForensicImage) -> Result:
        clip = int(self.model_config()["frequency"].get("clip", 20))
        idx, qtable, has_jpeg = dct_planes(image, clip)
        heat, gate_p, use_rgb, plan = self._heatmap(image.rgb, idx, qtable, has_jpeg)
        if self.flip:
            heat = average_with_mirror(
                heat, image.rgb, lambda mirrored: self._heatmap(
                    mirrored, self._mirrored_plane(idx, mirrored.shape[1]), qtable, has_jpeg)[0])

        facts: dict[str, Any] = {
            "modality": "rgb" if use_rgb else "fused",
            "gate_probability": None if gate_p is None else round(gate_p, 4),
            "gate_rule": "rgb when P(RGB alone is better) >= 0.5",
            "frequency_stream": "used" if has_jpeg else f"not applicable: {image.format}",
            "tiles": len(plan.tiles),
            "gate_tiles": min(len(plan.tiles), self.gate_tiles) if has_jpeg else 0,
            "tile_size": None if plan.single else self.tile,
            "encoder": self.model_config().get("encoder"),
            "flip": self.flip,
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
