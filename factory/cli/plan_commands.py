"""plan, lock and schema: what a manifest resolves to, without building anything."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from factory.cli.app import app, reports_errors
from factory.cli.options import MatrixOption, OnlyOption, SkipOption
from factory.cli.render import echo_lines, lock_lines, print_out

PANEL = "Plan and build"


class PlanFormat(StrEnum):
    table = "table"
    json = "json"
    github = "github"


@app.command(rich_help_panel=PANEL)
@reports_errors
def plan(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    only: OnlyOption = None,
    skip: SkipOption = None,
    format: Annotated[PlanFormat, typer.Option("--format", "-f", help="Output format.")] = PlanFormat.table,
    locked: Annotated[
        bool, typer.Option("--locked", help="Fail if any floating reference lacks a lock entry.")
    ] = False,
) -> None:
    """Print the build graph: fetch, tokenizer, convert, compile and bundle nodes with build keys."""
    from factory.manifest.locked import load_locked
    from factory.plan.graph import plan as make_plan
    from factory.plan.views import render_github, render_json, render_table

    loaded, lock = load_locked(matrix, require_locked=locked)
    graph = make_plan(loaded, lock, only=only or (), skip=skip or ())
    if format is PlanFormat.json:
        sys.stdout.write(render_json(graph))
    elif format is PlanFormat.github:
        sys.stdout.write(render_github(graph))
    else:
        print_out(render_table(graph))


@app.command(rich_help_panel=PANEL)
@reports_errors
def lock(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    upgrade: Annotated[bool, typer.Option("--upgrade", help="Re-resolve entries the lock already has.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Resolve nothing; fail if the lock misses an entry.")] = False,
    local_images: Annotated[
        bool,
        typer.Option(
            "--local-images",
            envvar="FACTORY_LOCAL_IMAGES",
            help="Lock base images by the local engine's image id (offline builders).",
        ),
    ] = False,
) -> None:
    """Resolve HF revisions and base-image digests into <manifest>.lock."""
    from factory.manifest.locked import update_lock

    echo_lines(lock_lines(update_lock(matrix, upgrade=upgrade, check=check, local_images=local_images)))


class SchemaDocument(StrEnum):
    manifest = "manifest"
    bundle = "bundle"
    store_index = "index"
    release = "release"
    signed = "signed"


@app.command(rich_help_panel=PANEL)
def schema(
    document: Annotated[
        SchemaDocument,
        typer.Option(
            "--document",
            "-d",
            help="manifest: the matrix manifest; bundle, index, release, signed: the store's documents.",
        ),
    ] = SchemaDocument.manifest,
) -> None:
    """Print a JSON Schema: the matrix manifest's (for editor completion) or a store document's."""
    from factory.cli.schemas import json_schema

    typer.echo(json_schema(document.value))
