"""Known error types. The CLI maps each to one line on stderr and an exit code.

Anything that is not a :class:`ForgectlError` is a bug and shows a traceback only when
``FORGECTL_DEBUG=1`` is set. Messages name files and causes, never Python objects.
"""

from __future__ import annotations

import re

#: ``<_io.BytesIO object at 0x7f...>``, ``<function f at 0x...>``: Python internals, not news.
_OBJECT_REPR = re.compile(r"\s*<[^<>]*\bat 0x[0-9a-fA-F]+>")


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


class OutputError(ForgectlError):
    """Outputs cannot be written: the output folder is not a folder or not writable, the disk
    is full. Nothing half-written is left; a batch stops (exit 74, ``EX_IOERR``)."""

    exit_code = 74


#: Errors that mean a method cannot run at all (its weights are damaged or missing, a runtime
#: this install lacks, options that do not fit), whatever the image: the front ends stop on
#: them instead of recording one failure per image or blinding a fusion member.
CANNOT_RUN: tuple[type[ForgectlError], ...] = (WeightsError, UsageError)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (the CLI installs the handler), so clean-up runs as
    for Ctrl-C; the CLI exits 143 (128 + SIGTERM) instead of 130. Not a KeyboardInterrupt:
    click turns those into its own exit 130 before the CLI could say 143."""


def describe(exc: BaseException, limit: int = 200) -> str:
    """A third-party exception as one short line fit for a user: object reprs
    (``<... at 0x...>``) removed, whitespace and newlines collapsed, at most ``limit``
    characters; the exception's type name when nothing is left."""
    text = " ".join(_OBJECT_REPR.sub("", str(exc)).split()).strip(" :")
    if not text:
        text = type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def rebuild(name: str, message: str, code: int) -> ForgectlError:
    """A :class:`ForgectlError` sent across a process boundary as (class name, message, exit
    code), raised again on this side as the same class when it is one of ours."""
    cls = globals().get(name)
    if not (isinstance(cls, type) and issubclass(cls, ForgectlError)):
        cls = ForgectlError
    exc = cls(message)
    exc.exit_code = code
    return exc


def require_torch(purpose: str) -> None:
    """Raise a one-line :class:`UsageError` when PyTorch is not installed: the default install
    runs every shipped method in onnxruntime, and only ``purpose`` (training, export, the
    torch runtime) needs the ``train`` extra."""
    try:
        import torch  # noqa: F401  (imported by the caller next anyway)
    except ImportError:
        raise UsageError(f"{purpose} needs PyTorch, which this install does not have: "
                         "pip install 'forgectl[train]'") from None
