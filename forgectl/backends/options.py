"""Method options given as ``--param KEY=VALUE``: check names and numbers up front."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from forgectl.errors import UsageError


def numeric_options(
    method: str, options: Mapping[str, Any], defaults: Mapping[str, float]
) -> dict[str, float]:
    """Merge user options over ``defaults``, all numeric.

    Raises:
        UsageError: an unknown option name, or a value that is not a number.
    """
    merged = dict(defaults)
    for key, value in options.items():
        if key not in defaults:
            known = ", ".join(defaults)
            raise UsageError(f"{method} has no option {key!r} (options: {known})")
        try:
            merged[key] = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{method} option {key}={value!r} is not a number") from None
    return merged


def require(condition: bool, message: str) -> None:
    """Raise :class:`UsageError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UsageError(message)
