"""Run the candidate members over labelled datasets once, keeping what the fusion fits on.

Fitting the fusion (and reporting it) reads the members' heatmaps, scores and
applicability many times; running the members is the slow part (a second or more per image),
so each member's output for each image is computed once and cached under ``cache/<member>/``
(keyed by the image file's sha256 and the member's weights sha256: new weights, new entries).
Heatmaps are cached as float16 (the fusion's features do not need more).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forgectl import registry
from forgectl.backends.base import Backend
from forgectl.errors import CANNOT_RUN, ForgectlError
from forgectl.evaluation.datasets import Dataset, Item, load_mask
from forgectl.fusion.features import MemberOutput
from forgectl.intake import ForensicImage, load_image
from forgectl.weights import sha256_file

ProgressFn = Callable[[str], None]


@dataclass
class LabelledImage:
    """One fitting example: the members' outputs and the truth.

    Attributes:
        key: dataset name + item key (unique across datasets).
        group: dataset name (the real dev set is split into halves by it).
        image: the decoded image (pixels are needed for the reliability features).
        truth: (H, W) bool ground-truth mask (all False for authentic images).
        tampered: image label.
        outputs: member name -> MemberOutput.
        manipulation: the item's manipulation type, if the dataset names it.
    """

    key: str
    group: str
    image: ForensicImage
    truth: np.ndarray
    tampered: bool
    outputs: dict[str, MemberOutput]
    manipulation: str = ""


def member_options(backend: Backend) -> dict[str, object]:
    """A member's resolved options as JSON values (tuples become lists): with its weights,
    what decides its outputs, so the fusion's card records them and the cache is keyed by
    them."""
    return json.loads(json.dumps(backend.options, sort_keys=True, default=str))


def _member_id(backend: Backend) -> str:
    """Cache key of a member's outputs: its weights and its options (a changed default, such
    as copymove's block stage, must not reuse outputs made without it). A change of code
    alone is not seen: start a fit with code changes in a new run folder."""
    digest = (backend.weights_sha256 or "classical")[:16]
    options = json.dumps(member_options(backend), sort_keys=True).encode()
    return f"{digest}-{hashlib.sha256(options).hexdigest()[:8]}"


def collect(
    datasets: Sequence[tuple[str, Dataset]],
    members: Sequence[str],
    cache: Path,
    progress: ProgressFn | None = None,
    cached_only: bool = False,
) -> list[LabelledImage]:
    """Every readable item of ``datasets`` with every member's output (cached).

    Items that cannot be read are skipped (reported through ``progress``); a member that
    fails on an item counts as not applicable there (as it does at inference). With
    ``cached_only``, items not yet cached for every member are skipped instead of run.
    """
    backends = {name: registry.load(name) for name in members}
    ids = {name: _member_id(b) for name, b in backends.items()}
    examples: list[LabelledImage] = []
    for group, dataset in datasets:
        for item in dataset:
            example = _collect_item(group, item, backends, ids, cache, progress, cached_only)
            if example is not None:
                examples.append(example)
    return examples


def _collect_item(
    group: str,
    item: Item,
    backends: dict[str, Backend],
    ids: dict[str, str],
    cache: Path,
    progress: ProgressFn | None,
    cached_only: bool = False,
) -> LabelledImage | None:
    if item.problem:
        if progress:
            progress(f"skip {item.key}: {item.problem}")
        return None
    try:
        image = load_image(item.image)
        shape = (image.height, image.width)
        truth = (load_mask(item.mask, shape) if item.tampered and item.mask is not None
                 else np.zeros(shape, bool))
    except ForgectlError as exc:
        if progress:
            progress(f"skip {item.key}: {exc}")
        return None
    digest = sha256_file(item.image)[:32]
    if cached_only and not all((cache / name / ids[name] / f"{digest}.npz").is_file()
                               for name in backends):
        return None
    outputs = {}
    for name, backend in backends.items():
        outputs[name] = _cached_output(name, backend, ids[name], image, digest, cache)
    if progress:
        progress(item.key)
    return LabelledImage(key=f"{group}/{item.key}", group=group, image=image, truth=truth,
                         tampered=item.tampered, outputs=outputs,
                         manipulation=item.manipulation)


def _cached_output(
    name: str, backend: Backend, member_id: str, image: ForensicImage, digest: str, cache: Path
) -> MemberOutput:
    path = cache / name / member_id / f"{digest}.npz"
    if path.is_file():
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            return MemberOutput(name=name, heatmap=data["heatmap"].astype(np.float32),
                                score=meta["score"], applicable=meta["applicable"],
                                seconds=meta["seconds"])
    output = run_member(name, backend, image)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    meta = {"score": output.score, "applicable": output.applicable, "seconds": output.seconds}
    np.savez_compressed(tmp, heatmap=output.heatmap.astype(np.float16),
                        meta=np.array(json.dumps(meta)))
    tmp.replace(path)
    return output


def run_member(name: str, backend: Backend, image: ForensicImage) -> MemberOutput:
    """One member on one image, timed; a failure on this image is a not-applicable output
    (the fusion treats a member that cannot say anything the same way, whatever the reason).
    A member that cannot run at all (damaged or missing weights, a runtime this install
    lacks) raises: the fusion without it would give other numbers under the same name."""
    start = time.perf_counter()
    try:
        result = backend.localize(image)
    except CANNOT_RUN:
        raise
    except Exception as exc:  # a member's failure on this image must not stop the fusion
        return MemberOutput.blind(name, (image.height, image.width),
                                  time.perf_counter() - start, note=f"{type(exc).__name__}")
    return MemberOutput(name=name, heatmap=result.heatmap, score=result.score,
                        applicable=result.applicable, seconds=time.perf_counter() - start,
                        result=result)
