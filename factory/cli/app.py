"""The `factory` application object and what every command shares: errors become
their message on stderr and their exit code (never a traceback)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer

from factory import __version__
from factory.errors import FactoryError

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="factory",
    help="Build, bundle and publish MLC-LLM model artifacts from a matrix manifest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a FactoryError into its message on stderr and its exit code; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except FactoryError as exc:
            typer.echo(exc.render(), err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"factory {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Build, bundle and publish MLC-LLM model artifacts from a matrix manifest."""
