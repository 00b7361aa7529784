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
from rich.status import Status

from . import __version__
from .errors import FactoryError, InputError, Problem
from .executor import Outcome
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
    local_images: Annotated[
        bool,
        typer.Option("--local-images", help="Lock base images by the local engine's image id (offline builders)."),
    ] = False,
) -> None:
    """Resolve HF revisions and base-image digests into <manifest>.lock."""
    from .lock import resolve_lock, write_lock
    from .manifest import load_manifest
    from .resolvers import LocalImageResolver, OnlineResolver

    loaded = load_manifest(matrix)
    lock_path = lock_path_for(matrix)
    current = read_lock(lock_path)
    if check:
        _require_locked(loaded.manifest, current, lock_path)
        typer.echo(f"{lock_path}: complete")
        return
    resolver = LocalImageResolver() if local_images else OnlineResolver()
    update = resolve_lock(loaded.manifest, current, resolver, upgrade=upgrade, local_images=local_images)
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
@reports_errors
def build(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Build cells whose MODEL/QUANT/TARGET matches this glob.")
    ] = None,
    skip: Annotated[
        list[str] | None, typer.Option("--skip", help="Leave out cells whose MODEL/QUANT/TARGET matches this glob.")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Nodes run at the same time.")] = 2,
    work: Annotated[Path, typer.Option("--work", help="Node cache (outputs by build key).")] = Path(".factory"),
    out: Annotated[Path, typer.Option("--out", help="Where accepted bundles are laid out.")] = Path("dist"),
    smoke: Annotated[
        bool, typer.Option("--smoke", help="Run a fixed prompt where the target's device exists.")
    ] = False,
    require_smoke: Annotated[
        bool, typer.Option("--require-smoke", help="Fail a cell whose smoke run did not pass (or could not run).")
    ] = False,
) -> None:
    """Build every selected cell: fetch, tokenizer, convert once, compile per target, gate, bundle."""
    from .build import BuildSettings, execute
    from .build_report import exit_code, render_summary
    from .manifest import load_manifest
    from .plan import plan as make_plan

    loaded = load_manifest(matrix)
    lock_path = lock_path_for(matrix)
    lock = read_lock(lock_path)
    _require_locked(loaded.manifest, lock, lock_path)
    graph = make_plan(loaded, lock, only=only or (), skip=skip or ())
    console = Console(stderr=True, soft_wrap=True)
    settings = BuildSettings(work=work, out=out, jobs=jobs, smoke=smoke, require_smoke=require_smoke)

    def show(outcome: Outcome) -> None:
        if outcome.status in {"built", "failed", "blocked"}:
            console.print(
                f"{outcome.status:>8} {outcome.node} {outcome.detail.splitlines()[0] if outcome.detail else ''}",
                markup=False,
                highlight=False,
            )

    outcomes = execute(
        loaded,
        lock,
        graph,
        settings,
        log=lambda line: console.print(line, markup=False, highlight=False),
        on_event=show,
    )
    stdout = Console(soft_wrap=True)
    if not stdout.is_terminal:
        stdout.width = 200
    stdout.print(render_summary(graph, outcomes, out))
    code = exit_code(outcomes)
    if code:
        for outcome in outcomes:
            if outcome.status == "failed":
                typer.echo(outcome.detail, err=True)
        raise typer.Exit(code)


images_app = typer.Typer(help="Build, list and push pinned toolchain images.", no_args_is_help=True)
app.add_typer(images_app, name="images")


@images_app.command("build")
@reports_errors
def images_build(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    toolchain: Annotated[
        list[str] | None, typer.Option("--toolchain", "-t", help="Build only this toolchain (repeatable).")
    ] = None,
    push: Annotated[str | None, typer.Option("--push", help="Also push to this registry, e.g. ghcr.io/org.")] = None,
    ca_cert: Annotated[
        list[Path] | None, typer.Option("--ca-cert", help="Extra CA certificate (PEM) trusted during the build.")
    ] = None,
    wheelhouse: Annotated[
        Path | None, typer.Option("--wheelhouse", help="Folder of wheels pip may install from.")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="pip installs only from --wheelhouse.")] = False,
) -> None:
    """Build each toolchain's image unless its content tag already exists."""
    from .engine import docker_client
    from .image_plan import plan_image
    from .images import BuildExtras, BuildLog, build_image, check_extras, local_image_id, push_image
    from .manifest import load_manifest

    loaded = load_manifest(matrix)
    names = _toolchain_names(loaded.manifest, toolchain or [], matrix)
    extras = BuildExtras(ca_certs=tuple(ca_cert or ()), wheelhouse=wheelhouse, offline=offline)
    check_extras(extras)
    lock = read_lock(lock_path_for(matrix))
    client = docker_client()
    console = Console(stderr=True, soft_wrap=True)
    for name in names:
        base = loaded.manifest.toolchains[name].base_image
        image = plan_image(loaded, name, lock, local_base_id=local_image_id(client, base))
        if not image.base_locked:
            console.print(f"[yellow]warning:[/] {name}: base image {base} is not locked; using the local copy")
        with console.status(f"{name}: preparing") as status:

            def show_step(n: int, total: int, text: str, name: str = name, status: Status = status) -> None:
                status.update(f"{name}: step {n}/{total} {text[:60]}")

            log = BuildLog(line=lambda text: console.print(text, markup=False, highlight=False), step=show_step)
            outcome = build_image(client, image, extras, log)
            pushed = push_image(client, image, push, log) if push else None
        verb = "built" if outcome.built else "up to date"
        typer.echo(f"{name}\t{outcome.ref}\t{verb}" + (f"\tpushed {pushed}" if pushed else ""))


@images_app.command("ls")
@reports_errors
def images_ls(
    matrix: Annotated[
        Path | None, typer.Option("--matrix", "-m", help="Mark images current or stale against this manifest.")
    ] = None,
) -> None:
    """List toolchain images in the local engine."""
    from rich.table import Table

    from .engine import docker_client
    from .image_plan import plan_image
    from .images import list_images, local_image_id, missing_toolchains
    from .manifest import load_manifest

    client = docker_client()
    current: dict[str, str] | None = None
    if matrix is not None:
        loaded = load_manifest(matrix)
        lock = read_lock(lock_path_for(matrix))
        current = {}
        for name, chain in loaded.manifest.toolchains.items():
            local_base = local_image_id(client, chain.base_image)
            if lock.image_digest(chain.base_image) or local_base:
                current[name] = plan_image(loaded, name, lock, local_base_id=local_base).tag
    rows = list_images(client, current)
    table = Table("toolchain", "image", "created", "MB", "status", box=None)
    for row in rows:
        table.add_row(row.toolchain, row.ref, row.created, f"{row.size_mb:.1f}", row.status)
    for name in missing_toolchains(rows, current or {}):
        table.add_row(name, "-", "-", "-", "missing")
    console = Console()
    if not console.is_terminal:
        console.width = 200
    console.print(table)


@images_app.command("metal-env")
@reports_errors
def images_metal_env(
    toolchain: Annotated[str, typer.Option("--toolchain", "-t", help="The toolchain to build natively.")],
    matrix: MatrixOption = Path("manifests/world.yaml"),
    prefix_root: Annotated[
        Path | None,
        typer.Option(
            "--prefix-root",
            help="Cached folder of built toolchains, one prefix per hash [default: ~/.cache/factory/toolchains].",
        ),
    ] = None,
) -> None:
    """Print the exports images/metal-runner/bootstrap.sh reads, staging the patches it applies."""
    import shlex
    import shutil

    from .image_plan import plan_metal_prefix
    from .manifest import load_manifest

    loaded = load_manifest(matrix)
    _toolchain_names(loaded.manifest, [toolchain], matrix)
    prefix = plan_metal_prefix(loaded, toolchain)
    prefix_root = prefix_root or Path.home() / ".cache" / "factory" / "toolchains"
    env = {**prefix.env, "FACTORY_PREFIX_ROOT": str(prefix_root)}
    if prefix.patches:
        patch_dir = prefix_root / f"patches-{prefix.hash}"
        for dest, source in prefix.patches:
            (patch_dir / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, patch_dir / dest)
        env["PATCH_DIR"] = str(patch_dir)
    for key, value in env.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


def _toolchain_names(manifest: Manifest, chosen: list[str], matrix: Path) -> list[str]:
    unknown = [name for name in chosen if name not in manifest.toolchains]
    if unknown:
        raise InputError(
            [
                Problem(
                    file=str(matrix),
                    field="toolchains",
                    message=f"no toolchain named {name!r}",
                    fix=f"choose one of: {', '.join(sorted(manifest.toolchains))}",
                )
                for name in unknown
            ]
        )
    return chosen or sorted(manifest.toolchains)


@app.command()
def schema() -> None:
    """Print the manifest's JSON Schema (for editor completion)."""
    typer.echo(json.dumps(Manifest.model_json_schema(), indent=2))


def main() -> None:
    app(prog_name="factory")
