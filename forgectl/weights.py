"""Weights on disk, once: where shipped files live, model cards, safetensors, sha256, and
"build the network the card describes and load it, checking keys and shapes".

A weights file ``<name>.safetensors`` (never pickle) has a model card ``<name>.json`` beside
it (fields: docs/TRAINING.md). The card's ``config["model"]`` (or ``config``) is the network
config, and ``weights.sha256`` the file's digest: :func:`load_network` refuses a file whose
bytes do not match it (a truncated download, a tampered file).

torch and safetensors are imported inside the functions that need them, so reading cards and
paths stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgectl.errors import WeightsError, require_torch

if TYPE_CHECKING:
    import torch

#: The shipped weights folder of a checkout (``<method>-<config>.safetensors`` + card + ONNX
#: twin), which editable installs and the tests use.
CHECKOUT_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Its copy inside an installed package (a wheel, ``pip install .``, pipx): pyproject.toml maps
#: weights/ to ``forgectl._shipped`` with the files the default runtime runs.
PACKAGED_NAME = "_shipped"


def shipped_dir() -> Path:
    """The shipped weights: the installed package's own copy (package data, found through
    :mod:`importlib.resources`) when there is one, else the checkout's ``weights/``."""
    from importlib.resources import files

    packaged = files("forgectl") / PACKAGED_NAME
    return Path(str(packaged)) if packaged.is_dir() else CHECKOUT_DIR


def weights_dir() -> Path:
    """Where shipped weights are looked up and ``forgectl train --ship`` writes:
    ``FORGECTL_WEIGHTS_DIR`` when set (tests, a folder of one's own), else
    :func:`shipped_dir`. Read at each call, so a test or a caller can point it elsewhere."""
    return Path(os.environ.get("FORGECTL_WEIGHTS_DIR") or shipped_dir())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_path(weights: Path) -> Path:
    """The model card beside a weights file."""
    return Path(weights).with_suffix(".json")


def read_card(weights: Path) -> dict[str, Any] | None:
    """The model card beside ``weights``, or None when there is none.

    Raises:
        WeightsError: the card exists but is not a JSON object.
    """
    path = card_path(weights)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"model card {path} is not readable JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise WeightsError(f"model card {path} is not a JSON object")
    return card


def network_config(card: dict[str, Any] | None, weights: Path) -> dict[str, Any]:
    """The network config a card describes (``config["model"]`` as the trainer writes it, or
    ``config`` itself).

    Raises:
        WeightsError: no card, or a card without a config.
    """
    config = (card or {}).get("config")
    if not isinstance(config, dict):
        raise WeightsError(f"{Path(weights).name} needs its model card "
                           f"{card_path(weights)} with the network config")
    return config["model"] if "model" in config else config


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file.

    Raises:
        WeightsError: a missing or malformed file.
    """
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own types for malformed files
        raise WeightsError(f"cannot read {path}: {exc}") from exc


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically (no reader ever sees half a file)."""
    from safetensors.torch import save

    from forgectl.outputs import write_bytes

    write_bytes(path, save(tensors, metadata=metadata))


def load_checked_state(
    model: torch.nn.Module, path: Path, skip_prefixes: tuple[str, ...] = (),
    allow_missing: bool = False,
) -> list[str]:
    """Load safetensors weights into ``model`` and put it in eval mode.

    Tensors are cast to float32 (weights may ship as float16); keys starting with
    ``skip_prefixes`` (training-only heads, frozen parts the model loads from their own
    files) are dropped on both sides, the model's keeping their values. Every remaining key
    and shape must match the model the card's config built; with ``allow_missing`` the model
    may have tensors the file lacks (a network that extends the file's), which keep their
    values.

    Returns:
        The model's tensors the file lacked (empty unless ``allow_missing``).

    Raises:
        WeightsError: unreadable file, or missing / unexpected / mis-shaped tensors.
    """
    state = {
        k: v.float() if v.is_floating_point() else v
        for k, v in read_tensors(path).items()
        if not (skip_prefixes and k.startswith(skip_prefixes))
    }
    own = model.state_dict()
    missing = sorted(k for k in set(own) - set(state)
                     if not (skip_prefixes and k.startswith(skip_prefixes)))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    refused = ([] if allow_missing else missing) + unexpected + wrong
    if refused:
        raise WeightsError(
            f"{Path(path).name} does not match its model card: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} mis-shaped tensors (first: "
            f"{refused[0]})"
        )
    model.load_state_dict(state, strict=not (allow_missing or skip_prefixes))
    model.eval()
    return missing if allow_missing else []


def check_digest(path: Path, card: dict[str, Any] | None) -> None:
    """Refuse a weights file whose sha256 differs from the one its card records.

    Cards without a recorded digest (hand-written ones in tests) are accepted.

    Raises:
        WeightsError: the digest differs (truncated or modified file).
    """
    expected = ((card or {}).get("weights") or {}).get("sha256")
    if expected and sha256_file(path) != expected:
        raise WeightsError(
            f"{Path(path).name} does not match the sha256 in its model card (truncated or "
            "modified file): restore it from the repository or retrain"
        )


#: Digests of the files in a weights folder that carry none of their own (the ONNX twins; a
#: ``.safetensors`` file's digest is in its card), in ``sha256sum`` format, so ``sha256sum -c
#: SHA256SUMS`` in the folder checks them too. ``forgectl export`` keeps it current.
CHECKSUMS = "SHA256SUMS"


def _checksums(listing: Path) -> dict[str, str]:
    """``{file name: sha256}`` from a ``SHA256SUMS`` file (``<digest>  <name>`` lines; a
    ``*`` before the name, binary mode, is allowed); empty when it is missing or unreadable."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    entries = {}
    for line in lines:
        digest, _, name = line.strip().partition(" ")
        if name.strip():
            entries[name.strip().lstrip("*")] = digest.lower()
    return entries


def recorded_sha256(path: Path) -> str | None:
    """The digest the ``SHA256SUMS`` beside ``path`` records for it, or None (no list, or the
    file is not on it)."""
    path = Path(path)
    return _checksums(path.parent / CHECKSUMS).get(path.name)


def check_recorded_sha256(path: Path) -> str | None:
    """Refuse a file whose sha256 differs from the one its folder's ``SHA256SUMS`` records
    (files it does not list are accepted).

    Returns:
        The file's digest when the list names it (so it is not hashed again), else None.

    Raises:
        WeightsError: the digest differs (truncated or modified file).
    """
    expected = recorded_sha256(path)
    if not expected:
        return None
    if sha256_file(path) != expected:
        raise WeightsError(
            f"{Path(path).name} does not match its sha256 in {CHECKSUMS} (truncated or modified "
            "file): reinstall forgectl, or re-export it with `forgectl export`"
        )
    return expected


def record_sha256(path: Path) -> None:
    """Write ``path``'s digest into the ``SHA256SUMS`` beside it (replacing its old line) when
    that folder is the shipped one or already keeps such a list; other folders are left as they
    are. The list is rewritten atomically, sorted by name."""
    from forgectl.outputs import write_bytes

    path = Path(path)
    listing = path.parent / CHECKSUMS
    if not listing.is_file() and path.parent.resolve() != weights_dir().resolve():
        return
    entries = _checksums(listing)
    entries[path.name] = sha256_file(path)
    text = "".join(f"{digest}  {name}\n" for name, digest in sorted(entries.items()))
    write_bytes(listing, text.encode("utf-8"))


def load_network(
    path: Path,
    build: Callable[[dict[str, Any]], torch.nn.Module],
    skip_prefixes: tuple[str, ...] = (),
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network the model card beside ``path`` describes, with the file's weights loaded.

    Args:
        path: a ``.safetensors`` file with its ``.json`` model card.
        build: network constructor taking the card's network config.
        skip_prefixes: training-only tensors to drop.

    Returns:
        ``(model in eval mode, card)``.

    Raises:
        WeightsError: missing file or card, a config the constructor rejects, a digest that
            differs from the card's, or tensors that do not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    require_torch(f"running {path.name} on the torch runtime")
    card = read_card(path)
    config = network_config(card, path)
    check_digest(path, card)
    try:
        model = build(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"model card config of {path.name} is invalid: {exc}") from exc
    load_checked_state(model, path, skip_prefixes)
    return model, card or {}


def load_shipped_part(module: torch.nn.Module, weights_name: str, prefix: str = "") -> None:
    """Warm-start ``module`` from the tensors under ``prefix`` of a shipped weights file.

    Args:
        module: the (sub)network to fill.
        weights_name: a file in :func:`weights_dir` (or a path).
        prefix: keep only keys starting with it, stripped (``"encoder."`` for an encoder).

    Raises:
        UsageError: the file is missing, or its tensors do not fit ``module`` exactly.
    """
    from forgectl.errors import UsageError

    path = Path(weights_name) if Path(weights_name).is_file() else weights_dir() / weights_name
    if not path.is_file():
        raise UsageError(f"warm start: {path} not found")
    state = {
        k[len(prefix):]: v.float() if v.is_floating_point() else v
        for k, v in read_tensors(path).items()
        if k.startswith(prefix)
    }
    own = module.state_dict()
    if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
        raise UsageError(f"warm start: the tensors {prefix or ''}* in {path.name} do not fit")
    module.load_state_dict(state, strict=True)
