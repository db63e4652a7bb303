"""``forgectl train --method auto``: refit the fusion over the registered methods, one command.

Unlike the network recipes this one trains nothing by gradient steps: it writes a synthetic set
(from ``--images``, the photos' ``test`` split, which no shipped network trained on), runs the
candidate members over it and over ``--dev`` (cached in the run folder), fits on the synthetic
set only, chooses the two thresholds on half A of ``--dev`` and reports half B
(:mod:`forgectl.fusion.fit`), and writes ``auto-<config>.safetensors`` + card into the run
folder. A newly registered method joins by being named in the config's ``members`` (or for one
fit with ``--set 'members=["omni", "mun"]'``).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

from forgectl import __version__
from forgectl.errors import UsageError

#: Configs as data. ``tiny`` is what ships.
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": {
        # Chosen by cost and value (docs/methods/auto.md): the six first on casia1-dev,
        # 5-fold cross-validated, when the fusion was still fitted on it; reconwave added on
        # 2026-12-03 (fitted on synthetic forgeries: F1 +0.014 on dev half A, the chooser, and
        # +0.020 in-sample on the synthetic set, for 0.10 s more per CASIA image).
        "members": ["omni", "dq", "copymove", "ghost", "noise", "ela", "reconwave"],
        "synthetic": {"n": 320, "split": "test", "seed": 7},
        # hidden 0: the map is a logistic regression (a perceptron with 8 hidden units measured
        # the same within 0.01 F1 and fits slower).
        # verdict "trees" (2026-12-04): 100 boosted trees of depth 2 over the image features
        # with each member's peak; chosen over the logistic verdict by the mean of synthetic
        # 5-fold CV and dev half A image AUC (docs/methods/auto.md).
        # verdict_blind 2 (2026-12-06): the trees also learn from two copies of the fitting
        # set with one member blinded per image, so the verdict does not lean on one member
        # alone; chosen over 0 and 1 on dev half A (docs/methods/auto.md).
        # verdict_bags 5 (2026-12-06, session 43): five such verdicts (seeds seed..seed+4)
        # averaged; over three seeds the half-A image AUC spread 0.039 with one and 0.007 with
        # five, at a higher mean half-A F1 + AUC (docs/methods/auto.md). The shipped sixth fit
        # predates it (reproduce it with --set fit.verdict_bags=1).
        "fit": {"hidden": 0, "alpha": 1e-3, "verdict": "trees", "verdict_c": 0.5,
                "verdict_trees": 100, "verdict_depth": 2, "verdict_lr": 0.1,
                "verdict_blind": 2, "verdict_bags": 5, "seed": 0},
    },
}


class FusionRecipe:
    """Fits the fusion (see the module docstring). ``configs`` as the network recipes."""

    name = "auto"

    def __init__(self) -> None:
        self.configs = CONFIGS

    def dev_backend_options(self, config: dict[str, Any]) -> dict[str, Any]:
        return {}

    def config_for(self, config_name: str, overrides: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
        """A copy of the named config with ``--set`` values (dotted keys: ``members``,
        ``fit.verdict_c``, ``synthetic.n``) applied.

        Raises:
            UsageError: an unknown config, or a key whose first part the config lacks (the
                network recipes' trainer keys such as ``lr`` mean nothing here).
        """
        from forgectl.training.trainer import set_config_value

        if config_name not in self.configs:
            raise UsageError(f"auto has no config {config_name!r} (known: "
                             f"{', '.join(self.configs)})")
        config = copy.deepcopy(self.configs[config_name])
        for key, value in (overrides or {}).items():
            if key.split(".")[0] not in config:
                raise UsageError(f"auto: unknown config key {key!r} (known: "
                                 f"{', '.join(config)})")
            set_config_value(config, key, value)
        return config

    def fit(self, config_name: str, images: list[Path], dev: Path | None, run_dir: Path,
            members: list[str] | None = None, cache: Path | None = None,
            overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Fit into ``run_dir``; returns the card written beside the weights. ``overrides``:
        ``--set`` values (:meth:`config_for`)."""
        from forgectl import registry
        from forgectl.evaluation.datasets import load_dataset
        from forgectl.fusion.collect import collect
        from forgectl.fusion.fit import FitConfig, fit_all, prepare
        from forgectl.synth.engine import (
            SynthConfig,
            SynthesisEngine,
            list_images,
            split_sources,
            write_dataset,
        )

        config = self.config_for(config_name, overrides)
        members = members or list(config["members"])
        for m in members:
            if m == "auto" or m not in registry.available():
                raise UsageError(f"auto: member {m!r} is not a ready method")
        start = time.monotonic()
        run_dir.mkdir(parents=True, exist_ok=True)
        syn = config["synthetic"]
        synth_dir = run_dir / "synthetic"
        if not (synth_dir / "MANIFEST.tsv").is_file():
            sources = [p for folder in images
                       for p in split_sources(list_images(folder), syn["split"])]
            if not sources:
                raise UsageError(f"--images: no photos of split {syn['split']!r}")
            engine = SynthesisEngine(sources, seed=syn["seed"], config=SynthConfig(),
                                     root=images[0])
            write_dataset(engine, synth_dir, syn["n"], overwrite=True)
        datasets = [("synthetic", load_dataset(synth_dir))]
        if dev is not None:
            datasets.append((dev.name, load_dataset(dev)))

        def say(msg: str) -> None:
            print(f"forgectl: auto: {msg}", file=sys.stderr, flush=True)

        count = [0]

        def tick(msg: str) -> None:
            count[0] += 1
            if count[0] % 50 == 0 or msg.startswith("skip"):
                say(f"{count[0]} images ({msg})")

        examples = collect(datasets, members, cache or run_dir / "cache", tick)
        say(f"{len(examples)} images collected; fitting")
        cfg = FitConfig(**config["fit"])
        data = prepare(examples, members, dev.name if dev is not None else None, cfg.seed)
        model, report = fit_all(data, cfg, say)
        member_names, member_shas, member_option_sets = _member_files(members)
        card = {
            "format": "forgectl.model_card/1",
            "method": "auto",
            "config_name": config_name,
            "config": {"fit": cfg.to_dict(), "synthetic": syn},
            "training": {"recipe": "FusionRecipe", "wall_s": round(time.monotonic() - start, 1),
                         "member_weights": member_names, "member_sha256": member_shas,
                         "member_options": member_option_sets},
            "data": {"synthetic": str(synth_dir), "synthetic_images": int((~data.real).sum()),
                     "dev": str(dev) if dev is not None else None,
                     "dev_images": int(data.real.sum()),
                     "note": "fitted on the synthetic set only; the dev set's half A chose the "
                             "two thresholds, half B (metrics.dev_half_b) is the figure to quote"},
            "metrics": report,
            "member_seconds": _member_seconds(examples, members),
            "software": {"forgectl": __version__},
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return model.save(run_dir / f"auto-{config_name}.safetensors", card)


def _member_files(
    members: list[str],
) -> tuple[dict[str, str | None], dict[str, str], dict[str, dict[str, object]]]:
    """Each member's weights file name as it runs (None for classical members), the sha256 of
    each learned member's weights file itself (not the ONNX twin its default runtime may run),
    and each member's options (its defaults): the fusion's numbers hold for these files and
    options only (a retrained member or a changed default calls for a refit; a test compares
    them with the shipped ones)."""
    from forgectl import registry
    from forgectl.fusion.collect import member_options

    names: dict[str, str | None] = {}
    shas: dict[str, str] = {}
    options: dict[str, dict[str, object]] = {}
    for m in members:
        backend = registry.load(m)
        names[m] = backend.weights_id
        options[m] = member_options(backend)
        if backend.weights_id is None:  # a classical member
            continue
        if backend.runtime != "torch":
            backend = registry.load(m, runtime="torch")
        shas[m] = backend.weights_sha256
    return names, shas, options


def _member_seconds(examples: list[Any], members: list[str]) -> dict[str, float]:
    import numpy as np

    return {m: round(float(np.median([ex.outputs[m].seconds for ex in examples])), 4)
            for m in members} if examples else {}


def recipe() -> FusionRecipe:
    return FusionRecipe()
