"""factory images: build, list and stage pinned toolchains."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory.cli.app import app, reports_errors
from factory.cli.options import MatrixOption, MlcSourceOption, OfflineOption, WheelhouseOption, retired
from factory.cli.render import (
    echo_lines,
    export_lines,
    image_line,
    image_session,
    image_table,
    print_out,
    stderr_console,
    warning_printer,
)

PANEL = "Toolchains and tools"

images_app = typer.Typer(help="Build, list and push pinned toolchain images.", no_args_is_help=True)
app.add_typer(images_app, name="images", rich_help_panel=PANEL)


@images_app.command("build")
@reports_errors
def images_build(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    toolchain: Annotated[
        list[str] | None, typer.Option("--toolchain", help="Build only this toolchain (repeatable).")
    ] = None,
    _t: Annotated[
        list[str] | None,
        typer.Option("-t", hidden=True, callback=retired("-t (--target in every command)", "--toolchain NAME")),
    ] = None,
    push: Annotated[str | None, typer.Option("--push", help="Also push to this registry, e.g. ghcr.io/org.")] = None,
    ca_cert: Annotated[
        list[Path] | None, typer.Option("--ca-cert", help="Extra CA certificate (PEM) trusted during the build.")
    ] = None,
    wheelhouse: WheelhouseOption = None,
    offline: OfflineOption = False,
    registry: Annotated[
        str | None,
        typer.Option("--registry", help="Try pulling the content tag from this registry before building (a cache)."),
    ] = None,
    mlc_llm_source: MlcSourceOption = None,
) -> None:
    """Build each toolchain's image unless its content tag already exists (locally, or in --registry)."""
    from factory.toolchains.images.builder import BuildExtras
    from factory.toolchains.images.manage import build_images

    extras = BuildExtras(
        ca_certs=tuple(ca_cert or ()), wheelhouse=wheelhouse, offline=offline, mlc_llm_source=mlc_llm_source
    )
    console = stderr_console()
    results = build_images(
        matrix, toolchain or [], extras, registry=registry, push=push, session=image_session(console),
        warn=warning_printer(console),
    )  # fmt: skip
    for result in results:
        typer.echo(image_line(result))


@images_app.command("ls")
@reports_errors
def images_ls(
    matrix: Annotated[
        Path | None, typer.Option("--matrix", "-m", help="Mark images current or stale against this manifest.")
    ] = None,
) -> None:
    """List toolchain images in the local engine."""
    from factory.toolchains.images.manage import list_toolchain_images

    print_out(image_table(list_toolchain_images(matrix)))


@images_app.command("metal-env")
@reports_errors
def images_metal_env(
    toolchain: Annotated[str, typer.Option("--toolchain", help="The toolchain to build natively.")],
    matrix: MatrixOption = Path("manifests/world.yaml"),
    _t: Annotated[
        str | None,
        typer.Option("-t", hidden=True, callback=retired("-t (--target in every command)", "--toolchain NAME")),
    ] = None,
    prefix_root: Annotated[
        Path | None,
        typer.Option(
            "--prefix-root",
            envvar="FACTORY_PREFIX_ROOT",
            help="Cached folder of built toolchains, one prefix per hash [default: ~/.cache/factory/toolchains].",
        ),
    ] = None,
) -> None:
    """Print the exports images/metal-runner/bootstrap.sh reads, staging the patches it applies."""
    from factory.toolchains.images.manage import metal_exports

    echo_lines(export_lines(metal_exports(matrix, toolchain, prefix_root)))
