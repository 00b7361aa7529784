"""The embedded default store: a folder with the same layout as the S3 one.

Writes go to a temporary file and are renamed into place; conditional writes
of documents hold an flock on a lock file beside them, so concurrent
publishers on one machine behave like S3's If-Match/If-None-Match.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from factory.file_lock import file_lock
from factory.store.backends.base import (
    DigestReader,
    Document,
    Hasher,
    PreconditionFailed,
    Progress,
    StoredObject,
    StoreError,
    append_blocks,
    blob_key,
    check_key,
)


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def has_blob(self, digest: str) -> bool:
        return self._path(blob_key(digest)).is_file()

    def missing_blobs(self, digests: set[str]) -> set[str]:
        return {d for d in digests if not self.has_blob(d)}

    def blob_size(self, digest: str) -> int | None:
        path = self._path(blob_key(digest))
        return path.stat().st_size if path.is_file() else None

    def put_blob(self, digest: str, path: Path, progress: Progress | None = None) -> None:
        target = self._path(blob_key(digest))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            # One pass: hash while copying; the reader refuses the last block of a file that
            # does not match `digest`, so the temporary file is never renamed into place.
            with DigestReader(path, digest) as reader, tmp.open("wb") as writer:
                while block := reader.read(1 << 22):
                    writer.write(block)
                    if progress:
                        progress(len(block))
                reader.verify()  # a no-op unless the file was empty
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def get_blob(self, digest: str, dest: Path, progress: Progress | None = None, hasher: Hasher | None = None) -> None:
        source = self._path(blob_key(digest))
        if not source.is_file():
            raise StoreError(f"{self.url}: blob {digest} is missing")
        offset = dest.stat().st_size if dest.exists() else 0
        with source.open("rb") as reader:
            reader.seek(offset)
            append_blocks(iter(lambda: reader.read(1 << 22), b""), dest, progress, hasher)

    def get_doc(self, key: str) -> Document | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return Document(data, hashlib.sha256(data).hexdigest())

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        with file_lock(self._path(key).with_name(f".{Path(key).name}.lock")):
            yield

    def put_doc(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        path = self._path(key)
        with self._locked(key):
            current = self.get_doc(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(key)
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailed(key)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()

    def list_keys(self, prefix: str) -> Iterator[str]:
        for stored in self.list_objects(prefix):
            yield stored.key

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / check_key(prefix, prefix=True)
        start = base if base.is_dir() else base.parent
        if not start.is_dir():
            return
        for path in sorted(start.rglob("*")):
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix) and not path.name.startswith("."):
                try:
                    info = path.stat()
                except FileNotFoundError:
                    continue  # deleted while listing
                if stat.S_ISREG(info.st_mode):
                    yield StoredObject(key, info.st_size, info.st_mtime)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
