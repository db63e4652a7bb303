"""The shared, method-agnostic training loop: a :class:`~forgectl.training.recipe.Recipe` on
synthetic forgeries, with checkpoints, resumption, validation and a model card.

Data: sample ``i`` of the run is ``recipe.prepare(engine.sample(i), config, rng_i)`` with
``rng_i = np.random.default_rng([seed, i])``; step ``s`` consumes samples ``s*B .. s*B+B-1``.
Every sample depends only on ``(seed, i)``, so DataLoader worker processes (prefetch) change
nothing but speed, and a resumed run sees exactly the samples an uninterrupted one would.

Optimization: AdamW; the learning rate rises linearly for ``warmup_steps`` and then follows a
cosine down to ``min_lr_ratio * lr``; gradients are clipped to a global norm of ``grad_clip``.
The schedule is a pure function of the step, so it has no state to checkpoint.

Files in the run folder (``--out``)::

    checkpoint.json           state: step, config, schedule, seed, optimizer hyper-parameters,
                              validation history, best metric; names the tensor file + sha256
    ckpt-0000400.safetensors  model state, AdamW moments (flattened), torch RNG state
    best.safetensors          model weights at the best synthetic-validation metric
    train.jsonl               log: one JSON object per line (step, loss, lr, samples/s, ...)

Both checkpoint files are written atomically, tensors first, then the JSON that names them, so a
kill at any moment leaves the previous complete checkpoint. No pickle anywhere: tensors go to
safetensors, everything else to JSON. SIGTERM and Ctrl-C finish the current step, write a
checkpoint and stop; ``--resume`` continues from it.

At the end the trainer writes ``<out>/<method>-<config>.safetensors`` (weights only) and its
model card ``<method>-<config>.json`` (fields: ``docs/TRAINING.md``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from forgectl import __version__
from forgectl.errors import ForgectlError, UsageError, WeightsError
from forgectl.outputs import to_json, write_json
from forgectl.synth.sample import SynthSample
from forgectl.training.recipe import Recipe
from forgectl.weights import read_tensors as load_tensors
from forgectl.weights import sha256_file
from forgectl.weights import write_tensors as save_tensors

CHECKPOINT_FORMAT = "forgectl.checkpoint/1"
WEIGHTS_FORMAT = "forgectl.weights/1"
CARD_FORMAT = "forgectl.model_card/1"
#: Seed of the synthetic validation set: fixed, so runs with different ``--seed`` compare.
VAL_SEED = 7919
#: Metrics that may choose the best checkpoint. Only synthetic validation: the real dev set
#: is for evaluation, never for tuning (selecting a checkpoint on it would be tuning).
BEST_METRICS = {"val_f1": "max", "val_iou": "max", "val_pixel_auc": "max", "val_loss": "min"}
#: What the corpus is, for the model card (the corpus README says so).
CORPUS_NOTE = (
    "Most corpus photos are JPEG files already (camera or web compression): their own "
    "compression is the first step of every sample's history. Licences differ by source "
    "(ImageNet, Dresden and the Flickr benchmarks: non-commercial research use; some "
    "wallpapers CC or GPL/LGPL); weights trained on them inherit those terms."
)


class TrainingInterrupted(ForgectlError):
    """SIGTERM or Ctrl-C: the run stopped after writing a checkpoint (resume with --resume)."""

    exit_code = 130


class SampleSource(Protocol):
    """Anything that makes synthetic samples by index (a ``SynthesisEngine``, a test fake)."""

    def sample(self, index: int) -> SynthSample: ...


# --------------------------------------------------------------------------- configs


#: Config keys every recipe accepts (read by the trainer, not by the recipe): ``synth`` (the
#: engine's settings) and ``trainable`` (module-name prefixes; only their parameters train, the
#: rest stays frozen and in inference mode, e.g. ``["gate"]`` to fit one head).
TRAINER_KEYS = ("synth", "trainable")


def run_config(
    recipe: Recipe, config_name: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A deep copy of ``recipe.configs[config_name]`` with command-line overrides applied."""
    if config_name not in recipe.configs:
        known = ", ".join(recipe.configs)
        raise UsageError(f"{recipe.name} has no config {config_name!r} (known: {known})")
    config = copy.deepcopy(recipe.configs[config_name])
    for key, value in (overrides or {}).items():
        if value is not None:
            set_config_value(config, key, value)
    return config


def set_config_value(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted ``key`` (``lr``, ``synth.kinds``, ``synth.history.final_jpeg_prob``) in
    ``config``. A top-level key must exist in the config (a typo is an error, not a silent
    no-op); ``synth`` may be added (the engine's :class:`SynthConfig` checks its own keys).

    Raises:
        UsageError: an unknown top-level key, or a path through a non-mapping.
    """
    parts = key.split(".")
    if parts[0] not in config and parts[0] not in TRAINER_KEYS:
        known = ", ".join(sorted({*config, *TRAINER_KEYS}))
        raise UsageError(f"unknown config key {parts[0]!r} (known: {known})")
    node = config
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"config key {key!r}: {part!r} is not a mapping")
        node = child
    node[parts[-1]] = value


# --------------------------------------------------------------------------- schedule


@dataclass
class Schedule:
    """Optimizer and schedule settings, read from a recipe config (defaults below).

    Attributes:
        steps: optimizer steps. batch_size: samples per step.
        lr: peak learning rate. weight_decay, betas, eps: AdamW.
        warmup_steps: linear warm-up length (default 5 % of ``steps``).
        min_lr_ratio: the cosine ends at ``lr * min_lr_ratio``.
        grad_clip: global gradient-norm limit (None or 0 = no clipping).
    """

    steps: int = 1000
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = -1
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise UsageError("steps and batch_size must be >= 1")
        if not self.lr > 0:
            raise UsageError("lr must be > 0")
        if self.warmup_steps < 0:
            self.warmup_steps = max(1, round(0.05 * self.steps))
        self.warmup_steps = min(self.warmup_steps, self.steps)
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Schedule:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in config.items() if k in names})

    def lr_at(self, step: int) -> float:
        """Learning rate of the optimizer step with 0-based index ``step``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        floor = self.min_lr_ratio
        return self.lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        return out


@dataclass
class RunOptions:
    """How to run (not what to train).

    Attributes:
        run_dir: checkpoints and log. out_dir: where the final weights and card go (None:
            not shipped, e.g. in tests that only check checkpoints).
        seed: seeds the model initialization, the torch RNG and every sample.
        threads: ``torch.set_num_threads``. workers: DataLoader processes (0 = in this one).
        resume: continue from ``run_dir/checkpoint.json``.
        val_every, ckpt_every: in steps (0 = only at the end).
        val_samples: size of the fixed synthetic validation set.
        dev: a real dev dataset folder, recorded in the log; the evaluation itself is the
            ``dev_evaluator`` handed to the :class:`Trainer` (reported, never used to choose
            weights). dev_limit: how many of its items are evaluated.
        dtype: of the shipped weights (``float32`` or ``float16``; checkpoints stay float32).
        best_metric: one of :data:`BEST_METRICS`. ship: ``best`` or ``last`` weights.
        progress: show a progress bar (stderr). keep_checkpoints: tensor files kept.
        init: weights file (with its model card) the model starts from instead of its fresh
            initialization (warm start). With ``resume``, used only when the run folder holds
            no checkpoint yet, so one command starts a run and continues it in later sessions.
    """

    run_dir: Path
    out_dir: Path | None = None
    seed: int = 0
    threads: int = 1
    workers: int = 0
    resume: bool = False
    val_every: int = 100
    ckpt_every: int = 100
    val_samples: int = 32
    dev: Path | None = None
    dev_limit: int | None = None
    dtype: str = "float32"
    best_metric: str = "val_f1"
    ship: str = "best"
    progress: bool = True
    keep_checkpoints: int = 1
    init: Path | None = None

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        if self.init is not None:
            self.init = Path(self.init)
        if self.dtype not in ("float32", "float16"):
            raise UsageError(f"dtype must be float32 or float16, not {self.dtype!r}")
        if self.best_metric not in BEST_METRICS:
            raise UsageError(
                f"best metric must be one of {', '.join(BEST_METRICS)} (the dev set is never "
                f"used to choose weights), not {self.best_metric!r}"
            )
        if self.ship not in ("best", "last"):
            raise UsageError(f"ship must be 'best' or 'last', not {self.ship!r}")
        if self.seed < 0 or self.threads < 1 or self.workers < 0:
            raise UsageError("seed and workers must be >= 0 and threads >= 1")


@dataclass
class TrainData:
    """Where samples come from, and what the model card says about it."""

    train: SampleSource
    val: SampleSource | None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- data


class RecipeDataset(torch.utils.data.Dataset):
    """Item ``i`` = ``recipe.prepare(source.sample(i), config, default_rng([seed, i]))``."""

    def __init__(
        self, source: SampleSource, recipe: Recipe, config: dict[str, Any], seed: int, length: int
    ) -> None:
        self.source, self.recipe, self.config = source, recipe, config
        self.seed, self.length = int(seed), int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.source.sample(int(index))
        rng = np.random.default_rng([self.seed, int(index)])
        return self.recipe.prepare(sample, self.config, rng)


def _worker_init(_: int) -> None:
    # Ctrl-C, and SIGTERM from systemd's default stop or `kill -- -PGID`, reach the whole
    # process group: workers ignore both and the main process stops cleanly after its
    # checkpoint (a worker dying of the signal first made the main process fail with
    # torch's "DataLoader worker killed" instead). Workers still end when the main process
    # does: torch's watchdog notices a dead parent. One OpenCV thread per worker: the workers
    # are the parallelism, and oversubscribing 2 cores only slows every process down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - cv2 is a dependency
        pass


def make_loader(
    dataset: RecipeDataset,
    recipe: Recipe,
    batch_size: int,
    start_step: int,
    steps: int,
    workers: int,
) -> torch.utils.data.DataLoader:
    """Batches of the steps ``start_step .. steps-1`` in order (no shuffling: the synthetic
    stream is already random and never repeats)."""
    indices = range(start_step * batch_size, steps * batch_size)
    kwargs: dict[str, Any] = {}
    if workers > 0:
        # Spawned, not forked: a fork copies OpenCV's and OpenMP's thread pools mid-state and
        # the child can deadlock on their locks (seen: a worker hung forever in a futex).
        kwargs = {"prefetch_factor": 2, "worker_init_fn": _worker_init,
                  "multiprocessing_context": "spawn", "persistent_workers": False}
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        collate_fn=recipe.collate,
        num_workers=workers,
        drop_last=False,
        **kwargs,
    )


# --------------------------------------------------------------------------- tensors on disk


def model_tensors(
    model: torch.nn.Module, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors (floats cast to ``dtype`` when given)."""
    out = {}
    for key, value in model.state_dict().items():
        t = value.detach().cpu()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous().clone()
    return out


def _flatten_optimizer(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """AdamW state -> (tensors ``optim.<param>.<name>``, JSON-ready rest)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = json.loads(to_json(sd["param_groups"]))
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = copy.deepcopy(meta["param_groups"])
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- metrics


def _validation_metrics(
    probs: list[np.ndarray], masks: list[np.ndarray], losses: list[float]
) -> dict[str, Any]:
    """Pixel metrics at threshold 0.5, per image then averaged, as the benchmark does:
    localization figures over images with a manipulated region, false-positive rate over
    authentic ones."""
    from forgectl import metrics as M

    f1, iou, aucs, fpr = [], [], [], []
    for prob, gt in zip(probs, masks, strict=True):
        gt = gt >= 0.5
        pred = prob >= 0.5
        if gt.any():
            scores = M.pixel_scores(pred, gt)
            f1.append(scores["f1"])
            iou.append(scores["iou"])
            auc = M.pixel_auc(prob, gt)
            if auc is not None:
                aucs.append(auc)
        else:
            fpr.append(float(pred.mean()))

    def mean(values: list[float]) -> float | None:
        return round(float(np.mean(values)), 6) if values else None

    return {
        "f1": mean(f1),
        "iou": mean(iou),
        "pixel_auc": mean(aucs),
        "authentic_fpr": mean(fpr),
        "loss": mean(losses),
        "n_tampered": len(f1),
        "n_authentic": len(fpr),
    }


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """One training run of one recipe and config.

    Args:
        recipe: the method's recipe. config_name: ``"tiny"``, ``"paper"``, ...
        config: the effective config (see :func:`run_config`).
        data: training and validation sample sources and their description.
        options: run options.
        on_step: called after every step with ``(step, record)`` (tests use it to interrupt).
        dev_evaluator: ``weights file -> metrics`` on a real dev set (with ``options.dev``):
            the caller builds it (the benchmark runner on the method's backend), so the trainer
            needs neither the registry nor the evaluation code.
    """

    def __init__(
        self,
        recipe: Recipe,
        config_name: str,
        config: dict[str, Any],
        data: TrainData,
        options: RunOptions,
        on_step: Callable[[int, dict[str, Any]], None] | None = None,
        dev_evaluator: Callable[[Path], dict[str, Any]] | None = None,
    ) -> None:
        self.recipe = recipe
        self.dev_evaluator = dev_evaluator
        self.method = recipe.name
        self.config_name = config_name
        self.config = config
        self.schedule = Schedule.from_config(config)
        self.data = data
        self.opt = options
        self.on_step = on_step
        self.run_dir = options.run_dir
        self.state_path = self.run_dir / "checkpoint.json"
        self.log_path = self.run_dir / "train.jsonl"
        self._stop: str | None = None
        self._val_batches: list[dict[str, Any]] | None = None
        self.step = 0
        self.wall_s = 0.0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.last_val: dict[str, Any] | None = None
        #: The warm start's file, digest and training history (None: fresh initialization).
        self.init: dict[str, Any] | None = None
        #: One entry per process that trained this run (start or resume): the history a
        #: model card needs when a run spans sessions or machines.
        self.legs: list[dict[str, Any]] = []
        self._leg_wall0 = 0.0
        #: Module-name prefixes that train (config ``trainable``; None = all), set by _freeze.
        self._trainable: tuple[str, ...] | None = None

    # ----------------------------------------------------------------- set-up

    def _build(self) -> None:
        torch.manual_seed(self.opt.seed)
        self.model = self.recipe.build_model(self.config)
        self._freeze()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise UsageError(f"{self.method} model has no trainable parameters")
        s = self.schedule
        self.optimizer = torch.optim.AdamW(
            params, lr=s.lr, betas=s.betas, eps=s.eps, weight_decay=s.weight_decay
        )

    def _trainable_prefixes(self) -> tuple[str, ...] | None:
        value = self.config.get("trainable")
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise UsageError("trainable must be a list of module names, e.g. [\"gate\"]")
        return tuple(value)

    @staticmethod
    def _under(name: str, prefixes: tuple[str, ...]) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    def _freeze(self) -> None:
        """With ``trainable``: every parameter outside those modules stops requiring grad."""
        self._trainable = prefixes = self._trainable_prefixes()
        if prefixes is None:
            return
        modules = dict(self.model.named_modules())
        unknown = [p for p in prefixes if p not in modules]
        if unknown:
            raise UsageError(f"trainable: {self.method} has no module {', '.join(unknown)}")
        for name, param in self.model.named_parameters():
            param.requires_grad_(self._under(name, prefixes))

    def _train_mode(self) -> None:
        """Training mode for the trainable modules only: frozen ones (their batch-norm
        statistics, dropout) stay as in inference, so they do not drift."""
        self.model.train()
        prefixes = self._trainable
        if prefixes is None:
            return
        for name, module in self.model.named_modules():
            if name and not self._under(name, prefixes):
                module.training = False  # this module only; its children are visited too

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this run."""
        return {
            "method": self.method,
            "config_name": self.config_name,
            "config": json.loads(to_json(self.config)),
            "schedule": self.schedule.to_dict(),
            "seed": self.opt.seed,
        }

    def _start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        fresh = not self.opt.resume or (
            self.opt.init is not None and not self.state_path.exists()
        )
        if fresh:
            if self.state_path.exists():
                raise UsageError(
                    f"{self.run_dir} already holds a checkpoint: add --resume to "
                    "continue it or choose another --out"
                )
            # The training stream (dropout, random draws in losses) starts from the seed,
            # whatever the model's initialization consumed.
            torch.manual_seed(self.opt.seed)
            if self.opt.init is not None:
                self.init = self._warm_start(self.opt.init)
            self._log(
                {
                    "event": "start",
                    **self._identity(),
                    "options": self._options_dict(),
                    "data": self.data.info,
                    "init": self.init,
                }
            )
            self._open_leg("start")
            return
        if not self.state_path.exists():
            raise UsageError(f"nothing to resume: {self.state_path} does not exist")
        state = json.loads(self.state_path.read_text())
        if state.get("format") != CHECKPOINT_FORMAT:
            raise WeightsError(f"{self.state_path} is not a forgectl checkpoint")
        mine = self._identity()
        differs = [k for k in mine if state.get(k) != mine[k]]
        if differs:
            raise UsageError(
                f"cannot resume: {', '.join(differs)} differ(s) from the "
                f"checkpoint in {self.run_dir}"
            )
        ckpt = self.run_dir / state["checkpoint"]
        if not ckpt.is_file() or sha256_file(ckpt) != state["sha256"]:
            raise WeightsError(f"checkpoint {ckpt} is missing or does not match its sha256")
        tensors = load_tensors(ckpt)
        model_sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(model_sd, strict=True)
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
        torch.set_rng_state(tensors["rng.torch"])
        self.step = int(state["step"])
        self.wall_s = float(state.get("wall_s", 0.0))
        self.history = state.get("history", [])
        self.best = state.get("best")
        self.last_val = self.history[-1] if self.history else None
        self.init = state.get("init")
        self.legs = list(state.get("legs", []))
        self._log({"event": "resume", "step": self.step, "checkpoint": state["checkpoint"]})
        self._open_leg("resume")

    def _open_leg(self, how: str) -> None:
        self.legs.append({
            "how": how,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "from_step": self.step,
            "to_step": self.step,
            "wall_s": 0.0,
            "threads": self.opt.threads,
            "host": platform.node(),
        })
        self._leg_wall0 = self.wall_s

    def _close_leg(self) -> None:
        if self.legs:
            self.legs[-1]["to_step"] = self.step
            self.legs[-1]["wall_s"] = round(self.wall_s - self._leg_wall0, 1)

    def _warm_start(self, path: Path) -> dict[str, Any]:
        """Load ``path`` (safetensors + model card of the same method and network) into the
        fresh model; return what the card records about it."""
        from forgectl.weights import check_digest, load_checked_state, read_card

        card = read_card(path)
        if card is None:
            raise WeightsError(f"--init: {path.name} has no model card {path.with_suffix('.json')}")
        check_digest(path, card)
        if card.get("method") != self.method:
            raise UsageError(f"--init: {path.name} holds {card.get('method')!r} weights, "
                             f"not {self.method!r}")
        theirs = (card.get("config") or {}).get("model")
        mine = self.config.get("model")
        skip = self.recipe.init_skip_prefixes
        new_tensors: list[str] = []
        if mine is not None and theirs is not None and to_json(theirs) != to_json(mine):
            # Another network config: allowed only when it adds modules (e.g. a new input to
            # a head) and keeps every tensor of the file with its shape; the added ones keep
            # their fresh initialization and are named in the card.
            try:
                new_tensors = load_checked_state(self.model, path, allow_missing=True,
                                                 skip_prefixes=skip)
            except WeightsError as e:
                raise UsageError(
                    f"--init: {path.name} was trained with another network config than "
                    f"{self.method} {self.config_name}, one this network does not extend ({e})"
                ) from None
        else:
            load_checked_state(self.model, path, skip_prefixes=skip)  # or WeightsError
        self._train_mode()  # loading leaves inference mode
        training = card.get("training") or {}
        return {
            **({"new_tensors": new_tensors} if new_tensors else {}),
            "file": path.name,
            "sha256": sha256_file(path),
            "method": card.get("method"),
            "config_name": card.get("config_name"),
            "steps": training.get("steps"),
            "wall_s": training.get("wall_s"),
            "cpu_hours_total": _cpu_hours_total(training),
            "legs": training.get("legs"),
            "init": training.get("init"),
        }

    def _options_dict(self) -> dict[str, Any]:
        return json.loads(to_json(asdict(self.opt)))

    # ----------------------------------------------------------------- log and checkpoints

    def _log(self, record: dict[str, Any]) -> None:
        record = {"time": datetime.now(UTC).isoformat(timespec="seconds"), **record}
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(to_json(record) + "\n")

    def save_checkpoint(self) -> Path:
        """Write the tensor file, then the JSON state naming it; drop older tensor files."""
        name = f"ckpt-{self.step:07d}.safetensors"
        path = self.run_dir / name
        tensors = {f"model.{k}": v for k, v in model_tensors(self.model).items()}
        opt_tensors, opt_meta = _flatten_optimizer(self.optimizer)
        tensors.update(opt_tensors)
        tensors["rng.torch"] = torch.get_rng_state().clone()
        save_tensors(path, tensors, {"format": CHECKPOINT_FORMAT, "step": str(self.step)})
        state = {
            "format": CHECKPOINT_FORMAT,
            **self._identity(),
            "step": self.step,
            "checkpoint": name,
            "sha256": sha256_file(path),
            "optimizer": opt_meta,
            "rng": {
                "torch": "tensor rng.torch in the checkpoint file",
                "samples": "numpy generator per sample, seeded by (seed, index)",
            },
            "wall_s": round(self.wall_s, 3),
            "history": self.history,
            "best": self.best,
            "init": self.init,
            "legs": self._legs_now(),
            "options": self._options_dict(),
            "data": self.data.info,
        }
        write_json(self.state_path, state)
        kept = sorted(self.run_dir.glob("ckpt-*.safetensors"))
        for old in kept[: max(0, len(kept) - max(1, self.opt.keep_checkpoints))]:
            if old.name != name:
                old.unlink(missing_ok=True)
        self._log({"event": "checkpoint", "step": self.step, "file": name})
        return path

    # ----------------------------------------------------------------- validation

    def _prepare_val(self) -> list[dict[str, Any]]:
        if self._val_batches is not None:
            return self._val_batches
        batches: list[dict[str, Any]] = []
        if self.data.val is not None and self.opt.val_samples > 0:
            items = []
            for i in range(self.opt.val_samples):
                sample = self.data.val.sample(i)
                rng = np.random.default_rng([VAL_SEED, i])
                items.append(self.recipe.prepare(sample, self.config, rng))
            if "mask" not in items[0]:
                raise UsageError(
                    f"{self.method} recipe: prepared samples need a 'mask' tensor "
                    "(1, H, W) for validation"
                )
            bs = self.schedule.batch_size
            batches = [self.recipe.collate(items[i : i + bs]) for i in range(0, len(items), bs)]
        self._val_batches = batches
        return batches

    def validate(self) -> dict[str, Any] | None:
        """Synthetic validation (and the dev set when given); updates the best weights."""
        batches = self._prepare_val()
        if not batches and self.dev_evaluator is None:
            return None
        record: dict[str, Any] = {"step": self.step}
        if batches:
            probs, masks, losses = [], [], []
            self.model.eval()
            with torch.no_grad():
                for batch in batches:
                    p = self.recipe.predict(self.model, batch)
                    gt = batch["mask"]
                    if (
                        p.ndim != 4
                        or p.shape[1] != 1
                        or p.shape[0] != gt.shape[0]
                        or p.shape[-2:] != gt.shape[-2:]
                    ):
                        raise RuntimeError(
                            f"{self.method} predict returned {tuple(p.shape)} "
                            f"for masks {tuple(gt.shape)}; expected (B, 1, H, W)"
                        )
                    loss, _ = self.recipe.loss(self.model, batch, self.config)
                    losses.append(float(loss))
                    probs.extend(p[:, 0].float().cpu().numpy())
                    masks.extend(gt.reshape(p.shape)[:, 0].float().cpu().numpy())
            self._train_mode()
            for key, value in _validation_metrics(probs, masks, losses).items():
                record[f"val_{key}"] = value
        if self.dev_evaluator is not None:
            for key, value in self._dev_metrics().items():
                record[f"dev_{key}"] = value
        self.history.append(record)
        self.last_val = record
        metric = self.opt.best_metric
        value = record.get(metric)
        if value is not None:
            better = self.best is None or (
                value > self.best["value"]
                if BEST_METRICS[metric] == "max"
                else value < self.best["value"]
            )
            if better:
                save_tensors(
                    self.run_dir / "best.safetensors",
                    model_tensors(self.model),
                    {"format": WEIGHTS_FORMAT, "step": str(self.step)},
                )
                self.best = {"metric": metric, "value": value, "step": self.step, "metrics": record}
        self._log({"event": "validation", **record})
        return record

    def _dev_metrics(self) -> dict[str, Any]:
        """The current weights through the caller's dev evaluator (a temporary weights file
        with a model card, as a shipped file would be)."""
        assert self.dev_evaluator is not None
        with tempfile.TemporaryDirectory(prefix=".dev-", dir=self.run_dir) as tmp:
            weights = Path(tmp) / f"{self.method}-{self.config_name}.safetensors"
            save_tensors(weights, model_tensors(self.model), {"format": WEIGHTS_FORMAT})
            write_json(weights.with_suffix(".json"), self._card_head())
            return self.dev_evaluator(weights)

    # ----------------------------------------------------------------- the loop

    def _handle_signal(self, signum: int, _frame: Any) -> None:
        self._stop = signal.Signals(signum).name

    def run(self) -> dict[str, Any]:
        """Train to ``schedule.steps`` and ship. Returns the model card (or, without
        ``out_dir``, the run summary)."""
        torch.set_num_threads(self.opt.threads)
        self._start()
        s = self.schedule
        handlers = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._handle_signal)
        except ValueError:  # not the main thread: no graceful stop, periodic checkpoints only
            handlers = {}
        try:
            if self.step < s.steps:
                self._loop()
            if self.last_val is None or self.last_val["step"] != self.step:
                self.validate()
            self.save_checkpoint()
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
        result = self.ship() if self.opt.out_dir is not None else self._summary()
        self._log({"event": "end", "step": self.step, "wall_s": round(self.wall_s, 3)})
        return result

    def _loop(self) -> None:
        s = self.schedule
        dataset = RecipeDataset(
            self.data.train, self.recipe, self.config, self.opt.seed, s.steps * s.batch_size
        )
        loader = make_loader(
            dataset, self.recipe, s.batch_size, self.step, s.steps, self.opt.workers
        )
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._train_mode()
        with _progress(self.opt.progress, s.steps, self.step, self.method) as bar:
            batches: Iterator[dict[str, Any]] = iter(loader)
            try:
                while self.step < s.steps:
                    t0 = time.perf_counter()
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except Exception:
                        if self._stop:  # a worker died of the same Ctrl-C: stop cleanly
                            break
                        raise
                    t1 = time.perf_counter()
                    lr = s.lr_at(self.step)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    loss, logs = self.recipe.loss(self.model, batch, self.config)
                    if not torch.isfinite(loss):
                        raise ForgectlError(
                            f"{self.method}: non-finite loss at step "
                            f"{self.step + 1} ({logs}); lower --lr?"
                        )
                    self.optimizer.zero_grad(set_to_none=True)
                    if loss.requires_grad:  # not when no term reached a trainable module
                        loss.backward()
                    clip = s.grad_clip if s.grad_clip else float("inf")
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
                    self.optimizer.step()
                    self.step += 1
                    t2 = time.perf_counter()
                    self.wall_s += t2 - t0
                    record = {
                        "event": "step",
                        "step": self.step,
                        "loss": round(float(loss.detach()), 6),
                        "lr": lr,
                        "grad_norm": round(grad_norm, 6),
                        "samples_per_s": round(s.batch_size / max(t2 - t0, 1e-9), 3),
                        "data_s": round(t1 - t0, 4),
                        "compute_s": round(t2 - t1, 4),
                        **{k: round(v, 6) for k, v in logs.items() if k != "loss"},
                    }
                    self._log(record)
                    bar(self.step, record)
                    if (
                        self.opt.val_every
                        and self.step % self.opt.val_every == 0
                        and self.step < s.steps
                    ):
                        self.validate()
                    if (
                        self.opt.ckpt_every
                        and self.step % self.opt.ckpt_every == 0
                        and self.step < s.steps
                    ):
                        self.save_checkpoint()
                    if self.on_step is not None:
                        self.on_step(self.step, record)
                    if self._stop:
                        break
            finally:
                del batches  # shuts the worker processes down
        if self._stop and self.step < s.steps:
            self.save_checkpoint()
            self._log({"event": "interrupted", "signal": self._stop, "step": self.step})
            raise TrainingInterrupted(
                f"{self._stop} at step {self.step}/{s.steps}: checkpoint saved in "
                f"{self.run_dir}; continue with --resume"
            )

    # ----------------------------------------------------------------- shipping

    def _legs_now(self) -> list[dict[str, Any]]:
        self._close_leg()
        return copy.deepcopy(self.legs)

    def _summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "config_name": self.config_name,
            "step": self.step,
            "wall_s": round(self.wall_s, 3),
            "final": self.last_val,
            "best": self.best,
        }

    def _card_head(self) -> dict[str, Any]:
        return {
            "format": CARD_FORMAT,
            "method": self.method,
            "config_name": self.config_name,
            "config": json.loads(to_json(self.config)),
        }

    def ship(self) -> dict[str, Any]:
        """Write ``<out>/<method>-<config>.safetensors`` and its model card; return the card."""
        assert self.opt.out_dir is not None
        use_best = (
            self.opt.ship == "best"
            and self.best is not None
            and (self.run_dir / "best.safetensors").is_file()
        )
        if use_best:
            weights = load_tensors(self.run_dir / "best.safetensors")
            chosen = {
                "which": "best",
                "step": self.best["step"],
                "metric": self.best["metric"],
                "value": self.best["value"],
            }
        else:
            weights = model_tensors(self.model)
            chosen = {"which": "last", "step": self.step}
        dtype = torch.float16 if self.opt.dtype == "float16" else torch.float32
        weights = {
            k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
            for k, v in weights.items()
        }
        out = Path(self.opt.out_dir)
        stem = f"{self.method}-{self.config_name}"
        path = out / f"{stem}.safetensors"
        save_tensors(
            path,
            weights,
            {"format": WEIGHTS_FORMAT, "method": self.method, "config": self.config_name},
        )
        n_params = sum(p.numel() for p in self.model.parameters())
        s = self.schedule
        card = {
            **self._card_head(),
            "weights": {
                "file": path.name,
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
                "dtype": self.opt.dtype,
                "parameters": n_params,
                "selected": chosen,
            },
            "training": {
                "recipe": type(self.recipe).__name__,
                "optimizer": {
                    "name": "AdamW",
                    "lr": s.lr,
                    "betas": list(s.betas),
                    "eps": s.eps,
                    "weight_decay": s.weight_decay,
                },
                "schedule": {
                    "warmup": "linear",
                    "warmup_steps": s.warmup_steps,
                    "decay": "cosine",
                    "min_lr_ratio": s.min_lr_ratio,
                },
                "grad_clip": s.grad_clip,
                "steps": self.step,
                "batch_size": s.batch_size,
                "samples_seen": self.step * s.batch_size,
                "seed": self.opt.seed,
                "threads": self.opt.threads,
                "workers": self.opt.workers,
                "wall_s": round(self.wall_s, 1),
                "pretrained": self.config.get("pretrained", None),
                "init": self.init,
                "legs": self._legs_now(),
            },
            "data": self.data.info,
            "metrics": {
                "final": self.last_val,
                "best": self.best,
                "note": "val_* on the fixed synthetic validation set (threshold 0.5, per "
                "image); dev_* on the real dev set via the benchmark runner, reported "
                "only, never used to choose weights",
            },
            "software": {
                "forgectl": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        own, total = _cpu_hours(self.wall_s, self.opt.threads, self.init)
        card["training"]["cpu_hours"] = own
        card["training"]["cpu_hours_total"] = total
        write_json(path.with_suffix(".json"), card)
        self._log({"event": "shipped", "file": str(path), "sha256": card["weights"]["sha256"]})
        return card


def _cpu_hours(wall_s: float, threads: int | None, init: dict[str, Any] | None
               ) -> tuple[float, float]:
    """``(own, total)`` CPU hours: wall time x threads, and that plus the CPU hours behind the
    warm start (as its record in ``init`` says)."""
    own = float(wall_s) * float(threads or 1) / 3600
    before = float((init or {}).get("cpu_hours_total") or 0.0)
    return round(own, 6), round(own + before, 6)


def _cpu_hours_total(training: dict[str, Any]) -> float | None:
    """CPU hours behind a card's weights, recursively through its warm starts; None when the
    card does not say (cards written before wall time was recorded)."""
    if training.get("cpu_hours_total") is not None:
        return float(training["cpu_hours_total"])
    if training.get("wall_s") is None:
        return None
    return _cpu_hours(training["wall_s"], training.get("threads"), training.get("init"))[1]


class _progress:
    """A rich progress bar on stderr (silent when disabled or not a terminal)."""

    def __init__(self, enabled: bool, total: int, done: int, label: str) -> None:
        self.enabled, self.total, self.done, self.label = enabled, total, done, label
        self._bar: Any = None

    def __enter__(self) -> Callable[[int, dict[str, Any]], None]:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            console = Console(stderr=True)
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                disable=not console.is_terminal,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                f"train {self.label}", total=self.total, completed=self.done, stats=""
            )

        def update(step: int, record: dict[str, Any]) -> None:
            if self._bar is not None:
                stats = (
                    f"loss {record['loss']:.4f} lr {record['lr']:.2e} "
                    f"{record['samples_per_s']:.1f} samples/s"
                )
                self._bar.update(self._task, completed=step, stats=stats)

        return update

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------- corpus data


def _manifest_notes(folders: list[Path]) -> dict[str, tuple[str, str]]:
    """``resolved path -> (licence note, format)`` from MANIFEST.tsv files at or above the
    corpus folders (the shared corpus has one at its root)."""
    import csv

    notes: dict[str, tuple[str, str]] = {}
    seen: set[Path] = set()
    for folder in folders:
        for parent in [folder.resolve(), *folder.resolve().parents][:3]:
            manifest = parent / "MANIFEST.tsv"
            if manifest in seen or not manifest.is_file():
                continue
            seen.add(manifest)
            with open(manifest, newline="", encoding="utf-8") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    if row.get("path"):
                        key = str((parent / row["path"]).resolve())
                        notes[key] = (row.get("license_note", ""), row.get("format", ""))
    return notes


def corpus_data(
    folders: list[Path], config: dict[str, Any], seed: int, kinds: list[str] | None = None
) -> TrainData:
    """Training and validation engines over the corpus folders, and the card's data section.

    The synthetic config comes from ``config["synth"]`` (a ``SynthConfig`` dict) when the
    recipe sets one; ``kinds`` restricts the sample kinds. Validation uses the ``val`` split of
    the photos (disjoint from training by file name).
    """
    from forgectl.synth.engine import SynthConfig, SynthesisEngine, list_images, split_sources

    paths: list[Path] = []
    for folder in folders:
        paths.extend(list_images(Path(folder)))
    paths = sorted(set(paths))
    train_paths = split_sources(paths, "train")
    val_paths = split_sources(paths, "val")
    if not train_paths:
        raise UsageError(f"no training photos in {', '.join(map(str, folders))}")
    synth = SynthConfig.from_dict(config["synth"]) if config.get("synth") else SynthConfig()
    if kinds:
        synth = synth.with_kinds(kinds)
    root = Path(os.path.commonpath([str(Path(f).resolve()) for f in folders]))
    train = SynthesisEngine(train_paths, seed=seed, config=synth, root=root)
    val_note = "val split of the photos (disjoint from training by file name)"
    if not val_paths:  # a tiny corpus: validate on held-in photos, and say so
        val_paths, val_note = train_paths, "no val-split photos: validation reuses train photos"
    val = SynthesisEngine(val_paths, seed=VAL_SEED, config=synth, root=root)

    notes = _manifest_notes([Path(f) for f in folders])
    licences: dict[str, dict[str, Any]] = {}
    formats: dict[str, int] = {}
    for p in train_paths:
        note, fmt = notes.get(str(p.resolve()), ("", ""))
        fmt = fmt or p.suffix.lower().lstrip(".")
        formats[fmt.upper()] = formats.get(fmt.upper(), 0) + 1
        rel = p.resolve().relative_to(root)
        top = rel.parts[0] if len(rel.parts) > 1 else "."
        entry = licences.setdefault(top, {"photos": 0, "licences": []})
        entry["photos"] += 1
        if note and note not in entry["licences"]:
            entry["licences"].append(note)
    info = {
        "corpus_folders": [str(f) for f in folders],
        "train_photos": len(train_paths),
        "val_photos": len(val_paths),
        "val_note": val_note,
        "photo_formats": formats,
        "licences_by_folder": licences,
        "note": CORPUS_NOTE,
        "synth_config": synth.to_dict(),
        "kinds": synth.kinds,
        "histories": synth.history.to_dict(),
        "train_seed": seed,
        "val_seed": VAL_SEED,
    }
    return TrainData(train=train, val=val, info=info)


def train(
    recipe: Recipe,
    config_name: str,
    images: list[Path],
    options: RunOptions,
    overrides: dict[str, Any] | None = None,
    kinds: list[str] | None = None,
    dev_evaluator: Callable[[Path], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``forgectl train``: build the data from the corpus, run the recipe, write the weights
    and card into ``options.out_dir``."""
    config = run_config(recipe, config_name, overrides)
    data = corpus_data(images, config, options.seed, kinds)
    return Trainer(recipe, config_name, config, data, options,
                   dev_evaluator=dev_evaluator).run()
