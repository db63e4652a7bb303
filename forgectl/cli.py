"""Typer app: wires one module per subcommand and maps known errors to one line.

Only wiring lives here. Command modules import heavy libraries (torch, cv2) inside their
functions so that ``forgectl --help`` stays fast.
Exit codes: 0 ok, 1 some input failed, 2 usage error, 3 ``--fail-on`` gate hit, 70 internal
error (a bug), 74 outputs cannot be written (full disk, not a folder, read-only), 130 Ctrl-C
(SIGINT), 143 SIGTERM. SIGTERM raises :class:`~forgectl.errors.Terminated` in the main thread,
so clean-up code runs as for Ctrl-C. Set ``FORGECTL_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import typer

from forgectl import __version__
from forgectl.commands import (
    benchmark,
    explain,
    export,
    localize,
    methods,
    restore,
    synth,
    train,
)

app = typer.Typer(
    name="forgectl",
    help="Find where an image was manipulated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help (click's): on an 80-column terminal Rich's boxed table gave the help text a
    # quarter of the width behind four name columns and a type column, and its box drawing
    # got in the way of `--help | grep`.
    rich_markup_mode=None,
    context_settings={"max_content_width": 160},  # wide terminals get wide help
)

# name, command, the one line `forgectl --help` lists it with
for _name, _command, _summary in (
    ("localize", localize.localize, "Find manipulated regions: mask, heatmap, overlay, JSON."),
    ("methods", methods.methods, "List the methods, or one method's options."),
    ("benchmark", benchmark.benchmark, "Score methods on a labelled dataset."),
    ("explain", explain.explain, "Evidence report for one image (HTML + JSON)."),
    ("synth", synth.synth, "Make synthetic forgeries from pristine photos."),
    ("train", train.train, "Train a method on synthetic forgeries."),
    ("export", export.export, "Export a learned method's network (ONNX)."),
    ("restore", restore.restore, "Undo a brightness/contrast change (PNG + JSON)."),
):
    # click's plain help rewraps each docstring paragraph to the terminal's width itself
    app.command(_name, short_help=_summary)(_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"forgectl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Find where an image was manipulated."""
    # intake.JPEG_READER_ENV, spelled out: importing intake (numpy, Pillow) only when it is set
    # keeps `forgectl --help` and `methods` fast.
    if os.environ.get("FORGECTL_JPEG_READER"):
        from forgectl.intake import jpeg_reader

        jpeg_reader()  # a wrong value is a usage error before any image is read


def _terminate(signum: int, frame: object) -> None:
    from forgectl.errors import Terminated

    raise Terminated()


def quiet_interrupts(hook: Any) -> Any:
    """``sys.unraisablehook`` that stays silent about a Ctrl-C or SIGTERM that landed in a
    finalizer (a second signal while worker pools shut down): the command is already stopping
    with its one line and exit code, so a traceback there is noise. Anything else goes to
    ``hook``."""
    from forgectl.errors import Terminated

    def unraisable(args: Any) -> None:
        if isinstance(args.exc_value, (Terminated, KeyboardInterrupt)):
            return
        hook(args)

    return unraisable


def main() -> None:
    """Console entry point: run the app, turn known errors into one line and an exit code."""
    from forgectl.errors import ForgectlError, Terminated, describe

    debug = os.environ.get("FORGECTL_DEBUG", "") not in ("", "0")
    if not debug:
        sys.unraisablehook = quiet_interrupts(sys.unraisablehook)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread (embedded use): leave SIGTERM alone
        pass
    try:
        app()
    except ForgectlError as exc:
        if debug:
            raise
        print(f"forgectl: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except Terminated:
        print("forgectl: terminated (SIGTERM)", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        print("forgectl: interrupted", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    except Exception as exc:  # an unexpected error is a bug: one line unless debugging
        if debug:
            raise
        print(
            f"forgectl: internal error: {type(exc).__name__}: {describe(exc)} "
            "(set FORGECTL_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        sys.exit(70)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
