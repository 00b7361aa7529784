"""publish, pull, ls and verify: moving bundles in and out of a store, and checking them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from factory.cli.app import app, reports_errors
from factory.cli.options import EndpointOption, StoreMatrixOption, StoreOption, TrustOption, retired, trusted
from factory.cli.render import (
    echo_lines,
    export_repo_lines,
    index_table,
    mlc_cache_lines,
    print_out,
    publish_lines,
    pulled_lines,
    verified_line,
)

PANEL = "Publish and pull"


@app.command(rich_help_panel=PANEL)
@reports_errors
def publish(
    bundles: Annotated[list[Path], typer.Argument(help="Bundle folders `factory build` wrote.")],
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    matrix: StoreMatrixOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel uploads.")] = 8,
    no_index: Annotated[
        bool, typer.Option("--no-index", help="Leave the index to `factory release` (release build jobs).")
    ] = False,
) -> None:
    """Upload missing blobs, then bundle manifests, then the index."""
    from factory.store.choice import choose_store
    from factory.store.publish import publish as do_publish

    target = choose_store(store, endpoint_url, matrix, create=True)
    echo_lines(publish_lines(do_publish(target, bundles, jobs=jobs, index=not no_index), target.url))


@app.command(rich_help_panel=PANEL)
@reports_errors
def pull(
    model: Annotated[str, typer.Argument(help="Model name, e.g. rwkv-5-world-3b.")],
    quant: Annotated[str, typer.Option("--quant", "-q", help="Quantization, e.g. q4f16_1.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Target name, or auto (this host's).")],
    version: Annotated[str | None, typer.Option("--version", help="Default: the latest not yanked.")] = None,
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    out: Annotated[Path, typer.Option("--out", help="The folder the bundle folder is made in.")] = Path("."),
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Blob cache [default: $FACTORY_CACHE or ~/.cache/factory].")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel downloads.")] = 8,
    matrix: StoreMatrixOption = None,
    _o: Annotated[
        str | None, typer.Option("-o", hidden=True, callback=retired("-o (a file in every command)", "--out DIR"))
    ] = None,
    trust: TrustOption = None,
    runtime: Annotated[
        list[str] | None,
        typer.Option(
            "--runtime",
            help="The runtime you have, KEY=VALUE (mlc-llm=COMMIT, tvm=VERSION, flow=, device=); repeatable. "
            "A bundle that does not fit is refused before any download.",
        ),
    ] = None,
    mlc_cache: Annotated[
        Path | None,
        typer.Option(
            "--mlc-cache",
            help="Also lay the weights out where mlc-llm resolves HF://ORG/REPO offline "
            "(DIR/hf/ORG/REPO; set MLC_LLM_READONLY_WEIGHT_CACHE=DIR) and the library under DIR/libs.",
        ),
    ] = None,
    repo: Annotated[
        str | None, typer.Option("--repo", help="With --mlc-cache: ORG/REPO [default: factory/MODEL-QUANT-MLC].")
    ] = None,
) -> None:
    """Download a bundle, verify every byte, and lay it out for its runtime."""
    from factory.devices.runtime import RuntimeSpec
    from factory.store.choice import choose_store
    from factory.store.pull import pull as do_pull

    spec = RuntimeSpec.parse(runtime) if runtime else None
    pulled = do_pull(
        choose_store(store, endpoint_url, matrix), model, quant, target, version=version, out=out,
        cache=cache, jobs=jobs, trust=trusted(trust), runtime=spec,
    )  # fmt: skip
    echo_lines(pulled_lines(pulled))
    if mlc_cache is not None:
        from factory.clients.mlc_repo import export_bundle

        echo_lines(mlc_cache_lines(export_bundle(pulled.path, mlc_cache, repo, hf_cache=True), mlc_cache))


@app.command("export", rich_help_panel=PANEL)
@reports_errors
def export(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder (factory pull or factory build made it).")],
    out: Annotated[Path, typer.Option("--out", help="Where the weight repo folder and libs/ are written.")],
    repo: Annotated[
        str | None, typer.Option("--repo", help="ORG/REPO it will be uploaded as [default: factory/MODEL-QUANT-MLC].")
    ] = None,
) -> None:
    """Write a verified bundle as a Hugging Face MLC weight repo (with a model card) and its library apart."""
    from factory.clients.mlc_repo import export_bundle

    echo_lines(export_repo_lines(export_bundle(bundle, out, repo)))


@app.command("ls", rich_help_panel=PANEL)
@reports_errors
def ls(
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    matrix: StoreMatrixOption = None,
    trust: TrustOption = None,
) -> None:
    """List the bundles a store's index holds."""
    from factory.store.choice import choose_store
    from factory.trust.policy import open_index

    print_out(index_table(open_index(choose_store(store, endpoint_url, matrix), trusted(trust))))


@app.command(rich_help_panel=PANEL)
@reports_errors
def verify(
    what: Annotated[
        str | None,
        typer.Argument(help="A bundle folder; without it, the store (--store, else the manifest's) is checked."),
    ] = None,
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    matrix: StoreMatrixOption = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Parallel downloads.")] = 8,
    trust: TrustOption = None,
) -> None:
    """Check every byte against its manifest: one bundle folder, or every blob of a store."""
    from factory.store.verify import verify as do_verify

    typer.echo(verified_line(do_verify(what, store=store, endpoint_url=endpoint_url, matrix=matrix, trust_keys=trust,
                                       jobs=jobs)))  # fmt: skip
