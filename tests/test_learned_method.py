"""A learned method defined only here (a one-convolution network) goes through the public path:
registry entry, recipe, ``forgectl train`` into a run folder, ``--ship`` into a (temporary)
weights folder, ``localize``, ``export`` with parity and ``localize --runtime onnx``, touching
no production file. What a new method needs is what this file writes: a network, a recipe, a
small backend, one registry entry.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from forgectl import registry
from forgectl.backends.base import MethodSpec, Result
from forgectl.backends.learned import ExportGraph, LearnedBackend
from forgectl.intake import ForensicImage, encode_jpeg
from forgectl.synth.sample import SynthSample
from forgectl.tiling import pad_to
from forgectl.training.recipe import Recipe
from tests.contract import BackendContract, RecipeContract
from tests.helpers import invoke, natural_image

torch.set_num_threads(1)
NAME = "oneconv"
CROP = 32


class OneConvNet(nn.Module):
    """``image (B, 3, H, W)`` in [0, 1] -> ``mask (B, 1, H, W)`` logits: one 3x3 convolution."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, int(config["kernel"]), padding=int(config["kernel"]) // 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


class OneConvTile(nn.Module):
    """The exported per-tile graph: probabilities."""

    def __init__(self, net: OneConvNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(image))


class OneConvRecipe(Recipe):
    name = NAME
    configs = {
        "tiny": {"model": {"kernel": 3}, "crop": CROP, "batch_size": 2, "lr": 1e-2, "steps": 3,
                 "warmup_steps": 1, "synth": {"size_range": [64, 96]}},
        "paper": {"model": {"kernel": 7}, "crop": 256, "batch_size": 16, "lr": 1e-3,
                  "steps": 1000},
    }

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        return OneConvNet(config["model"])

    def prepare(self, sample: SynthSample, config: dict[str, Any],
                rng: np.random.Generator) -> dict[str, Any]:
        rgb = pad_to(sample.image.rgb[:CROP, :CROP], CROP, CROP)
        mask = pad_to(np.asarray(sample.mask)[:CROP, :CROP], CROP, CROP)
        return {"image": torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255),
                "mask": torch.from_numpy((mask > 0).astype(np.float32))[None]}

    def loss(self, model: nn.Module, batch: dict[str, Any], config: dict[str, Any]
             ) -> tuple[torch.Tensor, dict[str, float]]:
        loss = nn.functional.binary_cross_entropy_with_logits(model(batch["image"]),
                                                              batch["mask"])
        return loss, {"bce": float(loss.detach())}

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(model(batch["image"]))


def recipe() -> Recipe:
    return OneConvRecipe()


class OneConvBackend(LearnedBackend):
    spec = MethodSpec(name=NAME, summary="one convolution (a test method)", kind="learned",
                      weights=f"{NAME}-tiny.safetensors")
    multiple = 8

    def build_network(self, config: dict[str, Any]) -> nn.Module:
        return OneConvNet(config)

    def export_graph(self) -> ExportGraph:
        example = {"image": np.random.default_rng(0).random((1, 3, 40, 56), np.float32)}
        return ExportGraph(
            module=OneConvTile(self.model()).eval(), input_names=("image",),
            output_names=("mask",),
            dynamic_axes={"image": {2: "height", 3: "width"}, "mask": {2: "height", 3: "width"}},
            example=example, contract={"inputs": {"image": "rgb / 255"}})

    def analyze(self, image: ForensicImage) -> Result:
        plan = self.plan(image.height, image.width)
        rgb = pad_to(image.rgb, plan.padded_height, plan.padded_width)

        def feeds(t: Any) -> dict[str, np.ndarray]:
            win = rgb[t.y0:t.y0 + t.height, t.x0:t.x0 + t.width]
            return {"image": np.ascontiguousarray(win.transpose(2, 0, 1), np.float32)[None] / 255}

        return Result.from_heatmap(self.blend(plan, feeds), self.threshold)


def _entry(status: str) -> registry.MethodEntry:
    return registry.MethodEntry(NAME, f"{__name__}:OneConvBackend", __name__, status)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Train and ship the test method through the CLI once; the weights folder and a photo."""
    root = tmp_path_factory.mktemp("oneconv")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"photo{i}.jpg").write_bytes(encode_jpeg(natural_image(120, 160, seed=i), 90))
    photo = root / "photo.jpg"
    photo.write_bytes(encode_jpeg(natural_image(72, 88, seed=9), 85))
    weights = root / "weights"
    with pytest.MonkeyPatch.context() as mp, registry.registered(_entry("untrained")):
        mp.setenv("FORGECTL_WEIGHTS_DIR", str(weights))
        listed = {r["name"]: r for r in json.loads(invoke(["methods", "--json"]).output)}
        assert listed[NAME]["status"] == "untrained"
        refused = invoke(["localize", photo, "-m", NAME, "--out", root / "no"])
        assert refused.exit_code == 2 and "not trained yet" in refused.output
        args = ["train", "-m", NAME, "-i", corpus, "--out", root / "run", "--threads", "1",
                "--workers", "0", "--val-samples", "2", "--val-every", "0", "--ship"]
        trained = invoke(args)
        assert trained.exit_code == 0, trained.output
        again = invoke([*args[:6], root / "run2", *args[7:]])
        assert again.exit_code == 2 and "add --force" in again.output
    return {"weights": weights, "run": root / "run", "photo": photo, "root": root}


@pytest.fixture
def ready(shipped, monkeypatch):
    """The method as it is once its weights ship: status ready, weights found."""
    monkeypatch.setenv("FORGECTL_WEIGHTS_DIR", str(shipped["weights"]))
    with registry.registered(_entry("ready")):
        yield shipped


def test_train_writes_a_run_folder_and_ships_only_on_request(shipped):
    run = shipped["run"]
    assert (run / "checkpoint.json").is_file() and (run / "train.jsonl").is_file()
    for folder in (run, shipped["weights"]):
        card = json.loads((folder / f"{NAME}-tiny.json").read_text())
        assert card["method"] == NAME and card["training"]["steps"] == 3
    assert sorted(p.name for p in shipped["weights"].iterdir()) == [
        f"{NAME}-tiny.json", f"{NAME}-tiny.safetensors"]


def test_shipped_method_localizes_and_exports_with_parity(ready):
    root, photo = ready["root"], ready["photo"]
    # In process (--no-isolate): the worker-process path is tested in test_reliability.py, and
    # each isolated run would start a fresh interpreter (CI time, issue #13).
    result = invoke(["localize", photo, "-m", NAME, "--no-isolate", "--out", root / "torch"])
    assert result.exit_code == 0, result.output
    onnx_file = root / f"{NAME}.onnx"
    result = invoke(["export", "-m", NAME, "--out", onnx_file])
    assert result.exit_code == 0, result.output
    assert "parity" in result.output
    result = invoke(["localize", photo, "-m", NAME, "--no-isolate", "--runtime", "onnx",
                     "--weights", onnx_file,
                     "--out", root / "onnx"])
    assert result.exit_code == 0, result.output
    masks = [np.asarray(Image.open(root / r / "photo.mask.png")) for r in ("torch", "onnx")]
    assert np.array_equal(*masks)


def test_option_typo_names_the_tiling_options(ready):
    result = invoke(["localize", ready["photo"], "-m", NAME, "-p", "tiel=64"])
    assert result.exit_code == 2 and "tile" in result.output and "overlap" in result.output


class TestOneConvContract(BackendContract):
    method = NAME

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls, shipped):
        with registry.registered(_entry("ready")):
            return OneConvBackend(weights=shipped["weights"] / f"{NAME}-tiny.safetensors")


class TestOneConvRecipe(RecipeContract):
    recipe_factory = staticmethod(recipe)


def test_average_with_mirror_mirrors_whole_blocks_only():
    from forgectl.backends.learned import average_with_mirror

    rgb = np.zeros((4, 21, 3), np.uint8)
    rgb[..., 0] = np.arange(21, dtype=np.uint8)  # red = column index
    seen = []

    def heatmap_of(mirrored: np.ndarray) -> np.ndarray:
        seen.append(mirrored.copy())
        return mirrored[..., 0].astype(np.float32) / 100.0  # a heatmap that follows the pixels

    heat = np.full((4, 21), 0.5, np.float32)
    out = average_with_mirror(heat, rgb, heatmap_of)
    # Only the 16 columns of whole 8x8 blocks are mirrored, and handed over mirrored.
    assert seen[0].shape == (4, 16, 3)
    np.testing.assert_array_equal(seen[0][0, :, 0], np.arange(15, -1, -1))
    # Mirrored back, the mirror's heatmap lines up with the image: column c reads c / 100.
    np.testing.assert_allclose(out[:, :16],
                               np.broadcast_to(0.5 * (0.5 + np.arange(16) / 100.0), (4, 16)),
                               rtol=1e-6)
    np.testing.assert_array_equal(out[:, 16:], heat[:, 16:])  # the partial block: single pass
    assert out is not heat and np.all(heat == 0.5)
    narrow = np.zeros((4, 7, 3), np.uint8)
    np.testing.assert_array_equal(average_with_mirror(heat[:, :7], narrow, heatmap_of),
                                  heat[:, :7])
    with pytest.raises(ValueError, match="does not match"):
        average_with_mirror(heat, narrow, heatmap_of)
