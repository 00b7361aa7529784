"""The `factory` command line. Thin: parse, call one function, map errors to exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.status import Status

from . import __version__
from .errors import FactoryError, InputError, Problem, UsageError
from .executor import Outcome
from .lock import Lock, lock_path_for, missing_entries, read_lock
from .manifest.load import LoadedManifest
from .manifest.model import Manifest
from .storage import Store

if TYPE_CHECKING:
    from .trust import Trust

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
OnlyOption = Annotated[
    list[str] | None, typer.Option("--only", help="Keep cells whose MODEL/QUANT/TARGET matches this glob.")
]
SkipOption = Annotated[
    list[str] | None, typer.Option("--skip", help="Leave out cells whose MODEL/QUANT/TARGET matches this glob.")
]
DEFAULT_MATRIX = Path("manifests/world.yaml")


def _retired(spelling: str, instead: str) -> Callable[[object], object]:
    """A callback for a hidden option that only says what replaced it: the same
    letter or name means one thing in every command (see the README's option table)."""

    def refuse(value: object) -> object:
        if value not in (None, [], ()):
            raise typer.BadParameter(f"{spelling} is no longer accepted here; use {instead}")
        return value

    return refuse


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
    only: OnlyOption = None,
    skip: SkipOption = None,
    format: Annotated[PlanFormat, typer.Option("--format", "-f", help="Output format.")] = PlanFormat.table,
    locked: Annotated[
        bool, typer.Option("--locked", help="Fail if any floating reference lacks a lock entry.")
    ] = False,
) -> None:
    """Print the build graph: fetch, tokenizer, convert, compile and bundle nodes with build keys."""
    from .plan import plan as make_plan
    from .plan_views import render_github, render_json, render_table

    loaded, lock = _manifest_and_lock(matrix, require_locked=locked)
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


def _manifest_and_lock(matrix: Path, *, require_locked: bool) -> tuple[LoadedManifest, Lock]:
    """The manifest and its lock; with require_locked, every floating reference must be locked."""
    from .manifest import load_manifest

    loaded = load_manifest(matrix)
    lock_path = lock_path_for(matrix)
    lock = read_lock(lock_path)
    if require_locked:
        _require_locked(loaded.manifest, lock, lock_path)
    return loaded, lock


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
    output: Annotated[Path, typer.Option("--output-file", "-o", help="The file to write (tokenizer_model).")],
    vocab: Annotated[
        Path | None, typer.Option("--vocab", help="RWKV vocab file (default: the one the `rwkv` package ships).")
    ] = None,
    tokenizers_cpp: Annotated[
        str | None,
        typer.Option(
            "--tokenizers-cpp", help="Check with the encoder of this tokenizers-cpp commit (default: current)."
        ),
    ] = None,
    _output: Annotated[
        str | None,
        typer.Option("--output", hidden=True, callback=_retired("--output", "--output-file FILE (or -o FILE)")),
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


MlcSourceOption = Annotated[
    Path | None,
    typer.Option(
        "--mlc-llm-source",
        envvar="FACTORY_MLC_LLM_SOURCE",
        help="Wheel toolchains: a local mlc-llm archive (.tar.gz) or checkout at the pinned commit "
        "(default: download GitHub's archive of the commit).",
    ),
]


@app.command()
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
) -> None:
    """Build every selected cell: fetch, tokenizer, convert once, compile per target, gate, bundle."""
    from .build import BuildSettings, execute
    from .build_report import exit_code, render_summary
    from .plan import plan as make_plan
    from .store_index import published_build_keys

    loaded, lock = _manifest_and_lock(matrix, require_locked=True)
    graph = make_plan(loaded, lock, only=only or (), skip=skip or ())
    console = Console(stderr=True, soft_wrap=True)
    settings = BuildSettings(
        work=work,
        out=out,
        jobs=jobs,
        smoke=smoke,
        require_smoke=require_smoke,
        registry=registry,
        mlc_llm_source=mlc_llm_source,
    )

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    def show(outcome: Outcome) -> None:
        if outcome.status in {"built", "failed", "blocked"}:
            first = outcome.detail.splitlines()[0] if outcome.detail else ""
            say(f"{outcome.status:>8} {outcome.node} {first}")

    target_store = _open_store(store, endpoint_url) if store else None
    published = published_build_keys(target_store) if target_store else set()
    outcomes = execute(
        loaded, lock, graph, settings, log=say, on_event=show, in_store=lambda node: node.key in published
    )
    stdout = Console(soft_wrap=True)
    if not stdout.is_terminal:
        stdout.width = 200
    stdout.print(render_summary(graph, outcomes, out))
    code = exit_code(outcomes)
    if target_store is not None:
        from .build import bundle_name
        from .publish import publish as do_publish

        by_id = {n.id: n for n in graph.nodes}
        ready = [
            out / bundle_name(by_id[o.node]) for o in outcomes if o.kind == "bundle" and o.status in {"built", "cached"}
        ]
        if ready:
            report = do_publish(target_store, ready, index=not no_index)
            for name in report.already:
                typer.echo(f"{name}: this version is already published from the same build key; kept as it was")
            typer.echo(
                f"published {len(report.bundles)} bundle(s) to {target_store.url}: "
                f"uploaded {report.uploaded_blobs} blob(s), {report.uploaded_bytes} bytes"
            )
    if code:
        for outcome in outcomes:
            if outcome.status == "failed":
                typer.echo(outcome.detail, err=True)
        raise typer.Exit(code)


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="FACTORY_STORE",
        help="file://PATH, a plain path, or s3://BUCKET/PREFIX [default: the manifest's]",
    ),
]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS).")
]
TrustOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trust",
        help="A trusted public key (ed25519:...) or a file of them; repeatable. "
        "[default: FACTORY_TRUST, else ~/.config/factory/trusted-keys]",
    ),
]


def _trust(keys: list[str] | None) -> Trust | None:
    from .trust import load_trust

    return load_trust(keys)


StoreMatrixOption = Annotated[
    Path | None,
    typer.Option(
        "--matrix", "-m", help=f"Without --store, use this manifest's `store:` [default: {DEFAULT_MATRIX}, if present]."
    ),
]


def _open_store(store: str | None, endpoint_url: str | None, matrix: Path | None = None) -> Store:
    """The store every store command uses: --store (or FACTORY_STORE), else the
    `store:` of --matrix, else that of manifests/world.yaml when it is here."""
    from .storage import open_store

    if store:
        return open_store(store, endpoint_url=endpoint_url)
    path = matrix if matrix is not None else DEFAULT_MATRIX
    if matrix is not None or path.is_file():
        from .manifest import load_manifest

        loaded = load_manifest(path)
        return open_store(loaded.manifest.store, endpoint_url=endpoint_url, base=loaded.root)
    raise UsageError(
        "no store given",
        hint=f"pass --store URL, set FACTORY_STORE, or --matrix MANIFEST to use its `store:` "
        f"(default {DEFAULT_MATRIX}, when it exists)",
    )


@app.command()
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
    from .publish import publish as do_publish

    target = _open_store(store, endpoint_url, matrix)
    report = do_publish(target, bundles, jobs=jobs, index=not no_index)
    for name in report.already:
        typer.echo(f"{name}: this version is already published from the same build key; kept as it was")
    typer.echo(
        f"published {len(report.bundles)} bundle(s) to {target.url}: uploaded {report.uploaded_blobs} blob(s), "
        f"{report.uploaded_bytes} bytes; {report.present_blobs} already there"
    )


@app.command()
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
        str | None, typer.Option("-o", hidden=True, callback=_retired("-o (a file in every command)", "--out DIR"))
    ] = None,
    trust: TrustOption = None,
) -> None:
    """Download a bundle, verify every byte, and lay it out for its runtime."""
    from .paths import blob_cache
    from .pull import pull as do_pull

    source = _open_store(store, endpoint_url, matrix)
    pulled = do_pull(
        source, model, quant, target, version=version, out=out, cache=cache or blob_cache(), jobs=jobs,
        trust=_trust(trust),
    )  # fmt: skip
    typer.echo(f"pulled {pulled.name} {pulled.version} into {pulled.path} ({pulled.downloaded_bytes} bytes downloaded)")
    typer.echo(f"run it with:\n  {pulled.run}")


@app.command("ls")
@reports_errors
def ls(
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    matrix: StoreMatrixOption = None,
    trust: TrustOption = None,
) -> None:
    """List the bundles a store's index holds."""
    from rich.table import Table

    from .trust import open_index

    source = _open_store(store, endpoint_url, matrix)
    index = open_index(source, _trust(trust))
    table = Table("bundle", "version", "size MB", "flow", "published", "status", box=None)
    for name, entry in sorted(index.bundles.items()):
        for version, record in sorted(entry.versions.items(), key=lambda kv: kv[1].published_at):
            status = "yanked" if record.yanked else ("latest" if entry.latest == version else "")
            flow = record.compatibility.flow
            table.add_row(name, version, f"{record.size / 1e6:.1f}", flow, record.published_at, status)
    console = Console()
    if not console.is_terminal:
        console.width = 200
    console.print(table)


@app.command("run")
@reports_errors
def run_command(
    bundle: Annotated[Path, typer.Argument(help="A CPU bundle folder (factory build --out, or factory pull).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the user says.")] = "Hello",
    tokens: Annotated[int, typer.Option("--tokens", "-n", min=1, help="Tokens to generate (greedy).")] = 16,
    raw: Annotated[bool, typer.Option("--raw", help="Feed --prompt as is, without the conversation template.")] = False,
    on_host: Annotated[
        bool, typer.Option("--on-host", help="Use this machine's TVM instead of the toolchain image.")
    ] = False,
    image: Annotated[str | None, typer.Option("--image", help="Toolchain image (default: the bundle's).")] = None,
) -> None:
    """Run a prompt through a CPU bundle: encode with its tokenizer, prefill, decode; print figures."""
    from .run_bundle import RunRequest, run_bundle

    result = run_bundle(RunRequest(bundle=bundle, prompt=prompt, tokens=tokens, raw=raw, on_host=on_host, image=image))
    figures = result.figures
    typer.echo(figures.output)
    typer.echo(
        f"prefill {figures.prefill_tok_s} tok/s, decode {figures.decode_tok_s} tok/s, "
        f"logits {list(figures.logits_shape or ())} finite={figures.finite}, {result.verdict.status}"
    )
    if result.verdict.failed:
        raise typer.Exit(4)


@app.command()
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
    if what is not None and store:
        raise UsageError(
            f"give a bundle folder or --store, not both ({what!r} and --store {store!r})",
            hint="`factory verify FOLDER` checks one bundle; `factory verify --store URL` checks a store",
        )
    if what is not None and "://" not in what and not Path(what).is_dir():
        raise UsageError(
            f"{what}: no such bundle folder",
            hint="give a folder `factory pull` or `factory build` made, or check a store with --store URL",
        )
    path = Path(what) if what is not None else None
    if path is not None and "://" not in str(what):
        from .documents import BUNDLE_MANIFEST, BundleManifest, read_file
        from .integrity import check_bundle_dir

        if not (path / BUNDLE_MANIFEST).is_file():
            raise UsageError(
                f"{path} is not a bundle folder (no {BUNDLE_MANIFEST})",
                hint="give a folder `factory pull` or `factory build` made; check a store with --store URL",
            )
        manifest = read_file(BundleManifest, path / BUNDLE_MANIFEST, fix=f"pull or rebuild {path}; do not edit it")
        check_bundle_dir(path, manifest)
        typer.echo(f"{path}: {len(manifest.files)} files match their manifest")
        return
    from .housekeeping import verify_store

    # A store URL in place of the folder is still accepted: the older spelling of --store.
    target = _open_store(what or store, endpoint_url, matrix)
    bundles, blobs = verify_store(target, _trust(trust), jobs=jobs)
    typer.echo(f"{target.url}: {bundles} bundle version(s), {blobs} blob(s) verified")


@app.command()
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
    from .housekeeping import gc as do_gc
    from .housekeeping import parse_duration

    seconds = parse_duration(grace)
    report = do_gc(_open_store(store, endpoint_url, matrix), delete=delete, grace=seconds)
    for digest in report.unreferenced:
        typer.echo(digest)
    verb = "deleted" if report.deleted else "would delete (dry run; pass --delete)"
    typer.echo(f"{verb} {len(report.unreferenced)} unreferenced blob(s)")
    if report.young:
        typer.echo(
            f"kept {len(report.young)} unreferenced blob(s) younger than {grace} (a publish may still be running)"
        )


@app.command()
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
    from .housekeeping import yank as do_yank

    name = f"{model}/{quant}/{target}"
    index = do_yank(_open_store(store, endpoint_url, matrix), name, version, reason)
    typer.echo(f"yanked {name} {version}; latest is now {index.bundles[name].latest or 'none'}")


@app.command()
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
        typer.Option(
            "--out", hidden=True, callback=_retired("--out (a folder in every command)", "--output-file FILE")
        ),
    ] = None,
) -> None:
    """Write the release manifest and the index for the manifest's release version, and print the notes."""
    from .manifest import load_manifest
    from .plan import plan as make_plan
    from .release import make_release

    loaded = load_manifest(matrix)
    graph = make_plan(loaded, read_lock(lock_path_for(matrix)), only=only or ())
    target_store = _open_store(store, endpoint_url, matrix)
    info = loaded.manifest.release
    made = make_release(target_store, graph, name=info.name, version=info.version)
    if notes is not None:
        notes.write_text(made.notes)
    if output_file is not None:
        output_file.parent.mkdir(parents=True, exist_ok=True)
        output_file.write_bytes(made.body)
        if made.signature is not None:
            output_file.with_name(output_file.stem + ".signed.json").write_bytes(made.signature)
    typer.echo(made.notes)
    typer.echo(f"release manifest: {target_store.url}/{made.key}")


@app.command()
@reports_errors
def keygen(
    out: Annotated[Path, typer.Option("--out", "-o", help="Private key file; the public key goes to OUT.pub.")] = Path(
        "factory-signing.key"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key pair.")] = False,
) -> None:
    """Make an ed25519 signing key pair (private key mode 0600, never printed)."""
    from .signing import keygen as make_keys

    pair = make_keys(out, force=force)
    typer.echo(f"private key: {pair.private_path} (keep it secret; set FACTORY_SIGNING_KEY to it to sign)")
    typer.echo(f"public key ({pair.keyid}), for --trust, FACTORY_TRUST or ~/.config/factory/trusted-keys:")
    typer.echo(pair.public)


@app.command()
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
    from .mirror_cli import run_mirror

    for line in run_mirror(src, dst, only=only or [], release=release_name, endpoint_url=endpoint_url, jobs=jobs,
                           trust=_trust(trust)):  # fmt: skip
        typer.echo(line)


@app.command()
@reports_errors
def catalog(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for index.html and catalog.json.")],
    store: StoreOption = None,
    endpoint_url: EndpointOption = None,
    publish_to_store: Annotated[
        bool, typer.Option("--publish", help="Also write them under catalog/ in the store (static website).")
    ] = False,
    trust: TrustOption = None,
) -> None:
    """Write a static catalog page of every bundle a store holds."""
    from .catalog import make_catalog

    for line in make_catalog(_open_store(store, endpoint_url), _trust(trust), out, publish=publish_to_store):
        typer.echo(line)


images_app = typer.Typer(help="Build, list and push pinned toolchain images.", no_args_is_help=True)
app.add_typer(images_app, name="images")


@images_app.command("build")
@reports_errors
def images_build(
    matrix: MatrixOption = Path("manifests/world.yaml"),
    toolchain: Annotated[
        list[str] | None, typer.Option("--toolchain", help="Build only this toolchain (repeatable).")
    ] = None,
    _t: Annotated[
        list[str] | None,
        typer.Option("-t", hidden=True, callback=_retired("-t (--target in every command)", "--toolchain NAME")),
    ] = None,
    push: Annotated[str | None, typer.Option("--push", help="Also push to this registry, e.g. ghcr.io/org.")] = None,
    ca_cert: Annotated[
        list[Path] | None, typer.Option("--ca-cert", help="Extra CA certificate (PEM) trusted during the build.")
    ] = None,
    wheelhouse: Annotated[
        Path | None, typer.Option("--wheelhouse", help="Folder of wheels pip may install from.")
    ] = None,
    offline: Annotated[bool, typer.Option("--offline", help="pip installs only from --wheelhouse.")] = False,
    registry: Annotated[
        str | None,
        typer.Option("--registry", help="Try pulling the content tag from this registry before building (a cache)."),
    ] = None,
    mlc_llm_source: MlcSourceOption = None,
) -> None:
    """Build each toolchain's image unless its content tag already exists (locally, or in --registry)."""
    from .engine import docker_client
    from .images import BuildExtras, BuildLog, check_extras, ensure_image, plan_for_engine, push_image
    from .manifest import load_manifest

    loaded = load_manifest(matrix)
    names = _toolchain_names(loaded.manifest, toolchain or [], matrix)
    extras = BuildExtras(
        ca_certs=tuple(ca_cert or ()), wheelhouse=wheelhouse, offline=offline, mlc_llm_source=mlc_llm_source
    )
    check_extras(extras)
    lock = read_lock(lock_path_for(matrix))
    client = docker_client()
    console = Console(stderr=True, soft_wrap=True)
    for name in names:
        image = plan_for_engine(client, loaded, name, lock)
        if not image.base_locked:
            base = loaded.manifest.toolchains[name].base_image
            console.print(f"[yellow]warning:[/] {name}: base image {base} is not locked; using the local copy")
        with console.status(f"{name}: preparing") as status:

            def show_step(n: int, total: int, text: str, name: str = name, status: Status = status) -> None:
                status.update(f"{name}: step {n}/{total} {text[:60]}")

            log = BuildLog(line=lambda text: console.print(text, markup=False, highlight=False), step=show_step)
            outcome = ensure_image(client, image, extras, log, registry)
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
    toolchain: Annotated[str, typer.Option("--toolchain", help="The toolchain to build natively.")],
    matrix: MatrixOption = Path("manifests/world.yaml"),
    _t: Annotated[
        str | None,
        typer.Option("-t", hidden=True, callback=_retired("-t (--target in every command)", "--toolchain NAME")),
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
    import shlex
    import shutil

    from .image_plan import plan_metal_prefix
    from .manifest import load_manifest
    from .paths import prefix_root as default_prefix_root

    loaded = load_manifest(matrix)
    _toolchain_names(loaded.manifest, [toolchain], matrix)
    prefix = plan_metal_prefix(loaded, toolchain)
    prefix_root = prefix_root or default_prefix_root()
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


class SchemaDocument(StrEnum):
    manifest = "manifest"
    bundle = "bundle"
    store_index = "index"
    release = "release"
    signed = "signed"


@app.command()
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
    from pydantic import BaseModel

    from .documents import BundleManifest, Index, ReleaseManifest, SignedEnvelope

    models: dict[str, type[BaseModel]] = {
        "bundle": BundleManifest, "index": Index, "release": ReleaseManifest, "signed": SignedEnvelope,
    }  # fmt: skip
    model = models.get(document.value, Manifest)
    typer.echo(json.dumps(model.model_json_schema(by_alias=True), indent=2))


def main() -> None:
    app(prog_name="factory")
