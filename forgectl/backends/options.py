"""Declared method options (``forgectl localize -p KEY=VALUE``), checked in one place.

Every backend declares its options as data: a tuple of :class:`Option` (name, default, range or
choices, help). :func:`resolve_options` turns what the user gave into a complete, typed dict or
raises one :class:`UsageError` that names the valid options, so a typo (``-p tiel=512``) or a
bad value (``-p tile=abc``) is a usage error (exit 2) for every method alike, and
``forgectl methods NAME`` can list them.

Values arrive as JSON scalars or lists (``-p tile=512`` gives an int, ``-p wavelet=db4`` a
string, ``-p qualities=[60,70]`` a list) and are coerced to the default's type.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from forgectl.errors import UsageError


@dataclass(frozen=True)
class Option:
    """One method option.

    Attributes:
        name: the key of ``-p KEY=VALUE``.
        default: the value used when not given; its type is the option's type (bool, int,
            float, str, or a tuple for a list of one item type, taken from its first item).
        help: one line for ``forgectl methods NAME``.
        minimum, maximum: inclusive bounds for numbers (and for each item of a list).
        choices: the allowed values of a string option.
        multiple_of: integers must be a multiple of this (tile sizes on a network's stride).
    """

    name: str
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    multiple_of: int | None = None

    @property
    def kind(self) -> str:
        """``bool``, ``int``, ``float``, ``str`` or ``list``."""
        return "list" if isinstance(self.default, tuple) else type(self.default).__name__

    def describe(self) -> str:
        """The option's type and valid values in a few words (``int 64..4096, x32``)."""
        parts = [self.kind]
        if self.choices:
            parts = ["|".join(self.choices)]
        if self.minimum is not None or self.maximum is not None:
            lo = "" if self.minimum is None else f"{self.minimum:g}"
            hi = "" if self.maximum is None else f"{self.maximum:g}"
            parts.append(f"{lo}..{hi}")
        if self.multiple_of:
            parts.append(f"multiple of {self.multiple_of}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {"name": self.name, "type": self.kind, "default": default,
                "valid": self.describe(), "help": self.help}

    def coerce(self, method: str, value: Any) -> Any:
        """``value`` as this option's type, checked against its range and choices.

        Raises:
            UsageError: naming the option, the bad value and what is valid.
        """
        try:
            out = _as_type(self.default, value)
        except (TypeError, ValueError):
            raise UsageError(
                f"{method} option {self.name}={value!r} is not valid (expected "
                f"{self.describe()})") from None
        for item in out if isinstance(out, tuple) else (out,):
            if not self._in_range(item):
                raise UsageError(
                    f"{method} option {self.name}={value!r} is out of range (expected "
                    f"{self.describe()})")
        return out

    def _in_range(self, value: Any) -> bool:
        if self.choices is not None and value not in self.choices:
            return False
        if isinstance(value, bool) or not isinstance(value, int | float):
            return True
        if self.minimum is not None and value < self.minimum:
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        return not (self.multiple_of and int(value) % self.multiple_of)


def _as_type(default: Any, value: Any) -> Any:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "on", "off"):
            return value.lower() in ("true", "on")
        raise ValueError
    if isinstance(default, int):
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        return int(float(value))
    if isinstance(default, float):
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError
        return number
    if isinstance(default, str):
        if not isinstance(value, str | int | float | os.PathLike) or isinstance(value, bool):
            raise ValueError
        return str(value)
    if isinstance(default, tuple):
        items = value if isinstance(value, list | tuple) else [value]
        if not items:
            raise ValueError
        return tuple(_as_type(default[0], v) for v in items)
    raise TypeError(f"unsupported option type {type(default).__name__}")


def resolve_options(
    method: str, declared: Iterable[Option], given: Mapping[str, Any]
) -> dict[str, Any]:
    """Every declared option's value: the given one (coerced and checked) or its default.

    Raises:
        UsageError: an unknown key (the valid ones are named) or an invalid value.
    """
    table = {opt.name: opt for opt in declared}
    unknown = sorted(set(given) - set(table))
    if unknown:
        known = ", ".join(table) or "none"
        raise UsageError(f"{method} has no option {unknown[0]!r} (options: {known})")
    return {name: opt.coerce(method, given[name]) if name in given else opt.default
            for name, opt in table.items()}


def require(condition: bool, message: str) -> None:
    """Raise :class:`UsageError` with ``message`` unless ``condition`` holds (checks that
    relate two options, e.g. ``min_step <= max_step``)."""
    if not condition:
        raise UsageError(message)
