"""A real local Hugging Face hub: olah serving git repositories from a folder.

olah runs from its own virtualenv (.ci/run makes `.venv-olah`), since its
dependency pins are not ours. Repos are plain git repositories under
`mirrors/models/ORG/NAME`; every commit made here is what the hub serves.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "factory-tests",
    "GIT_AUTHOR_EMAIL": "tests@factory.invalid",
    "GIT_COMMITTER_NAME": "factory-tests",
    "GIT_COMMITTER_EMAIL": "tests@factory.invalid",
}


OLAH_VERSION = "0.5.4"


def olah_cli() -> Path:
    """olah's CLI, installing it from PyPI into `.venv-olah` on first use."""
    override = os.environ.get("FACTORY_OLAH_CLI")
    if override:
        return Path(override)
    venv = REPO / ".venv-olah"
    cli = venv / "bin" / "olah-cli"
    if not cli.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", f"olah=={OLAH_VERSION}"],
            check=True,
        )
    return cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@dataclass
class LocalHub:
    endpoint: str
    mirrors: Path

    def commit(self, repo_id: str, files: Mapping[str, bytes | Path], message: str = "update") -> str:
        """Write files into the repo (creating it on first use), commit, return the commit id."""
        path = self.mirrors / "models" / repo_id
        if not (path / ".git").exists():
            path.mkdir(parents=True, exist_ok=True)
            _git(path, "init", "-q", "-b", "main")
        for name, body in files.items():
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(body, Path):  # a large file: copied, never read into memory
                shutil.copyfile(body, target)
            else:
                target.write_bytes(body)
        # Uncompressed objects: zlib on a 3 GB checkpoint took minutes (bench/real_size.py).
        _git(path, "-c", "core.compression=0", "add", "-A")
        _git(path, "commit", "-q", "--allow-empty", "-m", message)
        return _git(path, "rev-parse", "HEAD")

    def env(self) -> dict[str, str]:
        return {"HF_ENDPOINT": self.endpoint, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0"}


@contextmanager
def running_hub(workdir: Path) -> Iterator[LocalHub]:
    mirrors = workdir / "mirrors"
    port = _free_port()
    config = workdir / "olah.toml"
    config.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {port}\n'
        f'mirrors-path = ["{mirrors}"]\nrepos-path = "{workdir / "repos"}"\n'
        "metadata-cache-ttl = 0\n"
        "[accessibility]\noffline = true\n"
    )
    hub = LocalHub(endpoint=f"http://127.0.0.1:{port}", mirrors=mirrors)
    hub.commit("factory-tests/probe", {"README.md": b"probe\n"})
    log = (workdir / "olah.log").open("w")
    process = subprocess.Popen([str(olah_cli()), "-c", str(config)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    try:
        _wait_ready(hub, process, workdir / "olah.log")
        yield hub
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_ready(hub: LocalHub, process: subprocess.Popen[bytes], log: Path) -> None:
    url = f"{hub.endpoint}/api/models/factory-tests/probe/revision/main"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"olah exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"olah did not answer {url} within 60 s:\n{log.read_text()[-2000:]}")
