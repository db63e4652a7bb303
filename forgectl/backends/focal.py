"""FOCAL: per-image contrastive features, clustered at test time instead of classified.

H. Wu, Y. Chen, J. Zhou, "Rethinking Image Forgery Detection via Contrastive Learning and
Unsupervised Clustering" (FOCAL), arXiv:2308.09307. "Forged" is relative within one image:
an extractor trained with InfoNCE++ (:class:`forgectl.nets.focal.FocalExtractor`) embeds every
pixel; one clustering of the whole image's embeddings decides the mask
(:func:`forgectl.analysis.clustering.cluster_map`).

Whole-image inference, not a blend of per-tile decisions: the image is padded to a multiple
of 32 and cut into overlapping tiles, each tile's stride-4 embeddings are blended into one
feature grid of the whole image, and that grid is clustered once. With two extractors
(``fusion``, default when the second file is shipped) each grid is L2-normalised, brought to
a common grid and concatenated (the paper's test-time fusion, no retraining).

Clustering (``-p cluster=``): ``hdbscan`` (the paper's; default) says "nothing found" when the
embeddings form one cluster (empty mask, score 0); ``kmeans`` reproduces the released code
(two clusters, the smaller one forged: it always marks something, also on authentic photos).
HDBSCAN's noise points are assigned to the nearest cluster; the largest cluster is pristine,
the others forged when they are separated from it (``min_separation``).

The exported graph (``forgectl export``) is the primary extractor on one tile; clustering
runs in numpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from forgectl.analysis.clustering import MIN_SEPARATION
from forgectl.analysis.network_inputs import normalize_rgb
from forgectl.backends.base import MethodSpec, Result
from forgectl.backends.learned import ExportGraph, LearnedBackend, tiling_options
from forgectl.backends.options import Option
from forgectl.errors import WeightsError
from forgectl.intake import ForensicImage
from forgectl.tiling import pad_to
from forgectl.weights import load_network, weights_dir

PAPER = (
    "H. Wu, Y. Chen, J. Zhou, 'Rethinking Image Forgery Detection via Contrastive Learning "
    "and Unsupervised Clustering' (FOCAL), arXiv:2308.09307, 2023"
)
MULTIPLE = 32
STRIDE = 4
SECOND_WEIGHTS = "focal-tiny-hrnet.safetensors"
TRACE_SIZE = (160, 224)


class FocalBackend(LearnedBackend):
    """FOCAL inference: whole-image features (tiled extraction), one clustering."""

    spec = MethodSpec(
        name="focal",
        summary="FOCAL: per-image contrastive features clustered by HDBSCAN (no classifier)",
        kind="learned",
        weights="focal-tiny-lite0.safetensors",
        paper=PAPER,
        decides_mask=True,
    )
    multiple = MULTIPLE
    OPTIONS = (
        Option("cluster", "hdbscan", "hdbscan (the paper's; can say nothing found) or kmeans "
               "(the released code: two clusters, always marks something)",
               choices=("hdbscan", "kmeans")),
        Option("fusion", True, f"fuse with the second extractor ({SECOND_WEIGHTS}) when it "
               "is shipped"),
        Option("second_weights", "", f"second extractor's weights (default {SECOND_WEIGHTS})"),
        Option("min_separation", MIN_SEPARATION, "separation from the pristine cluster a "
               "cluster needs to count as forged (HDBSCAN; 0 = the paper's plain rule)",
               minimum=0.0),
        *tiling_options(tile=512, overlap=64),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second: Any = None

    def build_network(self, config: dict[str, Any]) -> Any:
        from forgectl.nets.focal import FocalExtractor

        return FocalExtractor({**config, "pretrained": False})

    def second_path(self) -> Path | None:
        """The second extractor's weights when fusion applies, else None."""
        if not self.options["fusion"]:
            return None
        given = self.options["second_weights"]
        path = Path(given) if given else weights_dir() / SECOND_WEIGHTS
        if given and not path.is_file():
            raise WeightsError(f"second focal extractor not found: {path}")
        return path if path.is_file() else None

    def _features(self, rgb: np.ndarray, config: dict[str, Any], run: Any) -> np.ndarray:
        """(H, W, 3) uint8 -> (D, ceil(H/4), ceil(W/4)) blended embeddings of one extractor."""
        if run is None:  # this method's own extractor, on its runtime
            mean, std = self.normalization()
        else:  # the second extractor (PyTorch)
            from forgectl.nets.focal import input_normalization

            mean, std = input_normalization(config)
        plan = self.plan(rgb.shape[0], rgb.shape[1])
        padded = pad_to(rgb, plan.padded_height, plan.padded_width)

        def feeds(t: Any) -> dict[str, np.ndarray]:
            win = padded[t.y0:t.y0 + t.height, t.x0:t.x0 + t.width]
            return {"image": np.ascontiguousarray(normalize_rgb(win, mean, std)[None])}

        if run is None:
            return self.blend(plan, feeds, output="features", channels=int(config["dim"]),
                              stride=STRIDE)
        with self.running(run):
            return self.blend(plan, feeds, output="features", channels=int(config["dim"]),
                              stride=STRIDE)

    def torch_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        from forgectl.nets.focal import input_normalization

        # A focal config may set its own mean/std instead of its encoder's.
        return input_normalization(self.model_config())

    def _second_runner(self, path: Path) -> tuple[Any, dict[str, Any]]:
        import torch

        from forgectl.nets.focal import FocalExtractor

        if self._second is None:
            net, card = load_network(path, lambda c: FocalExtractor({**c, "pretrained": False}))
            config = card["config"].get("model", card["config"])

            def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                with torch.inference_mode():
                    return {"features": net(torch.from_numpy(feeds["image"])).numpy()}

            self._second = (run, config)
        return self._second

    def analyze(self, image: ForensicImage) -> Result:
        from forgectl.analysis.clustering import (
            calibrated_score,
            cluster_map,
            fuse_features,
            project_2d,
            projection_figure,
            structure_features,
        )

        config = self.model_config()
        grid = (-(-image.height // STRIDE), -(-image.width // STRIDE))
        feats = self._features(image.rgb, config, None)
        names = [config.get("backbone", "extractor")]
        second = self.second_path()
        if second is not None:
            run, second_config = self._second_runner(second)
            feats = fuse_features([feats, self._features(image.rgb, second_config, run)], grid)
            names.append(second_config.get("backbone", "second"))
        clustering = {**config.get("clustering", {}), "method": self.options["cluster"],
                      "min_separation": self.options["min_separation"]}
        found = cluster_map(feats, **clustering)
        mask = np.repeat(np.repeat(found.mask, STRIDE, 0), STRIDE, 1)[:image.height, :image.width]
        labels = np.repeat(np.repeat(found.labels, STRIDE, 0), STRIDE, 1)
        labels = labels[:image.height, :image.width].astype(np.float32)
        cluster_view = labels / max(1.0, float(labels.max())) if labels.max() > 0 else labels
        structure = structure_features(found)
        score, score_kind = found.score, "raw cluster-structure score (no calibration)"
        calibration = self.model_card().get("calibration") or {}
        if calibration.get("setup") == self.score_setup(second is not None):
            score, score_kind = calibrated_score(structure, calibration["coef"]), "calibrated"
        elif calibration:
            score_kind = "raw cluster-structure score (the calibration is for another setup)"
        facts = {**found.facts, "extractors": names, "fused": second is not None,
                 "clusters_found": int(len(found.sizes)), "structure": structure,
                 "score_kind": score_kind}
        note = "" if mask.any() else "one cluster of features: nothing found"
        points, point_labels = project_2d(feats, found.labels, n=2000)
        pristine = int(np.argmax(found.sizes)) if len(found.sizes) else None
        figure = projection_figure(points, point_labels, pristine)
        return Result(heatmap=mask.astype(np.float32), mask=mask, score=score,
                      maps={"clusters": np.clip(cluster_view, 0.0, 1.0)}, facts=facts,
                      note=note, figures={"features in 2-D (PCA), by cluster": figure})

    def score_setup(self, fused: bool) -> dict[str, Any]:
        """What a score calibration depends on; it applies only to results made the same way."""
        return {"cluster": self.options["cluster"], "fused": fused,
                "min_separation": self.options["min_separation"]}

    def parity_output(self, image: ForensicImage) -> tuple[np.ndarray, dict[str, Any]]:
        """The primary extractor's blended features: what the exported graph computes."""
        return self._features(image.rgb, self.model_config(), None), {}

    def reading(self, result: Result) -> str:
        if not result.applicable:
            return result.note or "not applicable to this input"
        f = result.facts
        if not result.mask.any():
            return (f"FOCAL ({'+'.join(f.get('extractors', []))}) found {f.get('clusters_found')}"
                    " cluster(s) of features and no separate region: nothing found.")
        return (f"FOCAL ({'+'.join(f.get('extractors', []))}) found "
                f"{f.get('clusters_found')} clusters; {100 * result.tampered_fraction:.1f}% of "
                f"pixels lie outside the largest (pristine) one; score {result.score:.2f}")

    def export_graph(self) -> ExportGraph:
        import torch

        from forgectl.nets.focal import input_normalization

        config = self.model_config()
        mean, std = input_normalization(config)
        h, w = TRACE_SIZE
        example = {"image": np.random.default_rng(0).standard_normal((1, 3, h, w))
                   .astype(np.float32)}

        class Features(torch.nn.Module):
            def __init__(self, net: Any) -> None:
                super().__init__()
                self.net = net

            def forward(self, image: torch.Tensor) -> torch.Tensor:
                return self.net(image)

        contract = {
            "inputs": {"image": {"shape": [1, 3, "height", "width"], "dtype": "float32",
                                 "meaning": "RGB, (rgb / 255 - mean) / std", "mean": list(mean),
                                 "std": list(std)}},
            "outputs": {"features": {"shape": [1, int(config["dim"]), "height/4", "width/4"],
                                     "dtype": "float32",
                                     "meaning": "pixel embeddings at stride 4 (clustered in "
                                     "numpy over the whole image)"}},
            "constraints": {"batch": 1, "multiple": MULTIPLE},
        }
        return ExportGraph(
            module=Features(self.model()).eval(), input_names=("image",),
            output_names=("features",),
            dynamic_axes={"image": {2: "height", 3: "width"},
                          "features": {2: "height4", 3: "width4"}},
            example=example, contract=contract)
