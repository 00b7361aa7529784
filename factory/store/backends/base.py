"""The Store interface: content-addressed blobs plus small JSON documents with
conditional writes. Both backends pass the same contract suite (tests/integration/test_store_contract.py)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from factory.errors import FactoryError, IntegrityError
from factory.store.integrity import hash_mismatch

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
Progress = Callable[[int], None]
"""Called with a number of bytes just moved."""


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...


class StoreError(FactoryError):
    """The store refused or failed an operation. Exit code 3."""

    exit_code = 3


class StoreAccessError(StoreError):
    """Credentials were refused: retrying will not help."""


class PreconditionFailed(Exception):
    """A conditional write lost a race (the document changed, or already exists)."""


class TransferCancelled(Exception):
    """Raised by a progress callback to stop a transfer (another worker failed, or Ctrl-C).
    Backends let it through unchanged."""


class LocalWriteError(Exception):
    """Writing downloaded bytes to a local file failed (disk full, quota, read-only).
    Backends let it through unchanged, so the caller can tell it from a store failure."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(f"{path}: {error.strerror or error}")
        self.path = path
        self.error = error


@dataclass(frozen=True)
class Document:
    data: bytes
    etag: str


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float
    """When the object was last written, in seconds since the epoch (the backend's clock)."""


def append_blocks(
    blocks: Iterable[bytes | memoryview], dest: Path, progress: Progress | None = None, hasher: Hasher | None = None
) -> None:
    """Append `blocks` to `dest`, feeding each to `hasher` and `progress`; the one place a
    backend writes a download, so a local write error always surfaces as LocalWriteError."""
    try:
        writer = dest.open("ab")
    except OSError as exc:
        raise LocalWriteError(dest, exc) from exc
    with writer:
        for block in blocks:
            try:
                writer.write(block)
                writer.flush()
            except OSError as exc:
                raise LocalWriteError(dest, exc) from exc
            if hasher is not None:
                hasher.update(block)
            if progress:
                progress(len(block))


Fetch = Callable[[int, int, memoryview], memoryview]
"""fetch(first, stop, buffer): bytes [first, stop) read into `buffer`, returned as a view."""


def ordered_parts(fetch: Fetch, start: int, end: int, part: int, window: int) -> Generator[memoryview, None, None]:
    """Bytes [start, end) in order, as `fetch` calls of `part` bytes, up to `window` of them
    in flight. The consumer sees one ordered stream, so it still appends to a partial file
    that is always a prefix (resumable) and hashes in one pass. Each part lands in one of
    window + 1 buffers that are reused: a view is valid until the consumer asks for the
    next one (fresh 8 MiB objects per read cost more kernel time than the download
    itself). Closing the iterator early cancels what has not started."""
    spans = [(offset, min(offset + part, end)) for offset in range(start, end, part)]
    if not spans:
        return
    buffers = [memoryview(bytearray(part)) for _ in range(min(window + 1, len(spans)))]
    upcoming = iter(enumerate(spans))

    def submit(pool: ThreadPoolExecutor) -> Future[memoryview] | None:
        number, (first, stop) = next(upcoming, (-1, (0, 0)))
        return None if number < 0 else pool.submit(fetch, first, stop, buffers[number % len(buffers)])

    with ThreadPoolExecutor(max_workers=window, thread_name_prefix="range") as pool:
        flying: deque[Future[memoryview]] = deque()
        try:
            for _ in range(window):
                if (future := submit(pool)) is not None:
                    flying.append(future)
            while flying:
                view = flying.popleft().result()
                # The next part goes into the buffer the consumer finished with last time.
                if (future := submit(pool)) is not None:
                    flying.append(future)
                yield view
        finally:
            for future in flying:
                future.cancel()


class DigestReader:
    """A read-only, seekable view of a file that hashes each byte the first time it is read
    and, on the read that reaches the end, refuses (IntegrityError, and no bytes returned)
    unless the whole file hashed to `digest`.

    Uploads read through it, so a blob is hashed while it is read for sending rather than
    in a pass of its own, and the last block of a file that does not match its manifest is
    never handed over: a multipart upload is aborted and a single PUT never completes.
    Bytes read again (a retry, or the client's own signing pass) are not hashed twice."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = path
        self.digest = digest
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
        self._hasher = hashlib.sha256()
        self._hashed = 0
        self._position = 0
        self.verified = False

    def read(self, amount: int = -1) -> bytes:
        if amount is None or amount < 0:
            amount = self.size - self._position
        amount = min(amount, self.size - self._position)
        if amount <= 0:
            return b""
        if self._position > self._hashed:
            self._hash_until(self._position)  # a skip ahead: hash the gap first
        data = os.pread(self._fd, amount, self._position)
        end = self._position + len(data)
        if end > self._hashed:
            self._hasher.update(memoryview(data)[self._hashed - self._position :])
            self._hashed = end
            if end == self.size:
                self._finish()
        self._position = end
        return data

    def _hash_until(self, offset: int) -> None:
        while self._hashed < offset:
            block = os.pread(self._fd, min(1 << 22, offset - self._hashed), self._hashed)
            if not block:
                break
            self._hasher.update(block)
            self._hashed += len(block)

    def verify(self) -> None:
        """Hash what no read has covered yet (an empty file, say) and check the digest."""
        if not self.verified:
            self._hash_until(self.size)
            self._finish()

    def _finish(self) -> None:
        if self._hasher.hexdigest() != self.digest:
            raise hash_mismatch(self.path)
        self.verified = True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DigestReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$")


def check_key(key: str, *, prefix: bool = False) -> str:
    """`key` if it is a key of the store layout: plain segments joined by `/` (a prefix may
    end in `/`). Every backend calls this before any I/O, so a key taken from a tampered
    document (`../x.json`) never reaches a file system or a bucket."""
    body = key[:-1] if prefix and key.endswith("/") else key
    if not body or not all(_KEY_SEGMENT.match(part) for part in body.split("/")):
        raise IntegrityError(
            f"{key!r} is not a key of the store layout (plain names joined by '/'; no '..', no leading '/' or '.')",
            hint="the key came from a damaged or tampered document; republish the bundle it belongs to",
        )
    return key


def blob_key(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return f"blobs/sha256/{digest[:2]}/{digest[2:]}"


class Store(Protocol):
    url: str

    def has_blob(self, digest: str) -> bool: ...

    def missing_blobs(self, digests: set[str]) -> set[str]:
        """The subset of `digests` the store lacks (compare before copying)."""
        ...

    def put_blob(self, digest: str, path: Path, progress: Progress | None = None) -> None:
        """Upload `path` as blob `digest`, hashing it as it is read for sending (DigestReader):
        bytes that do not hash to `digest` raise IntegrityError before the blob exists in the
        store. The backend also has the server check what it received."""
        ...

    def get_blob(self, digest: str, dest: Path, progress: Progress | None = None, hasher: Hasher | None = None) -> None:
        """Append the blob's bytes to `dest` from its current length (resume), feeding
        them to `hasher` as they arrive so verification needs no second read."""
        ...

    def blob_size(self, digest: str) -> int | None: ...

    def get_doc(self, key: str) -> Document | None: ...

    def put_doc(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write a JSON document; with if_match/if_none_match it is conditional and
        raises PreconditionFailed when the condition does not hold. Returns the new etag."""
        ...

    def list_keys(self, prefix: str) -> Iterator[str]: ...

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        """Like list_keys, with each object's size and last write time (gc's grace period)."""
        ...

    def delete(self, key: str) -> None: ...
