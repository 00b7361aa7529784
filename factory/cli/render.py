"""Everything the commands print, in one place: tables, summaries and report lines.
Commands call one function of the factory and hand its result to one of these."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console, RenderableType
from rich.table import Table

if TYPE_CHECKING:
    # Types only: `factory --version` should not import the whole factory.
    from factory.cells.executor import Outcome
    from factory.cells.matrix import MatrixBuild
    from factory.cells.metal_kernels import KernelsResult
    from factory.cells.run_bundle import RunResult
    from factory.checkpoints.example import ExampleModel
    from factory.clients.mlc_repo import ExportedRepo
    from factory.clients.release import Release
    from factory.manifest.locked import LockUpdate
    from factory.store.documents import Index
    from factory.store.housekeeping import GcReport
    from factory.store.mirror import MirrorReport
    from factory.store.publish import PublishReport
    from factory.store.pull import Pulled
    from factory.store.verify import Verified
    from factory.tokenizer.rwkv_world import TokenizerFile
    from factory.toolchains.images.builder import BuildLog
    from factory.toolchains.images.manage import ImageListing, ImageResult
    from factory.trust.signing import KeyPair

# Piped output gets wide lines rather than truncated columns.
PIPED_WIDTH = 200


def print_out(renderable: RenderableType, *, soft_wrap: bool = False) -> None:
    console = Console(soft_wrap=soft_wrap)
    if not console.is_terminal:
        console.width = PIPED_WIDTH
    console.print(renderable)


def echo_lines(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def say_to(console: Console) -> Callable[[str], None]:
    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    return say


def node_events(say: Callable[[str], None]) -> Callable[[Outcome], None]:
    """One line per node that ran or could not (cached nodes stay quiet)."""

    def show(outcome: Outcome) -> None:
        if outcome.status in {"built", "failed", "blocked"}:
            first = outcome.detail.splitlines()[0] if outcome.detail else ""
            say(f"{outcome.status:>8} {outcome.node} ({outcome.seconds:.1f} s) {first}")

    return show


def publish_lines(report: PublishReport, url: str) -> list[str]:
    lines = [
        f"{name}: this version is already published from the same build key; kept as it was" for name in report.already
    ]
    lines.append(
        f"published {len(report.bundles)} bundle(s) to {url}: uploaded {report.uploaded_blobs} blob(s), "
        f"{report.uploaded_bytes} bytes; {report.present_blobs} already there"
    )
    return lines


def build_summary(out: Path) -> Callable[[MatrixBuild], None]:
    """The end-of-build table, shown as soon as the cells are done (before any publish)."""

    def show(result: MatrixBuild) -> None:
        from factory.cells.report import render_summary

        print_out(render_summary(result.graph, result.outcomes, out), soft_wrap=True)

    return show


def show_build_end(result: MatrixBuild) -> None:
    if result.published is not None and result.store_url is not None:
        echo_lines(publish_lines(result.published, result.store_url))
    if result.exit_code:
        for detail in result.failures():
            typer.echo(detail, err=True)


def pulled_lines(pulled: Pulled) -> list[str]:
    return [
        f"pulled {pulled.name} {pulled.version} into {pulled.path} ({pulled.downloaded_bytes} bytes downloaded)",
        f"run it with:\n  {pulled.run}",
    ]


def index_table(index: Index) -> Table:
    table = Table("bundle", "version", "size MB", "flow", "published", "status", box=None)
    for name, entry in sorted(index.bundles.items()):
        for version, record in sorted(entry.versions.items(), key=lambda kv: kv[1].published_at):
            status = "yanked" if record.yanked else ("latest" if entry.latest == version else "")
            flow = record.compatibility.flow
            table.add_row(name, version, f"{record.size / 1e6:.1f}", flow, record.published_at, status)
    return table


def run_lines(result: RunResult) -> list[str]:
    figures = result.figures
    lines = [figures.output]
    if figures.device:
        lines.append(f"ran on {figures.device} ({figures.runtime})")
    lines.append(
        f"prefill {figures.prefill_tok_s} tok/s, decode {figures.decode_tok_s} tok/s, "
        f"logits {list(figures.logits_shape or ())} finite={figures.finite}, {result.verdict.status}"
    )
    return lines


def gc_lines(report: GcReport, grace: str) -> list[str]:
    lines = list(report.unreferenced)
    verb = "deleted" if report.deleted else "would delete (dry run; pass --delete)"
    lines.append(f"{verb} {len(report.unreferenced)} unreferenced blob(s)")
    if report.young:
        lines.append(
            f"kept {len(report.young)} unreferenced blob(s) younger than {grace} (a publish may still be running)"
        )
    return lines


def example_model_lines(made: ExampleModel) -> list[str]:
    state = "wrote" if made.written else "already there:"
    files = ", ".join(f"{name} ({size:,} bytes)" for name, size in made.files)
    return [f"{state} a tiny RWKV-{made.version} World checkpoint in {made.folder}: {files}"]


def export_repo_lines(made: ExportedRepo) -> list[str]:
    return [
        f"wrote {made.repo_id} as a Hugging Face MLC weight repo in {made.weights} "
        f"({len(made.files)} files and README.md, a model card with the provenance and every sha256)",
        f"library (apart, as binary-mlc-llm-libs keeps them): {made.library}",
        f"upload: hf upload {made.repo_id} {made.weights}",
    ]


def mlc_cache_lines(made: ExportedRepo, cache: Path) -> list[str]:
    return [
        f"laid out for mlc-llm as HF://{made.repo_id} in {made.weights}",
        f"run offline: MLC_LLM_READONLY_WEIGHT_CACHE={cache} mlc_llm chat HF://{made.repo_id} "
        f"--model-lib {made.library}",
    ]


def tokenizer_lines(made: TokenizerFile) -> list[str]:
    return [made.report.summary(), f"wrote {made.path} ({made.size} bytes) from {made.source}"]


def image_line(result: ImageResult) -> str:
    verb = "built" if result.built else "up to date"
    return f"{result.toolchain}\t{result.ref}\t{verb}" + (f"\tpushed {result.pushed}" if result.pushed else "")


def image_table(listing: ImageListing) -> Table:
    table = Table("toolchain", "image", "created", "MB", "status", box=None)
    for row in listing.rows:
        table.add_row(row.toolchain, row.ref, row.created, f"{row.size_mb:.1f}", row.status)
    for name in listing.missing:
        table.add_row(name, "-", "-", "-", "missing")
    return table


def image_session(console: Console) -> Callable[[str], AbstractContextManager[BuildLog]]:
    """Per toolchain: a live status line with the build step, and its log lines above it."""

    from factory.toolchains.images.builder import BuildLog

    @contextmanager
    def session(name: str) -> Iterator[BuildLog]:
        with console.status(f"{name}: preparing") as status:

            def step(n: int, total: int, text: str) -> None:
                status.update(f"{name}: step {n}/{total} {text[:60]}")

            yield BuildLog(line=lambda text: console.print(text, markup=False, highlight=False), step=step)

    return session


def lock_lines(update: LockUpdate) -> list[str]:
    if update.checked_only:
        return [f"{update.path}: complete"]
    return [f"resolved {line}" for line in update.resolved] + [
        f"{update.path}: {len(update.resolved)} resolved, {update.kept} kept"
    ]


def verified_line(verified: Verified) -> str:
    if verified.folder is not None:
        return f"{verified.folder}: {verified.files} files match their manifest"
    return f"{verified.store_url}: {verified.bundles} bundle version(s), {verified.blobs} blob(s) verified"


def yank_line(name: str, version: str, index: Index) -> str:
    return f"yanked {name} {version}; latest is now {index.bundles[name].latest or 'none'}"


def keygen_lines(pair: KeyPair) -> list[str]:
    return [
        f"private key: {pair.private_path} (keep it secret; set FACTORY_SIGNING_KEY to it to sign)",
        f"public key ({pair.keyid}), for --trust, FACTORY_TRUST or ~/.config/factory/trusted-keys:",
        pair.public,
    ]


def mirror_lines(report: MirrorReport, src: str, dst: str) -> list[str]:
    return [
        f"mirrored {len(report.bundles)} bundle version(s) from {src} to {dst}: copied {report.copied_blobs} "
        f"blob(s), {report.copied_bytes} bytes; {report.present_blobs} already there; {report.documents} "
        "document(s) written",
        f"index: {report.index}",
    ]


def export_lines(env: Mapping[str, str]) -> list[str]:
    return [f"export {key}={shlex.quote(value)}" for key, value in env.items()]


def release_lines(made: Release, url: str) -> list[str]:
    return [made.notes, f"release manifest: {url}"]


def warning_printer(console: Console) -> Callable[[str], None]:
    return lambda text: console.print(f"[yellow]warning:[/] {text}")


def kernels_line(result: KernelsResult) -> str:
    """One Metal cell of `factory kernels`: its kernel check, or why it was refused."""
    if result.refused is None:
        return (
            f"{result.cell}: kernels passed ({result.functions} GPU functions checked, "
            f"{result.source_bytes} bytes of MSL in {result.folder})"
        )
    return f"{result.cell}: kernels refused: " + "; ".join(result.refused.problems)
