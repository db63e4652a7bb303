"""The one registry of methods, as data: name -> backend, training recipe, status.

An entry names its backend class (``"module:Class"``) and, for a learned method, the module
of its training recipe (exposing ``recipe() -> Recipe``); both are imported only when used, so
``forgectl methods`` reads specs without loading torch. Status:

- ``ready``: runs with what the repository ships (classical, or learned with its weights);
- ``untrained``: a learned method whose recipe works but whose weights are not shipped yet:
  ``forgectl train`` trains it, ``forgectl methods`` lists it as untrained, ``localize``
  refuses it with one line (unless ``--weights`` names trained weights);
- ``component``: trainable, but a part of other methods (e.g. a noise extractor), not a method
  of its own.

Adding a method = its backend module, its recipe module (if learned) and one entry in
:data:`ENTRIES`. A contract test walks this table, so every ``ready`` name must work.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from forgectl.errors import UsageError

if TYPE_CHECKING:
    from forgectl.backends.base import Backend, MethodSpec
    from forgectl.training.recipe import Recipe

STATUSES = ("ready", "untrained", "component")


@dataclass(frozen=True)
class MethodEntry:
    """One registered method.

    Attributes:
        name: ``--method NAME``.
        backend: ``"module:Class"`` of its :class:`~forgectl.backends.base.Backend`, or None
            for a component that only trains.
        recipe: module exposing ``recipe() -> Recipe``, or None (classical methods).
        status: one of :data:`STATUSES`.
    """

    name: str
    backend: str | None
    recipe: str | None = None
    status: str = "ready"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"{self.name}: status must be one of {STATUSES}")
        if self.backend is None and self.status != "component":
            raise ValueError(f"{self.name}: only a component may have no backend")
        if self.status in ("untrained", "component") and self.recipe is None:
            raise ValueError(f"{self.name}: an {self.status} entry needs a recipe")


_ENTRIES: dict[str, MethodEntry] = {
    e.name: e
    for e in (
        MethodEntry("auto", "forgectl.fusion.backend:AutoBackend", "forgectl.fusion.recipe"),
        MethodEntry("omni", "forgectl.backends.omni:OmniBackend", "forgectl.recipes.omni"),
        MethodEntry("reconwave", "forgectl.backends.reconwave:ReConWaveBackend",
                    "forgectl.recipes.reconwave"),
        MethodEntry("mun", "forgectl.backends.mun:MunBackend", "forgectl.recipes.mun"),
        MethodEntry("focal", "forgectl.backends.focal:FocalBackend", "forgectl.recipes.focal"),
        MethodEntry("noiseprint", None, "forgectl.recipes.noiseprint", "component"),
        MethodEntry("ela", "forgectl.backends.ela:ElaBackend"),
        MethodEntry("copymove", "forgectl.backends.copymove:CopyMoveBackend"),
        MethodEntry("dq", "forgectl.backends.dq:DqBackend"),
        MethodEntry("grid", "forgectl.backends.grid:GridBackend"),
        MethodEntry("noise", "forgectl.backends.noise:NoiseBackend"),
        MethodEntry("ghost", "forgectl.backends.ghost:GhostBackend"),
    )
}


def entries() -> list[MethodEntry]:
    """Every entry, in registry order."""
    return list(_ENTRIES.values())


def available() -> list[str]:
    """Methods ``localize`` runs with what is shipped (status ``ready``), in registry order."""
    return [e.name for e in _ENTRIES.values() if e.status == "ready"]


def methods() -> list[str]:
    """Every method name (ready or untrained; not components), in registry order."""
    return [e.name for e in _ENTRIES.values() if e.backend is not None]


def trainable() -> list[str]:
    """Names ``forgectl train`` accepts (entries with a recipe)."""
    return [e.name for e in _ENTRIES.values() if e.recipe is not None]


def entry(name: str) -> MethodEntry:
    """The entry of ``name``.

    Raises:
        UsageError: unknown name (the known ones are listed).
    """
    try:
        return _ENTRIES[name]
    except KeyError:
        known = ", ".join(methods())
        raise UsageError(f"unknown method {name!r} (known: {known})") from None


def get_class(name: str) -> type[Backend]:
    """The backend class of ``name`` (imported now)."""
    target = entry(name).backend
    if target is None:
        raise UsageError(f"{name} is a component of other methods, not a method to run")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_spec(name: str) -> MethodSpec:
    return get_class(name).spec


def load(name: str, **options: Any) -> Backend:
    """Construct the backend of ``name`` (weights, threshold, runtime, method options).

    Raises:
        UsageError: unknown, or untrained and no ``weights`` given.
    """
    e = entry(name)
    if e.status == "untrained" and options.get("weights") is None:
        raise UsageError(
            f"{name} is not trained yet: no weights are shipped (train it with `forgectl "
            f"train --method {name}`, then pass --weights)"
        )
    return get_class(name)(**options)


def load_recipe(name: str) -> Recipe:
    """The training recipe of ``name``.

    Raises:
        UsageError: unknown name, or a method that cannot be trained.
    """
    module = entry(name).recipe
    if module is None:
        raise UsageError(f"method {name!r} cannot be trained (trainable: "
                         f"{', '.join(trainable())})")
    return importlib.import_module(module).recipe()


@contextmanager
def registered(new: MethodEntry) -> Iterator[MethodEntry]:
    """Inside the block, ``new`` is registered (a method defined outside the package, e.g. by a
    plug-in or a test); the registry is restored afterwards."""
    previous = _ENTRIES.get(new.name)
    _ENTRIES[new.name] = new
    try:
        yield new
    finally:
        if previous is None:
            _ENTRIES.pop(new.name, None)
        else:
            _ENTRIES[new.name] = previous
