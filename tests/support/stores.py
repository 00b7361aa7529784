"""A store for CLI tests on a local folder or the Ceph RGW, with raw access to its
objects (for tampering and replays) that goes around the factory."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.s3servers import rgw_server


@dataclass(frozen=True)
class StoreUnderTest:
    url: str
    env: dict[str, str]
    root: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    client: Any = None

    def read(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()
        body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"]
        return bytes(body.read())

    def write(self, key: str, data: bytes) -> None:
        if self.root is not None:
            path = self.root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}", Body=data)


def make_store(kind: str, tmp_path: Path) -> StoreUnderTest:
    if kind == "local":
        root = tmp_path / f"store-{uuid.uuid4().hex[:6]}"
        return StoreUnderTest(f"file://{root}", {}, root=root)
    server = rgw_server()
    client = server.client()
    bucket = f"signed-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)  # type: ignore[attr-defined]
    return StoreUnderTest(f"s3://{bucket}/factory", server.env(), bucket=bucket, prefix="factory", client=client)
