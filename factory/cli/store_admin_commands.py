"""Keeping a store: gc, yank, mirror, catalog; and release with its signing key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory.cli.app import app, reports_errors
from factory.cli.options import (
    EndpointOption,
    MatrixOption,
    OnlyOption,
    StoreMatrixOption,
    StoreOption,
    TrustOption,
    retired,
    trusted,
)
from factory.cli.render import echo_lines, gc_lines, keygen_lines, mirror_lines, release_lines, yank_line

PANEL = "Releases and store care"


@app.command(rich_help_panel=PANEL)
@reports_errors
def gc(
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    delete: Annotated[bool, typer.Option("--delete", help="Delete; without it, only list (dry run).")] = False,
    grace: Annotated[
        str, typer.Option("--grace", help="Keep unreferenced blobs younger than this (e.g. 30m, 24h, 7d; 0: none).")
    ] = "24h",
    matrix: StoreMatrixOption = None,
) -> None:
    """Remove blobs no bundle manifest references (a dry run unless --delete).

    Blobs younger than --grace are kept, so a publish running meanwhile keeps the blobs
    it uploaded before its manifests."""
    from factory.store.choice import choose_store
    from factory.store.housekeeping import gc as do_gc
    from factory.store.housekeeping import parse_duration

    seconds = parse_duration(grace)  # a bad --grace is refused before the store is opened
    report = do_gc(choose_store(store, endpoint_url, matrix), delete=delete, grace=seconds)
    echo_lines(gc_lines(report, grace))


@app.command(rich_help_panel=PANEL)
@reports_errors
def yank(
    model: Annotated[str, typer.Argument()],
    quant: Annotated[str, typer.Option("--quant", "-q")],
    target: Annotated[str, typer.Option("--target", "-t")],
    version: Annotated[str, typer.Option("--version")],
    reason: Annotated[str, typer.Option("--reason", help="Why; shown in `factory ls` and the index.")] = "",
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    matrix: StoreMatrixOption = None,
) -> None:
    """Mark a bundle version withdrawn, without deleting it."""
    from factory.store.choice import choose_store
    from factory.store.housekeeping import yank as do_yank

    name = "/".join((model, quant, target))
    index = do_yank(choose_store(store, endpoint_url, matrix), name, version, reason)
    typer.echo(yank_line(name, version, index))


@app.command(rich_help_panel=PANEL)
@reports_errors
def release(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    only: OnlyOption = None,
    notes: Annotated[Path | None, typer.Option("--notes", help="Also write the release notes (Markdown) here.")] = None,
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output-file",
            "-o",
            help="Also write the release manifest to this file (e.g. for attestation), and its signature "
            "beside it as NAME.signed.json.",
        ),
    ] = None,
    _out: Annotated[
        str | None,
        typer.Option("--out", hidden=True, callback=retired("--out (a folder in every command)", "--output-file FILE")),
    ] = None,
) -> None:
    """Write the release manifest and the index for the manifest's release version, and print the notes."""
    from factory.clients.release import release_matrix

    made, url = release_matrix(
        matrix, store=store, endpoint_url=endpoint_url, only=tuple(only or ()), notes=notes, output_file=output_file
    )
    echo_lines(release_lines(made, url))


@app.command(rich_help_panel=PANEL)
@reports_errors
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Private key file; the public key goes to OUT.pub.")] = Path(
        "factory-signing.key"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make an ed25519 signing key pair (private key mode 0600, never printed)."""
    from factory.trust.signing import keygen as make_keys

    echo_lines(keygen_lines(make_keys(out, force=force)))


@app.command(rich_help_panel=PANEL)
@reports_errors
def mirror(
    src: Annotated[str, typer.Argument(help="Source store URL (file://PATH, a path, s3://BUCKET/PREFIX).")],
    dst: Annotated[str, typer.Argument(help="Destination store URL; a path ending in .tar is a single-file store.")],
    only: OnlyOption = None,
    release_name: Annotated[
        str | None, typer.Option("--release", help="Only the bundles of this release (NAME or NAME@VERSION).")
    ] = None,
    endpoint_url: EndpointOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel blob copies.")] = 8,
    trust: TrustOption = None,
) -> None:
    """Copy what DST lacks (blobs verified byte by byte, then manifests, then the index)."""
    from factory.store.mirror_stores import run_mirror

    report = run_mirror(
        src, dst, only=only or [], release=release_name, endpoint_url=endpoint_url, jobs=jobs, trust=trusted(trust),
    )  # fmt: skip
    echo_lines(mirror_lines(report, src, dst))


@app.command(rich_help_panel=PANEL)
@reports_errors
def catalog(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.html and catalog.json.")],
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    publish_to_store: Annotated[
        bool, typer.Option("--publish", help="Also write them under catalog/ in the store (static website).")
    ] = False,
    trust: TrustOption = None,
    hf_org: Annotated[
        str, typer.Option("--hf-org", help="Namespace of the weight repos the client records name (factory export).")
    ] = "factory",
    libs_url: Annotated[
        str, typer.Option("--libs-url", help="Base URL of the published libraries, for WebLLM's model_lib.")
    ] = "libs",
    hub_url: Annotated[
        str,
        typer.Option("--hub-url", help="Where the weight repos are served (WebLLM's model URL, the run page's)."),
    ] = "https://huggingface.co",
) -> None:
    """Write a static catalog page of every bundle a store holds, and the page that runs its
    WebGPU bundles in the visitor's browser."""
    from factory.clients.catalog import ClientNames, make_catalog
    from factory.store.choice import choose_store

    names = ClientNames(org=hf_org, libs_url=libs_url, hub_url=hub_url)
    echo_lines(
        make_catalog(choose_store(store, endpoint_url), trusted(trust), out, publish=publish_to_store, names=names)
    )
