"""S3-compatible storage through boto3: AWS S3, R2, MinIO, Ceph RGW.

The only module that imports boto3. The endpoint comes from --endpoint-url or
the standard AWS_ENDPOINT_URL, credentials from boto3's own chain; neither
credentials nor signed URLs are ever logged. Blobs are sent with SHA-256
checksums the server verifies (per part for multipart uploads); documents use
conditional writes (If-Match / If-None-Match).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from factory.errors import IntegrityError
from factory.store.backends import ranged_http
from factory.store.backends.base import (
    DigestReader,
    Document,
    Hasher,
    LocalWriteError,
    PreconditionFailed,
    Progress,
    StoreAccessError,
    StoredObject,
    StoreError,
    TransferCancelled,
    append_blocks,
    blob_key,
    check_key,
    ordered_parts,
)

_ACCESS_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken", "ExpiredToken"}
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 32 * 1024 * 1024
RANGE_PART = 16 * 1024 * 1024
RANGE_WINDOW = 2
"""Downloads: each blob in ranged GETs of RANGE_PART bytes, RANGE_WINDOW of them in flight.
One stream per blob left a large shard downloading alone at the end of a pull (0.61x
s5cmd in bench/transfer.py); a blob of one part costs one request, as before. A pull
fetches up to 8 blobs at once, so 2 x 16 MiB each: on 2 cores shared with the server,
4 x 8 MiB (32 streams) spent 3.2-4.7 s in the kernel against 1.6-2.6 s for 2 GiB, and
took 4.3-5.5 s against 3.8-4.0 (the same run, 3 pulls each); 32 and 64 MiB parts did worse."""


def _new_range_reader() -> ranged_http.RangeReader:
    import ssl

    from botocore.httpsession import get_cert_path
    from botocore.session import Session

    # The CA bundle botocore would use: AWS_CA_BUNDLE or the profile's ca_bundle, else its default.
    bundle = Session().get_config_variable("ca_bundle") or get_cert_path(True)
    return ranged_http.RangeReader(ssl.create_default_context(cafile=bundle))


class S3Store:
    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = Config(
            # Standard mode retries throttling and 5xx, never 4xx: refused credentials fail at once.
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=32,
            s3={"addressing_style": "path"} if endpoint else {},
            # SigV4 for presigned range URLs too (botocore presigns SigV2 by default in us-east-1).
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client: Any = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
        self.requests_sent = 0
        self._counting = threading.Lock()
        self.range_part, self.range_window = RANGE_PART, RANGE_WINDOW
        # Ranges after a blob's first part go over http.client (ranged_http.py says why),
        # unless a proxy is configured for the endpoint (decided at the first range, by
        # _range_reader); tests turn it off to cover both paths.
        self.direct_ranges = True
        self._ranges: ranged_http.RangeReader | None = None
        self._making_ranges = threading.Lock()
        self.client.meta.events.register("before-send.s3", self._count)

    def _count(self, **_kwargs: Any) -> None:
        with self._counting:
            self.requests_sent += 1

    def _range_reader(self, url: str) -> ranged_http.RangeReader | None:
        """The reader of direct ranges, made at the store's first range (presigned `url`), or
        None for good when the environment sends the endpoint through a proxy: the store
        then keeps botocore's path. Decided once, as a store's endpoint never changes."""
        if self._ranges is None and self.direct_ranges:
            with self._making_ranges:  # parallel first ranges: one decision, one reader
                if self._ranges is None and self.direct_ranges:
                    self._ranges = None if ranged_http.proxied(url) else _new_range_reader()
                    self.direct_ranges = self._ranges is not None
        return self._ranges if self.direct_ranges else None

    def _key(self, key: str, *, prefix: bool = False) -> str:
        return self.prefix + check_key(key, prefix=prefix)

    def _fail(self, exc: Exception, what: str) -> StoreError:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        if isinstance(exc, NoCredentialsError):
            return StoreAccessError(
                f"{self.url}: no S3 credentials found while {what}",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (boto3's standard chain)",
            )
        if isinstance(exc, EndpointConnectionError):
            return StoreError(
                f"{self.url}: cannot reach the S3 endpoint while {what} ({exc})",
                hint="check --endpoint-url / AWS_ENDPOINT_URL and the network",
            )
        if isinstance(exc, ranged_http.RangeRefused):  # a direct range GET's answer, in botocore's terms
            exc = ClientError({"Error": {"Code": exc.code or str(exc.status)}}, "GetObject")
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _ACCESS_CODES:
                return StoreAccessError(
                    f"{self.url}: the server refused our credentials ({code}) while {what}",
                    hint="check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket policy",
                )
            if code == "NoSuchBucket":
                return StoreError(f"{self.url}: bucket {self.bucket} does not exist", hint="create it first")
            return StoreError(f"{self.url}: {what} failed ({code})")
        return StoreError(f"{self.url}: {what} failed ({type(exc).__name__}: {exc})")

    def _head(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        full = self._key(key)
        try:
            result: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=full)
            return result
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise self._fail(exc, f"checking {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"checking {key}") from None

    def has_blob(self, digest: str) -> bool:
        return self._head(blob_key(digest)) is not None

    def blob_size(self, digest: str) -> int | None:
        head = self._head(blob_key(digest))
        return None if head is None else int(head["ContentLength"])

    def missing_blobs(self, digests: set[str]) -> set[str]:
        present = {key.rsplit("/", 2)[-2] + key.rsplit("/", 1)[-1] for key in self.list_keys("blobs/sha256/")}
        return {d for d in digests if d not in present}

    def put_blob(self, digest: str, path: Path, progress: Progress | None = None) -> None:
        from boto3.s3.transfer import TransferConfig

        key = self._key(blob_key(digest))
        try:
            with DigestReader(path, digest) as reader:
                if reader.size < MULTIPART_THRESHOLD:
                    # Small blobs: one local pass gives both digests, then one PUT that carries
                    # SHA-256 for servers that check it (AWS, R2) and MD5 for those that only
                    # check that (Ceph RGW before Squid).
                    md5 = hashlib.md5(usedforsecurity=False)
                    while block := reader.read(1 << 22):
                        md5.update(block)
                    reader.verify()
                    reader.seek(0)
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=reader,
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
                        ContentMD5=base64.b64encode(md5.digest()).decode(),
                    )
                    if progress:
                        progress(reader.size)
                    return
                # Large blobs: s3transfer reads a file object's parts in order, so the reader
                # hashes the blob while it is read for sending and refuses the last part of a
                # file that does not match (the multipart upload is then aborted). Each part is
                # SigV4-signed with its SHA-256, which every S3 server checks; an extra
                # checksum header per part would hash every byte a third time for no more safety.
                transfer = TransferConfig(
                    multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_SIZE, max_concurrency=4
                )
                transfer.max_in_memory_upload_chunks = 4  # parts are read into memory: bound it
                self.client.upload_fileobj(
                    reader, self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}}, Config=transfer,
                    Callback=progress,
                )  # fmt: skip
        except (IntegrityError, TransferCancelled):
            raise  # the local file, or the caller stopping us: not the store's failure
        except Exception as exc:
            raise self._fail(exc, f"uploading {path.name}") from None

    def get_blob(self, digest: str, dest: Path, progress: Progress | None = None, hasher: Hasher | None = None) -> None:
        offset = dest.stat().st_size if dest.exists() else 0
        key = self._key(blob_key(digest))
        try:
            # The first part also tells the blob's size (Content-Range); the rest follows in
            # parallel ranges, handed on in order.
            first, total = self._first_part(key, offset)
            fetch = functools.partial(self._read_range, key)
            rest = ordered_parts(fetch, offset + len(first), total, self.range_part, self.range_window)
            try:
                append_blocks(itertools.chain((first,), rest), dest, progress, hasher)
            finally:
                rest.close()
        except (LocalWriteError, TransferCancelled, StoreError):
            raise  # this machine's disk, the caller stopping us, or already in words
        except Exception as exc:
            raise self._fail(exc, f"downloading blob {digest[:12]}") from None

    def _first_part(self, key: str, start: int) -> tuple[bytes, int]:
        """Up to one part of `key` from `start`, and the object's full size."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + self.range_part - 1}"
            )
        except ClientError as exc:
            # No byte 0 to give: the object is empty.
            if start == 0 and str(exc.response.get("Error", {}).get("Code")) == "InvalidRange":
                return b"", 0
            raise
        data: bytes = response["Body"].read()
        content_range = str(response.get("ContentRange") or "")
        if content_range.startswith(f"bytes {start}-") and "/" in content_range:
            return data, int(content_range.rsplit("/", 1)[1])
        if start == 0 and not content_range:  # a server that ignores Range sends the whole object
            return data, len(data)
        raise StoreError(f"{self.url}: the server answered a range request for {key} with {content_range!r}")

    def _read_range(self, key: str, start: int, stop: int, buffer: memoryview) -> memoryview:
        """Bytes [start, stop) of `key` read into `buffer` (reused: no allocation per part)."""
        view = buffer[: stop - start]
        if self.direct_ranges:
            url = self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": key})
            if (reader := self._range_reader(url)) is not None:
                self._count()
                try:
                    reader.read_into(url, start, view)
                    return view
                except ranged_http.RangeRefused as refused:
                    if refused.status not in ranged_http.ELSEWHERE:
                        raise
                    self.direct_ranges = False  # botocore's path follows S3's redirects
        response = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{stop - 1}")
        if not str(response.get("ContentRange") or "").startswith(f"bytes {start}-"):
            raise StoreError(f"{self.url}: the server ignored a range request for {key}")
        body, filled = response["Body"], 0
        while filled < len(view) and (amount := body.readinto(view[filled:])):
            filled += amount
        if filled != len(view):
            raise StoreError(f"{self.url}: {key} changed size while downloading ({filled} of {len(view)} bytes)")
        return view

    def get_doc(self, key: str) -> Document | None:
        from botocore.exceptions import ClientError

        full = self._key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            return Document(response["Body"].read(), str(response["ETag"]).strip('"'))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey"}:
                return None
            raise self._fail(exc, f"reading {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"reading {key}") from None

    def put_doc(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        # The catalog's pages and run.html's script are served by a bucket's static website: they need their types.
        kinds = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8"}
        args["ContentType"] = kinds.get(key.rsplit(".", 1)[-1], "application/json")
        if if_none_match:
            args["IfNoneMatch"] = "*"
        if if_match is not None:
            args["IfMatch"] = if_match  # unquoted: Ceph RGW compares it verbatim
        try:
            response = self.client.put_object(**args)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _PRECONDITION_CODES:
                raise PreconditionFailed(key) from None
            raise self._fail(exc, f"writing {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"writing {key}") from None
        return str(response["ETag"]).strip('"')

    def list_keys(self, prefix: str) -> Iterator[str]:
        for stored in self.list_objects(prefix):
            yield stored.key

    def list_objects(self, prefix: str) -> Iterator[StoredObject]:
        full = self._key(prefix, prefix=True)
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for item in page.get("Contents", []):
                    key = str(item["Key"])[len(self.prefix) :]
                    yield StoredObject(key, int(item["Size"]), item["LastModified"].timestamp())
        except Exception as exc:
            raise self._fail(exc, f"listing {prefix}") from None

    def delete(self, key: str) -> None:
        full = self._key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            raise self._fail(exc, f"deleting {key}") from None
