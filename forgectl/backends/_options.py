"""Typed method options: defaults as data, user values coerced to the default's type or refused.

Complements :func:`forgectl.backends.options.numeric_options` (numbers only) for methods whose
options also include names (``wavelet="db8"``) and lists (``qualities=[60,70,80]``):
``forgectl localize -p KEY=VALUE`` hands backends JSON scalars or lists, and a typo in a key or a
value of the wrong kind must become one clear :class:`UsageError`, not a traceback deep inside
numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forgectl.errors import UsageError


def _coerce(method: str, key: str, default: Any, value: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, str):
            return str(value)
        if isinstance(default, tuple):
            if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
                raise ValueError
            return tuple(_coerce(method, key, default[0], v) for v in value)
    except (TypeError, ValueError):
        kind = type(default).__name__ if not isinstance(default, tuple) else "list"
        raise UsageError(f"{method} option {key}={value!r} is not a {kind}") from None
    return value


def resolve_options(
    method: str, defaults: Mapping[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` updated with ``given``, each value coerced to its default's type.

    Raises:
        UsageError: an unknown key, or a value that cannot take the default's type.
    """
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults)
        raise UsageError(f"{method} has no option {unknown[0]!r} (options: {known})")
    return {k: _coerce(method, k, d, given[k]) if k in given else d for k, d in defaults.items()}
