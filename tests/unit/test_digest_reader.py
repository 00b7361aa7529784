"""DigestReader: the file view uploads read through, hashing each byte once."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from factory.errors import IntegrityError
from factory.store.backends.base import DigestReader


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "blob"
    path.write_bytes(data)
    return path


def test_reads_rereads_and_skips_hash_every_byte_exactly_once(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    with DigestReader(_file(tmp_path, data), hashlib.sha256(data).hexdigest()) as reader:
        assert reader.read(1000) == data[:1000]
        reader.seek(0)  # a retry, or a client's signing pass, reads again
        assert reader.read(5000) == data[:5000]
        reader.seek(200_000)  # a skip ahead: the gap is hashed first
        assert reader.read() == data[200_000:]
        assert reader.verified
        reader.seek(0, 2)
        assert reader.tell() == len(data) and reader.read(10) == b""


def test_the_read_that_reaches_the_end_refuses_bytes_that_do_not_match(tmp_path: Path) -> None:
    data = b"x" * 10_000
    path = _file(tmp_path, data)
    with DigestReader(path, hashlib.sha256(b"y" * 10_000).hexdigest()) as reader:
        assert reader.read(9_000) == data[:9_000]
        with pytest.raises(IntegrityError, match="sha256 differs from the manifest"):
            reader.read(4096)
        assert not reader.verified


def test_an_empty_file_is_checked_by_verify(tmp_path: Path) -> None:
    path = _file(tmp_path, b"")
    with DigestReader(path, hashlib.sha256(b"").hexdigest()) as reader:
        reader.verify()
        assert reader.verified
    with DigestReader(path, hashlib.sha256(b"not empty").hexdigest()) as reader, pytest.raises(IntegrityError):
        reader.verify()
