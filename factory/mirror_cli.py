"""`factory mirror`'s front: open both stores (a `.tar` path is a single-file store,
factory/archive_store.py), run the mirror, and say what it did."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

from .archive_store import archive_for_reading, archive_for_writing, is_archive
from .mirror import mirror
from .storage import Store, open_store
from .trust import Trust


def run_mirror(
    src: str, dst: str, *, only: list[str], release: str | None, endpoint_url: str | None, jobs: int,
    trust: Trust | None,
) -> Iterator[str]:  # fmt: skip
    with ExitStack() as stack:
        source = _source(stack, src, endpoint_url)
        target = _target(stack, dst, endpoint_url)
        report = mirror(source, target, only=only, release=release, trust=trust, jobs=jobs)
    yield (
        f"mirrored {len(report.bundles)} bundle version(s) from {src} to {dst}: copied {report.copied_blobs} blob(s), "
        f"{report.copied_bytes} bytes; {report.present_blobs} already there; {report.documents} document(s) written"
    )
    yield f"index: {report.index}"


def _source(stack: ExitStack, src: str, endpoint_url: str | None) -> Store:
    if is_archive(src):
        return stack.enter_context(archive_for_reading(src))
    return open_store(src, endpoint_url=endpoint_url)


def _target(stack: ExitStack, dst: str, endpoint_url: str | None) -> Store:
    if is_archive(dst):
        return stack.enter_context(archive_for_writing(dst))
    return open_store(dst, endpoint_url=endpoint_url)
