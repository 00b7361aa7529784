"""Connecting to the Docker engine, with one clear error when there is none."""

from __future__ import annotations

import os
from typing import Any

from factory.errors import FactoryError


class EngineUnavailable(FactoryError):
    """No Docker engine answers. Exit code 5."""

    exit_code = 5


def docker_client() -> Any:
    """A docker SDK client that has answered a ping, or EngineUnavailable."""
    import docker
    from docker.errors import DockerException

    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except (DockerException, OSError) as exc:
        raise EngineUnavailable(
            f"no Docker engine answers at {where} ({type(exc).__name__})",
            hint="start one (`sudo systemctl start docker`, or `sudo dockerd &` where there is no systemd), "
            "or point DOCKER_HOST at a running engine",
        ) from None
    return client
