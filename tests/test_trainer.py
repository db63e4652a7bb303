"""The shared trainer: a toy recipe learns, a killed run resumes to the same weights, shipping.

A toy :class:`Recipe` (three convolutions predicting the mask from RGB) trains on a fake sample
source: small photo-like images in which a rectangle got strong pixel noise (the "forgery"),
so the task is learnable in a few dozen steps on one core.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from forgectl import registry
from forgectl.backends.base import MethodSpec, Result
from forgectl.backends.learned import LearnedBackend
from forgectl.errors import UsageError
from forgectl.intake import ForensicImage, image_from_array
from forgectl.synth.sample import SynthSample
from forgectl.training import losses
from forgectl.training.recipe import Recipe
from forgectl.training.trainer import (
    RunOptions,
    Schedule,
    TrainData,
    Trainer,
    TrainingInterrupted,
)
from forgectl.weights import read_tensors as load_tensors
from forgectl.weights import sha256_file
from tests.helpers import natural_image

REPO = Path(__file__).resolve().parent.parent
SIZE = 40  # image side of the fake samples
CROP = 32


class NoisePatchSource:
    """Deterministic fake engine: sample i = a photo-like image, 3 in 4 with a noisy rectangle."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.bases = [natural_image(SIZE, SIZE, seed=s) for s in range(4)]

    def sample(self, index: int) -> SynthSample:
        rng = np.random.default_rng([self.seed, index])
        rgb = self.bases[index % 4].astype(np.float32)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        if rng.random() < 0.75:
            h, w = rng.integers(10, 22, 2)
            y, x = rng.integers(0, SIZE - h), rng.integers(0, SIZE - w)
            mask[y : y + h, x : x + w] = 1
            rgb[y : y + h, x : x + w] += rng.normal(0, 25, (h, w, 3))
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
        return SynthSample(
            image=image_from_array(rgb),
            file_bytes=b"",
            file_ext=".png",
            mask=mask,
            boxes=np.zeros((0, 4), np.float32),
            kind="splice" if mask.any() else "authentic",
            seed=index,
        )


class ToyNet(nn.Module):
    """A fixed high-pass residual (as forensic nets start) and three convolutions (with
    ``norm``, batch norm after the first; with ``head``, a second, batch-normed 1x1 head added
    to the output: for partial training)."""

    def __init__(self, width: int, head: bool = False, norm: bool = False) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width) if norm else nn.Identity(),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 1, 1),
        )
        self.head = nn.Sequential(nn.Conv2d(3, 1, 1), nn.BatchNorm2d(1)) if head else None

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) mask logits."""
        residual = rgb - F.avg_pool2d(rgb, 3, 1, 1, count_include_pad=False)
        out = self.convs(10.0 * residual)
        return out if self.head is None else out + self.head(10.0 * residual)


class ToyRecipe(Recipe):
    name = "toy"
    configs = {
        "tiny": {
            "width": 8,
            "crop": CROP,
            "batch_size": 8,
            "lr": 1e-2,
            "steps": 40,
            "warmup_steps": 3,
            "loss": {"bce": 1.0, "dice": 0.5},
        },
    }

    def build_model(self, config: dict[str, Any]) -> nn.Module:
        if "model" in config:  # ModelToyRecipe
            return ToyNet(config["model"]["width"], config["model"]["head"], norm=True)
        return ToyNet(config["width"])

    def prepare(
        self, sample: SynthSample, config: dict[str, Any], rng: np.random.Generator
    ) -> dict[str, Any]:
        c = config["crop"]
        h, w = sample.mask.shape
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        rgb = sample.image.rgb[y : y + c, x : x + c].astype(np.float32) / 255.0
        mask = sample.mask[y : y + c, x : x + c].astype(np.float32)
        return {
            "image": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            "mask": torch.from_numpy(mask)[None],
        }

    def loss(
        self, model: nn.Module, batch: dict[str, Any], config: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return losses.mask_loss(config["loss"], model(batch["image"]), batch["mask"])

    def predict(self, model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        return torch.sigmoid(model(batch["image"]))


class ModelToyRecipe(ToyRecipe):
    """The toy with its network config under ``model`` (as the real recipes), so a warm start
    compares network configs."""

    configs = {"tiny": {**ToyRecipe.configs["tiny"], "model": {"width": 8, "head": False}}}


class ToyBackend(LearnedBackend):
    """The toy model as a backend (weights + card from the trainer), for the dev-set path."""

    spec = MethodSpec(
        name="toy", summary="test toy", kind="learned", weights="toy-tiny.safetensors"
    )
    OPTIONS = ()

    def build_network(self, config: dict[str, Any]) -> nn.Module:
        return ToyRecipe().build_model(config)

    def analyze(self, image: ForensicImage) -> Result:
        rgb = torch.from_numpy(image.rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            heatmap = torch.sigmoid(self.model()(rgb))[0, 0].numpy()
        return Result.from_heatmap(heatmap, self.threshold)


def make_trainer(
    run_dir: Path,
    steps: int = 40,
    on_step=None,
    out_dir: Path | None = None,
    resume: bool = False,
    **opts: Any,
) -> Trainer:
    recipe = opts.pop("recipe", None) or ToyRecipe()
    config = {**copy.deepcopy(recipe.configs["tiny"]), "steps": steps,
              **opts.pop("config", {})}
    data = TrainData(
        train=NoisePatchSource(0),
        val=NoisePatchSource(99),
        info={"source": "NoisePatchSource (test fake)"},
    )
    options = RunOptions(
        run_dir=run_dir,
        out_dir=out_dir,
        seed=3,
        threads=1,
        resume=resume,
        progress=False,
        val_samples=8,
        **{"val_every": 10, "ckpt_every": 4, "workers": 0, **opts},
    )
    evaluator = None
    if opts.get("dev") is not None:
        from forgectl.evaluation.runner import dev_evaluator

        evaluator = dev_evaluator("toy", opts["dev"], opts.get("dev_limit"))
    return Trainer(recipe, "tiny", config, data, options, on_step=on_step,
                   dev_evaluator=evaluator)


def log_records(run_dir: Path, event: str) -> list[dict[str, Any]]:
    lines = (run_dir / "train.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def final_model(run_dir: Path) -> dict[str, torch.Tensor]:
    state = json.loads((run_dir / "checkpoint.json").read_text())
    tensors = load_tensors(run_dir / state["checkpoint"])
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted 12-step run (checkpoints every 4, validation every 10)."""
    run_dir = tmp_path_factory.mktemp("ref")
    make_trainer(run_dir, steps=12).run()
    return run_dir


def test_schedule_warmup_then_cosine() -> None:
    s = Schedule(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(9) == pytest.approx(1.0)
    assert s.lr_at(10) == pytest.approx(1.0)
    assert s.lr_at(55) == pytest.approx(0.1 + 0.9 * 0.5, abs=0.02)  # mid-decay
    assert s.lr_at(99) == pytest.approx(0.1, abs=0.01)
    lrs = [s.lr_at(i) for i in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_toy_model_loss_falls(tmp_path: Path) -> None:
    summary = make_trainer(tmp_path, steps=40, ckpt_every=0).run()
    steps = log_records(tmp_path, "step")
    assert [r["step"] for r in steps] == list(range(1, 41))
    first = np.mean([r["loss"] for r in steps[:8]])
    last = np.mean([r["loss"] for r in steps[-8:]])
    assert last < 0.6 * first, (first, last)
    # Validation ran on the synthetic set (at 10, 20, 30 and at the end) with pixel metrics.
    vals = log_records(tmp_path, "validation")
    assert [v["step"] for v in vals] == [10, 20, 30, 40]
    assert vals[-1]["val_n_tampered"] + vals[-1]["val_n_authentic"] == 8
    # It learned the forgery, not just the share of manipulated pixels (which scores F1 0).
    assert vals[-1]["val_loss"] < vals[0]["val_loss"]
    assert vals[-1]["val_f1"] > 0.7 and vals[-1]["val_pixel_auc"] > 0.9
    assert summary["best"]["metric"] == "val_f1"
    assert all(k in steps[0] for k in ("lr", "samples_per_s", "grad_norm", "bce", "dice"))


def test_crashed_run_resumes_to_the_same_weights(tmp_path: Path, reference_run: Path) -> None:
    def crash(step: int, _record: dict[str, Any]) -> None:
        if step == 7:
            raise RuntimeError("simulated kill")

    with pytest.raises(RuntimeError, match="simulated kill"):
        make_trainer(tmp_path, steps=12, on_step=crash).run()
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["step"] == 4  # the last periodic checkpoint before the kill
    assert len(list(tmp_path.glob("ckpt-*.safetensors"))) == 1

    with pytest.raises(UsageError, match="--resume"):
        make_trainer(tmp_path, steps=12).run()
    make_trainer(tmp_path, steps=12, resume=True).run()
    assert log_records(tmp_path, "resume")[0]["step"] == 4
    resumed = [r["step"] for r in log_records(tmp_path, "step")]
    assert resumed == [1, 2, 3, 4, 5, 6, 7] + list(range(5, 13))

    ref, got = final_model(reference_run), final_model(tmp_path)
    assert ref.keys() == got.keys() and len(ref) > 6
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


def test_sigterm_checkpoints_the_current_step(tmp_path: Path, reference_run: Path) -> None:
    def terminate(step: int, _record: dict[str, Any]) -> None:
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(TrainingInterrupted, match="SIGTERM at step 5/12"):
        make_trainer(tmp_path, steps=12, on_step=terminate).run()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 5
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    make_trainer(tmp_path, steps=12, resume=True).run()
    ref, got = final_model(reference_run), final_model(tmp_path)
    for key in ref:
        assert torch.equal(ref[key], got[key]), key

GROUP_STOP_SCRIPT = """
import sys, time
from pathlib import Path
from tests.test_trainer import make_trainer

def slow(step, record):
    if step == 5:
        Path(sys.argv[1], "ready").touch()
    time.sleep(0.3)

if __name__ == "__main__":
    make_trainer(Path(sys.argv[1]), steps=60, on_step=slow, workers=1).run()
"""


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_sigterm_to_the_process_group_still_checkpoints(tmp_path: Path) -> None:
    # A terminal's Ctrl-C or systemd's default stop signals every process of the group: the
    # DataLoader workers must not die of it before the main process has checkpointed.
    script = tmp_path / "group_stop.py"
    script.write_text(GROUP_STOP_SCRIPT)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir)], cwd=Path(__file__).parents[1],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "ready").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "the run never reached step 5"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert "TrainingInterrupted: SIGTERM at step" in out, out[-2000:]
    stopped = log_records(run_dir, "interrupted")[0]["step"]
    assert stopped >= 5  # not the periodic checkpoint at 4: the stop wrote its own
    assert json.loads((run_dir / "checkpoint.json").read_text())["step"] == stopped


def test_resume_refuses_a_different_config(tmp_path: Path, reference_run: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    with pytest.raises(UsageError, match="config"):
        make_trainer(run_dir, steps=20, resume=True).run()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_ships_weights_and_card(tmp_path: Path, dtype: str) -> None:
    out = tmp_path / "weights"
    card = make_trainer(tmp_path / "run", steps=10, out_dir=out, dtype=dtype, val_every=5).run()
    weights = out / "toy-tiny.safetensors"
    on_disk = json.loads((out / "toy-tiny.json").read_text())
    assert on_disk == card
    assert card["weights"]["sha256"] == sha256_file(weights)
    assert card["weights"]["dtype"] == dtype
    assert card["method"] == "toy" and card["config_name"] == "tiny"
    assert card["config"]["steps"] == 10
    assert card["training"]["optimizer"]["name"] == "AdamW"
    assert card["training"]["steps"] == 10 and card["training"]["batch_size"] == 8
    assert card["weights"]["selected"]["which"] == "best"
    assert card["metrics"]["best"]["step"] in (5, 10)
    assert card["data"] == {"source": "NoisePatchSource (test fake)"}
    tensors = load_tensors(weights)
    assert all(v.dtype == getattr(torch, dtype) for v in tensors.values())
    model = ToyRecipe().build_model(ToyRecipe.configs["tiny"])
    model.load_state_dict({k: v.float() for k, v in tensors.items()})  # loads cleanly


def test_dataloader_workers_give_the_same_batches(tmp_path: Path) -> None:
    from forgectl.training.trainer import RecipeDataset, make_loader

    recipe = ToyRecipe()
    config = recipe.configs["tiny"]
    dataset = RecipeDataset(NoisePatchSource(0), recipe, config, seed=3, length=4 * 8)
    inline = list(make_loader(dataset, recipe, 8, 1, 4, workers=0))
    pooled = list(make_loader(dataset, recipe, 8, 1, 4, workers=2))
    assert len(inline) == len(pooled) == 3
    for a, b in zip(inline, pooled, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])


def test_classical_method_cannot_be_trained() -> None:
    with pytest.raises(UsageError, match="cannot be trained"):
        registry.load_recipe("ela")
    with pytest.raises(UsageError, match="unknown method"):
        registry.load_recipe("no-such-method")


def test_cli_train_refuses_untrainable_method(tmp_path: Path) -> None:
    env = dict(os.environ, FORGECTL_DEBUG="")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "forgectl",
            "train",
            "--method",
            "ela",
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be trained" in lines[0]


def test_trains_on_the_real_engine_and_describes_the_data(tmp_path: Path) -> None:
    from forgectl.intake import encode_jpeg
    from forgectl.outputs import png_bytes
    from forgectl.training.trainer import corpus_data

    corpus = tmp_path / "corpus"
    for i in range(10):
        folder = corpus / ("pngs" if i % 2 else "jpegs")
        folder.mkdir(parents=True, exist_ok=True)
        rgb = natural_image(120, 160, seed=i)
        if i % 2:
            (folder / f"p{i}.png").write_bytes(png_bytes(rgb))
        else:
            (folder / f"j{i}.jpg").write_bytes(encode_jpeg(rgb, 85))
    recipe = ToyRecipe()
    config = dict(recipe.configs["tiny"], steps=2, batch_size=2, synth={"size_range": [64, 96]})
    data = corpus_data([corpus], config, seed=0, kinds=["splice", "authentic"])
    options = RunOptions(
        run_dir=tmp_path / "run",
        out_dir=tmp_path / "w",
        threads=1,
        progress=False,
        val_samples=2,
        val_every=0,
        ckpt_every=0,
    )
    card = Trainer(recipe, "tiny", config, data, options).run()
    info = card["data"]
    assert info["train_photos"] + info["val_photos"] <= 10 and info["train_photos"] >= 5
    assert set(info["photo_formats"]) <= {"PNG", "JPG"} and sum(info["photo_formats"].values())
    assert set(info["kinds"]) == {"splice", "authentic"}
    assert info["synth_config"]["size_range"] == [64, 96]
    assert "JPEG" in info["note"] and "licen" in info["note"].lower()
    assert set(info["licences_by_folder"]) <= {"pngs", "jpegs"}
    final = card["metrics"]["final"]
    assert final["val_n_tampered"] + final["val_n_authentic"] == 2


def test_dev_set_is_evaluated_with_the_backend_and_never_picks_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgectl import registry
    from forgectl.outputs import png_bytes

    monkeypatch.setitem(registry._ENTRIES, "toy",
                        registry.MethodEntry("toy", "tests.test_trainer:ToyBackend"))
    dev = tmp_path / "dev"
    source = NoisePatchSource(7)
    for i in range(4):
        sample = source.sample(i)
        folder = "images" if sample.mask.any() else "authentic"
        (dev / folder).mkdir(parents=True, exist_ok=True)
        (dev / folder / f"{i}.png").write_bytes(png_bytes(sample.image.rgb))
        if sample.mask.any():
            (dev / "masks").mkdir(exist_ok=True)
            (dev / "masks" / f"{i}.png").write_bytes(png_bytes(sample.mask * 255))
    card = make_trainer(
        tmp_path / "run", steps=6, out_dir=tmp_path / "w", dev=dev, val_every=3
    ).run()
    final = card["metrics"]["final"]
    assert final["dev_n"] == 4 and final["dev_errors"] == 0
    assert 0.0 <= final["dev_f1"] <= 1.0
    assert [v["step"] for v in log_records(tmp_path / "run", "validation")] == [3, 6]
    assert card["metrics"]["best"]["metric"] == "val_f1"
    assert not list((tmp_path / "run").glob(".dev-*"))  # temporary weights cleaned up
    with pytest.raises(UsageError, match="never used to choose"):
        RunOptions(run_dir=tmp_path, best_metric="dev_f1")


def test_warm_start_records_its_source_and_starts_from_its_weights(tmp_path: Path) -> None:
    first = make_trainer(tmp_path / "a", steps=30, out_dir=tmp_path / "a", ckpt_every=0).run()
    init = tmp_path / "a" / "toy-tiny.safetensors"
    fresh_loss = log_records(tmp_path / "a", "step")[0]["loss"]
    card = make_trainer(tmp_path / "b", steps=3, out_dir=tmp_path / "b", ckpt_every=0,
                        init=init).run()
    warm_loss = log_records(tmp_path / "b", "step")[0]["loss"]
    assert warm_loss < 0.7 * fresh_loss  # it starts where the first run ended, not from scratch
    got = card["training"]["init"]
    assert got["sha256"] == sha256_file(init) and got["steps"] == 30
    assert got["cpu_hours_total"] == first["training"]["cpu_hours_total"]
    assert card["training"]["cpu_hours_total"] > first["training"]["cpu_hours_total"]
    assert [(leg["how"], leg["from_step"], leg["to_step"]) for leg in card["training"]["legs"]] \
        == [("start", 0, 3)]


def test_warm_start_refuses_weights_of_another_method(tmp_path: Path) -> None:
    make_trainer(tmp_path / "a", steps=2, out_dir=tmp_path / "a", ckpt_every=0).run()
    card = json.loads((tmp_path / "a" / "toy-tiny.json").read_text())
    (tmp_path / "a" / "toy-tiny.json").write_text(json.dumps({**card, "method": "omni"}))
    with pytest.raises(UsageError, match="holds 'omni' weights"):
        make_trainer(tmp_path / "b", steps=2, init=tmp_path / "a" / "toy-tiny.safetensors").run()


def test_trainable_trains_only_those_modules_and_keeps_the_rest_in_inference(
    tmp_path: Path,
) -> None:
    recipe = ModelToyRecipe()
    head = {"model": {"width": 8, "head": True}}
    trainer = make_trainer(tmp_path / "a", steps=6, recipe=recipe,
                           config={**head, "trainable": ["head"]})
    trainer._build()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = final_model(tmp_path / "a")
    changed = {k[len("model."):] for k, v in after.items() if k.startswith("model.")
               and k[len("model."):] in before
               and not torch.equal(v.float(), before[k[len("model."):]].float())}
    # Weights *and* batch-norm statistics of the frozen part are untouched; the head moved.
    assert changed and all(k.startswith("head.") for k in changed), changed
    assert "convs.1.running_mean" in before  # a frozen batch norm that training mode would move
    assert "head.1.running_mean" in changed
    with pytest.raises(UsageError, match="has no module nope"):
        make_trainer(tmp_path / "b", steps=1, recipe=recipe,
                     config={**head, "trainable": ["nope"]}).run()


def test_warm_start_into_an_extended_network_loads_the_rest(tmp_path: Path) -> None:
    recipe = ModelToyRecipe()
    make_trainer(tmp_path / "a", steps=4, recipe=recipe, out_dir=tmp_path / "a",
                 ckpt_every=0).run()
    init = tmp_path / "a" / "toy-tiny.safetensors"
    trainer = make_trainer(tmp_path / "b", steps=1, recipe=recipe, init=init,
                           config={"model": {"width": 8, "head": True}})
    trainer._build()
    got = trainer._warm_start(init)
    assert got["new_tensors"] == ["head.0.bias", "head.0.weight", "head.1.bias",
                                  "head.1.num_batches_tracked", "head.1.running_mean",
                                  "head.1.running_var", "head.1.weight"]
    shipped = load_tensors(init)
    own = trainer.model.state_dict()
    assert all(torch.equal(own[k].float(), v.float()) for k, v in shipped.items())
    # A network that changes a shape does not extend: refused, with the tensor named.
    wider = make_trainer(tmp_path / "c", steps=1, recipe=recipe, init=init,
                         config={"model": {"width": 4, "head": False}})
    with pytest.raises(UsageError, match="does not extend.*convs"):
        wider.run()


def test_resume_with_init_starts_once_and_then_continues_in_legs(tmp_path: Path) -> None:
    make_trainer(tmp_path / "a", steps=4, out_dir=tmp_path / "a", ckpt_every=0).run()
    init = tmp_path / "a" / "toy-tiny.safetensors"

    def crash(step: int, _record: dict[str, Any]) -> None:
        if step == 5:
            raise RuntimeError("session ended")

    run = tmp_path / "long"
    with pytest.raises(RuntimeError, match="session ended"):  # no checkpoint yet: warm start
        make_trainer(run, steps=8, resume=True, init=init, on_step=crash).run()
    card = make_trainer(run, steps=8, resume=True, init=init, out_dir=run).run()
    assert len(log_records(run, "start")) == 1 and log_records(run, "resume")[0]["step"] == 4
    assert card["training"]["init"]["sha256"] == sha256_file(init)
    assert [(leg["how"], leg["from_step"], leg["to_step"]) for leg in card["training"]["legs"]] \
        == [("start", 0, 4), ("resume", 4, 8)]


def test_dotted_config_overrides() -> None:
    from forgectl.commands.train import _parse_settings
    from forgectl.training.trainer import run_config

    settings = _parse_settings(["lr=0.5", 'synth.kinds={"splice": 1}',
                                "synth.history.reshare_prob=0.25", "note=plain text"])
    assert settings["synth.kinds"] == {"splice": 1} and settings["note"] == "plain text"
    settings.pop("note")
    config = run_config(ToyRecipe(), "tiny", settings)
    assert config["lr"] == 0.5
    assert config["synth"] == {"kinds": {"splice": 1}, "history": {"reshare_prob": 0.25}}
    assert ToyRecipe.configs["tiny"]["lr"] == 1e-2  # the recipe's own config is untouched
    with pytest.raises(UsageError, match="unknown config key 'lrr'"):
        run_config(ToyRecipe(), "tiny", {"lrr": 1})
    with pytest.raises(UsageError, match="KEY=VALUE"):
        _parse_settings(["lr"])
