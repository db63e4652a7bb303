"""The one registry of methods: name -> "module:Class", imported only when used.

Adding a method = its module in this package + one line in ``_REGISTRY``. A contract test walks
this table, so every name here must be a working method. Backend modules must not import torch
at module level (``forgectl methods`` reads specs without it).
"""

from __future__ import annotations

import importlib
from typing import Any

from forgectl.backends.base import Backend, MethodSpec, Result
from forgectl.errors import UsageError

__all__ = ["Backend", "MethodSpec", "Result", "available", "get_class", "get_spec", "load"]

_REGISTRY: dict[str, str] = {
    "ela": "forgectl.backends.ela:ElaBackend",
    "copymove": "forgectl.backends.copymove:CopyMoveBackend",
    "dq": "forgectl.backends.dq:DqBackend",
    "grid": "forgectl.backends.grid:GridBackend",
    "noise": "forgectl.backends.noise:NoiseBackend",
    "ghost": "forgectl.backends.ghost:GhostBackend",
    "omni": "forgectl.backends.omni:OmniBackend",
    "reconwave": "forgectl.backends.reconwave:ReConWaveBackend",
}


def available() -> list[str]:
    """Registered method names, in registry order."""
    return list(_REGISTRY)


def get_class(name: str) -> type[Backend]:
    try:
        target = _REGISTRY[name]
    except KeyError:
        known = ", ".join(available())
        raise UsageError(f"unknown method {name!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_spec(name: str) -> MethodSpec:
    return get_class(name).spec


def load(name: str, **options: Any) -> Backend:
    """Construct the backend registered as ``name`` (weights, threshold, method options)."""
    return get_class(name)(**options)
