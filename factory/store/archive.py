"""A single-file store for one-way transfers (a USB stick, a data diode): a tar of a
store folder. Mirroring into one stages a folder store beside it (`NAME.tar.partial/`,
so a killed export resumes), then packs it into the tar atomically; mirroring out of
one unpacks it into a temporary folder store, taking only regular files at keys of
the store layout. Either way the mirror itself is the ordinary folder-to-store one."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from factory.errors import FactoryError, InputError, Problem
from factory.store.backends.base import check_key
from factory.store.backends.local import LocalStore


def is_archive(url: str) -> bool:
    return url.removeprefix("file://").endswith(".tar")


def _path(url: str) -> Path:
    return Path(os.path.expanduser(url.removeprefix("file://")))


@contextmanager
def archive_for_writing(url: str) -> Iterator[LocalStore]:
    """A folder store to mirror into; on success it becomes the tar `url` (any earlier
    content of the tar is carried over first, so exports add up)."""
    target = _path(url)
    staging = target.with_name(target.name + ".partial")
    if target.is_file() and not staging.exists():
        _unpack(target, staging)
    staging.mkdir(parents=True, exist_ok=True)
    yield LocalStore(staging)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for path in sorted(staging.rglob("*")):
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(staging).parts):
                tar.add(path, arcname=path.relative_to(staging).as_posix(), recursive=False)
    os.replace(tmp, target)
    shutil.rmtree(staging)


@contextmanager
def archive_for_reading(url: str) -> Iterator[LocalStore]:
    source = _path(url)
    with tempfile.TemporaryDirectory(prefix="factory-import-") as tmp:
        _unpack(source, Path(tmp))
        yield LocalStore(Path(tmp))


def _unpack(archive: Path, into: Path) -> None:
    fix = "make the file with `factory mirror STORE FILE.tar` and copy it whole"
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            for member in members:
                if not member.isfile():
                    raise InputError([_problem(archive, member.name, "not a regular file", fix)])
                try:
                    check_key(member.name)
                except FactoryError:
                    raise InputError([_problem(archive, member.name, "not a key of the store layout", fix)]) from None
            into.mkdir(parents=True, exist_ok=True)
            tar.extractall(into, members=members, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise InputError([_problem(archive, "", f"not a readable tar: {exc}", fix)]) from None


def _problem(archive: Path, member: str, message: str, fix: str) -> Problem:
    return Problem(file=str(archive), field=member, message=message, fix=fix)
