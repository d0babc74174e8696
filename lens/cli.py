"""The `lens` command line: one module per command under ``lens/commands``.

Each command module exposes ``register(app)``. Heavy imports (torch, lenstronomy,
submitit) happen inside the command bodies so that ``lens --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys

import typer

from lens import __version__
from lens.errors import LensError
from lens.interrupts import ignore_late_notices

# Order is the order of `lens --help`: data, then training, then the cluster, then results.
COMMANDS = [
    "demo",
    "simulate",
    "pack",
    "inspect",
    "stats",
    "train",
    "submit",
    "generate",
    "status",
    "cancel",
    "report",
    "predict",
]

app = typer.Typer(
    name="lens",
    help="DeepLense strong-lensing experiments: data, training, and Slurm batch jobs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """DeepLense strong-lensing experiments: data, training, and Slurm batch jobs."""


for _name in COMMANDS:
    try:
        _module = importlib.import_module(f"lens.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command still being written
        if exc.name != f"lens.commands.{_name}":
            raise
        continue
    _module.register(app)


def run() -> None:
    """The `lens` program (console script, ``python -m lens``): :func:`main`, and then no
    late SIGUSR2 can change its exit code while the process ends."""
    try:
        main()
    finally:
        ignore_late_notices()


def main(argv: list[str] | None = None) -> None:
    """The command line in this process: LensError becomes a one-line message and a
    non-zero exit."""
    try:
        code = app(args=argv, standalone_mode=False)
    except LensError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.RED)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except OSError as exc:  # the file system refused (a folder that cannot be written...)
        where = f"{exc.filename}: " if exc.filename else ""
        typer.secho(f"error: {where}{exc.strerror or exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit code
        # duck-typed: recent typer vendors click, so `import click` may fail
        exit_code = getattr(exc, "exit_code", None)
        if callable(getattr(exc, "show", None)) and isinstance(exit_code, int):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code:  # recent typer returns Exit codes (130: Ctrl-C) here
        if code == 130:
            typer.secho("interrupted", err=True, fg=typer.colors.RED)
        sys.exit(code)
