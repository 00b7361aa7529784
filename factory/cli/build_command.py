"""factory build: every selected cell of a manifest, then publish to --store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory.cli.app import app, reports_errors
from factory.cli.options import (
    EndpointOption,
    MatrixOption,
    MlcSourceOption,
    OfflineOption,
    OnlyOption,
    SkipOption,
    WheelhouseOption,
)
from factory.cli.render import build_summary, kernels_line, node_events, say_to, show_build_end, stderr_console

PANEL = "Plan and build"


@app.command(rich_help_panel=PANEL)
@reports_errors
def build(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    only: OnlyOption = None,
    skip: SkipOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Nodes run at the same time.")] = 2,
    work: Annotated[Path, typer.Option("--work", help="Node cache (outputs by build key).")] = Path(".factory"),
    out: Annotated[Path, typer.Option("--out", help="Where accepted bundles are laid out.")] = Path("dist"),
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Run a fixed prompt where the target's device exists.")
    ] = False,
    require_smoke: Annotated[
        bool, typer.Option("--require-smoke", help="Fail a cell whose smoke run did not pass (or could not run).")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="FACTORY_STORE",
            help="Skip cells this store already holds, and publish the accepted bundles to it.",
        ),
    ] = None,
    endpoint_url: EndpointOption = None,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="With --store: publish blobs and manifests, leave the index to release.")
    ] = False,
    registry: Annotated[
        str | None, typer.Option("--registry", help="Pull toolchain images by content tag from here before building.")
    ] = None,
    mlc_llm_source: MlcSourceOption = None,
    wheelhouse: WheelhouseOption = None,
    offline: OfflineOption = False,
) -> None:
    """Build every selected cell: fetch, tokenizer, convert once, compile per target, gate, bundle."""
    from factory.cells import BuildSettings
    from factory.cells.matrix import BuildRequest, build_matrix

    settings = BuildSettings(
        work=work,
        out=out,
        jobs=jobs,
        smoke=smoke,
        require_smoke=require_smoke,
        registry=registry,
        mlc_llm_source=mlc_llm_source,
        wheelhouse=wheelhouse,
        offline=offline,
    )
    request = BuildRequest(
        matrix=matrix,
        settings=settings,
        only=tuple(only or ()),
        skip=tuple(skip or ()),
        store=store,
        endpoint_url=endpoint_url,
        index=not no_index,
    )
    say = say_to(stderr_console())
    result = build_matrix(request, log=say, on_event=node_events(say), on_built=build_summary(out))
    show_build_end(result)
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command(rich_help_panel=PANEL)
@reports_errors
def kernels(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    only: OnlyOption = None,
    skip: SkipOption = None,
    work: Annotated[Path, typer.Option("--work", help="Node cache (outputs by build key).")] = Path(".factory"),
    mlc_llm_source: MlcSourceOption = None,
    wheelhouse: WheelhouseOption = None,
    offline: OfflineOption = False,
) -> None:
    """Compile the selected Metal cells up to their kernels in the toolchain's Linux image and
    check them (the .dylib is linked on macOS); keeps each cell's MSL under WORK/kernels/."""
    from factory.cells import BuildSettings
    from factory.cells.metal_kernels import check_metal_kernels, refuse_failed
    from factory.manifest.locked import load_locked
    from factory.plan.graph import plan as make_plan

    loaded, lock = load_locked(matrix, require_locked=True)
    graph = make_plan(loaded, lock, only=tuple(only or ()), skip=tuple(skip or ()))
    settings = BuildSettings(
        work=work, out=work / "unused-out", mlc_llm_source=mlc_llm_source, wheelhouse=wheelhouse, offline=offline
    )
    say = say_to(stderr_console())
    results = check_metal_kernels(loaded, lock, graph, settings, log=say)
    for result in results:
        typer.echo(kernels_line(result))
    refuse_failed(results)
