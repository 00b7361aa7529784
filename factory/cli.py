"""The `factory` command line. Thin: parse, call one function, map errors to exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from . import __version__
from .errors import FactoryError, InputError, Problem
from .lock import Lock, lock_path_for, missing_entries, read_lock
from .manifest.model import Manifest

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="factory",
    help="Build, bundle and publish MLC-LLM model artifacts from a matrix manifest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MatrixOption = Annotated[Path, typer.Option("--matrix", "-m", help="Matrix manifest, e.g. manifests/world.yaml")]


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


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    github = "github"


@app.command()
@reports_errors
def plan(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Keep cells whose MODEL/QUANT/TARGET matches this glob.")
    ] = None,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="Drop cells whose MODEL/QUANT/TARGET matches this glob.")
    ] = None,
    format: Annotated[PlanFormat, typer.Option("--format", "-f", help="Output format.")] = PlanFormat.table,
    locked: Annotated[
        bool, typer.Option("--locked", help="Fail if any floating reference lacks a lock entry.")
    ] = False,
) -> None:
    """Print the build graph: fetch, tokenizer, convert, compile and bundle nodes with build keys."""
    from .manifest import load_manifest
    from .plan import plan as make_plan
    from .plan_views import render_github, render_json, render_table

    loaded = load_manifest(matrix)
    lock_path = lock_path_for(matrix)
    lock = read_lock(lock_path)
    if locked:
        _require_locked(loaded.manifest, lock, lock_path)
    graph = make_plan(loaded, lock, only=only or (), skip=skip or ())
    if format is PlanFormat.json:
        sys.stdout.write(render_json(graph))
    elif format is PlanFormat.github:
        sys.stdout.write(render_github(graph))
    else:
        console = Console()
        if not console.is_terminal:
            console.width = 200  # piped output: no truncated columns
        console.print(render_table(graph))


def _require_locked(manifest: Manifest, lock: Lock, lock_path: Path) -> None:
    missing = missing_entries(manifest, lock)
    if missing:
        raise InputError(
            [
                Problem(
                    file=str(lock_path),
                    field=entry,
                    message="no lock entry for this floating reference",
                    fix="run `factory lock --matrix <manifest>` where the hub and registry are reachable, "
                    "or pin the exact commit/digest in the manifest",
                )
                for entry in missing
            ]
        )


@app.command()
@reports_errors
def lock(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    upgrade: Annotated[bool, typer.Option("--upgrade", help="Re-resolve entries the lock already has.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Resolve nothing; fail if the lock misses an entry.")] = False,
) -> None:
    """Resolve HF revisions and base-image digests into <manifest>.lock."""
    from .lock import resolve_lock, write_lock
    from .manifest import load_manifest
    from .resolvers import OnlineResolver

    loaded = load_manifest(matrix)
    lock_path = lock_path_for(matrix)
    current = read_lock(lock_path)
    if check:
        _require_locked(loaded.manifest, current, lock_path)
        typer.echo(f"{lock_path}: complete")
        return
    update = resolve_lock(loaded.manifest, current, OnlineResolver(), upgrade=upgrade)
    write_lock(lock_path, update.lock)
    for line in update.resolved:
        typer.echo(f"resolved {line}")
    typer.echo(f"{lock_path}: {len(update.resolved)} resolved, {len(update.kept)} kept")


tokenizer_app = typer.Typer(help="Build and check tokenizer files on their own.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("rwkv-world")
@reports_errors
def tokenizer_rwkv_world(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write tokenizer_model.")],
    vocab: Annotated[
        Path | None, typer.Option("--vocab", help="RWKV vocab file (default: the one the `rwkv` package ships).")
    ] = None,
    tokenizers_cpp: Annotated[
        str | None,
        typer.Option(
            "--tokenizers-cpp", help="Check with the encoder of this tokenizers-cpp commit (default: current)."
        ),
    ] = None,
) -> None:
    """Make MLC's RWKV World `tokenizer_model` from the upstream vocab and run the conformance check.

    The file is written only if the check passes."""
    from . import rwkv_world_tokenizer as tok

    source = vocab or tok.upstream_vocab_path()
    blob = tok.pack(tok.parse_vocab(source))
    encoder = tok.runtime_encoder(tokenizers_cpp) if tokenizers_cpp else "longest-prefix"
    report = tok.check_tokenizer(blob, encoder=encoder)
    if not report.passed:
        raise tok.explain_failure(report, f"tokenizers-cpp {tokenizers_cpp or 'at HEAD'}")
    tok.write_tokenizer_model(tok.unpack(blob), output)
    typer.echo(report.summary())
    typer.echo(f"wrote {output} ({len(blob)} bytes) from {source}")


@app.command()
def schema() -> None:
    """Print the manifest's JSON Schema (for editor completion)."""
    typer.echo(json.dumps(Manifest.model_json_schema(), indent=2))


def main() -> None:
    app(prog_name="factory")
