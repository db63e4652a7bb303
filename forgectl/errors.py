"""Known error types. The CLI maps each to one line on stderr and an exit code.

Anything that is not a :class:`ForgectlError` is a bug and shows a traceback only when
``FORGECTL_DEBUG=1`` is set.
"""

from __future__ import annotations


class ForgectlError(Exception):
    """An error with a message fit for a user, and the exit code it should cause."""

    exit_code: int = 1


class InputError(ForgectlError):
    """An input file cannot be used: missing, unreadable, not an image, corrupt, too large."""


class UsageError(ForgectlError):
    """Options that do not fit together or name something that does not exist."""

    exit_code = 2


class WeightsError(ForgectlError):
    """A weights file is missing, malformed, or does not match its model card."""


class NotApplicableError(ForgectlError):
    """A method cannot analyse this input (for example a JPEG-only method on a PNG)."""
