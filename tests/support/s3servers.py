"""S3 servers on loopback for the store contract suite: moto (in-process) and a
one-node Ceph RGW (started by tests/support/start-rgw.sh, which .ci/run runs)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RGW_ENV_FILE = Path(os.environ.get("FACTORY_RGW_ENV", "/tmp/factory-rgw/env"))


@dataclass(frozen=True)
class S3Server:
    name: str
    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def moto_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server("moto", f"http://127.0.0.1:{port}", "testing", "testing")
    finally:
        server.stop()


def rgw_server() -> S3Server:
    """The RGW .ci/run started; by hand, start it with `bash tests/support/start-rgw.sh`."""
    if not RGW_ENV_FILE.is_file():
        script = REPO / "tests" / "support" / "start-rgw.sh"
        if os.geteuid() == 0 and shutil.which("radosgw"):
            subprocess.run(["bash", str(script)], check=True)
        else:
            message = f"no Ceph RGW running (start it with: bash {script})"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    values = dict(line.split("=", 1) for line in RGW_ENV_FILE.read_text().split())
    return S3Server("rgw", values["ENDPOINT"], values["ACCESS_KEY"], values["SECRET_KEY"])
