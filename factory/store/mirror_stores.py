"""`factory mirror`'s front: open both stores (a `.tar` path is a single-file store,
factory/store/archive.py) and run the mirror."""

from __future__ import annotations

from contextlib import ExitStack

from factory.store.archive import archive_for_reading, archive_for_writing, is_archive
from factory.store.backends import Store, open_store
from factory.store.choice import choose_store
from factory.store.mirror import MirrorReport, mirror
from factory.trust.policy import Trust


def run_mirror(
    src: str, dst: str, *, only: list[str], release: str | None, endpoint_url: str | None, jobs: int,
    trust: Trust | None,
) -> MirrorReport:  # fmt: skip
    with ExitStack() as stack:
        source = _source(stack, src, endpoint_url)
        target = _target(stack, dst, endpoint_url)
        return mirror(source, target, only=only, release=release, trust=trust, jobs=jobs)


def _source(stack: ExitStack, src: str, endpoint_url: str | None) -> Store:
    if is_archive(src):
        return stack.enter_context(archive_for_reading(src))
    return choose_store(src, endpoint_url)  # a source folder must exist


def _target(stack: ExitStack, dst: str, endpoint_url: str | None) -> Store:
    if is_archive(dst):
        return stack.enter_context(archive_for_writing(dst))
    return open_store(dst, endpoint_url=endpoint_url)
