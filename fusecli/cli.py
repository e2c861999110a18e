"""fusecli's command line: thin Typer commands that parse options and call library code.

User errors (:class:`fusecli.errors.FuseError`) become one line on stderr and exit code 1 here, and
only here. Usage errors (a bad option) are Click's, exit code 2.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from fusecli import __version__
from fusecli.errors import FuseError
from fusecli.runtime import keep_freed_memory

app = typer.Typer(
    help="HDR fusion of exposure brackets (camera RAW or TIFF/PNG/JPEG stacks) with a learned fusion network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_USER_ERROR = 1
EXIT_NOT_IMPLEMENTED = 2


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a FuseError into its one-line message on stderr and exit code 1."""
    try:
        yield
    except FuseError as e:
        typer.echo(f"fusecli: error: {e}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fusecli {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """fusecli: fuse exposure brackets into one image."""


def _parse_ratios(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise FuseError(f"--ratios {text!r}: expected comma-separated numbers such as 1,0.25,0.0625") from None
    return values


def _not_implemented(command: str) -> None:
    typer.echo(f"fusecli {command}: not implemented yet (this release reads, groups and synthesises stacks only)", err=True)
    raise typer.Exit(EXIT_NOT_IMPLEMENTED)


@app.command()
def train() -> None:
    """Train the fusion network on stacks with labels (not implemented yet)."""
    _not_implemented("train")


@app.command()
def fuse() -> None:
    """Fuse bracket stacks into one image each (not implemented yet)."""
    _not_implemented("fuse")


@app.command("eval")
def evaluate() -> None:
    """Score a model and baselines against held-out labels (not implemented yet)."""
    _not_implemented("eval")


def main() -> None:
    keep_freed_memory()
    app()


if __name__ == "__main__":
    main()
