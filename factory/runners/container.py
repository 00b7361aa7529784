"""Running a step in a container through the Docker engine.

Inputs are mounted read-only and outputs read-write; the container runs as the
caller's uid:gid so outputs belong to the caller; network is off unless the
step asks for it; GPUs are passed only to steps that need one; the container
is removed on success, on failure and on Ctrl-C or SIGTERM.

Steps run on worker threads, where no signal arrives: a build shares one
Cancellation with its runners, and its main thread stops the containers they
registered (factory/cells/interrupt.py). Called on the main thread (`factory run`),
the runner makes its own worker the same way (`base.interruptible`).
"""

from __future__ import annotations

import functools
import os
import signal
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from factory.errors import FactoryError
from factory.runners.base import Cancellation, Step, StepResult, interruptible, step_environment

RUN_LABEL = "org.factory.run"
STEP_LABEL = "org.factory.step"


def container_config(
    step: Step, *, user: tuple[int, int], run_id: str, host_env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """PURE: the keyword arguments for `containers.create`, so they can be tested without an engine."""
    from docker.types import DeviceRequest

    env = {"HOME": "/tmp", **step_environment(step, host_env)}
    config: dict[str, Any] = {
        "image": step.image,
        "command": list(step.argv),
        "user": f"{user[0]}:{user[1]}",
        "environment": env,
        "working_dir": step.workdir,
        "volumes": {
            str(m.source.resolve()): {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in step.mounts
        },
        "network_mode": "bridge" if step.network else "none",
        "labels": {RUN_LABEL: run_id, STEP_LABEL: step.name},
        "detach": True,
        "init": True,
        "security_opt": ["no-new-privileges"],
        "cap_drop": ["ALL"],
    }
    if step.needs_gpu:
        config["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    return config


class StepInterrupted(FactoryError):
    exit_code = 130


class ContainerRunner:
    def __init__(self, client: Any, *, user: tuple[int, int] | None = None, cancel: Cancellation | None = None) -> None:
        self.client = client
        self.user = user or (os.getuid(), os.getgid())
        self.run_id = uuid.uuid4().hex[:12]
        self.cancel = cancel or Cancellation()

    def run(self, step: Step, on_line: Callable[[str], None]) -> StepResult:
        try:
            return interruptible(self.cancel, functools.partial(self._run, step, on_line))
        except StepInterrupted as exc:
            exc.exit_code = 128 + (self.cancel.signum or signal.SIGINT)
            raise

    def _run(self, step: Step, on_line: Callable[[str], None]) -> StepResult:
        from docker.errors import DockerException

        for mount in step.mounts:
            if not mount.source.exists():
                raise FactoryError(f"step {step.name}: mount source {mount.source} does not exist")
        config = container_config(step, user=self.user, run_id=self.run_id)
        tail: deque[str] = deque(maxlen=50)
        container = None
        token = None
        interrupted = StepInterrupted(f"step {step.name} interrupted; its container was removed")
        try:
            if self.cancel.is_set():
                raise StepInterrupted(f"step {step.name} not started: the build was interrupted")
            container = self.client.containers.create(**config)
            token = self.cancel.register(functools.partial(_remove, container))
            if token is None:
                raise interrupted
            container.start()
            pending = ""
            for chunk in container.logs(stream=True, follow=True):
                pending += chunk.decode("utf-8", "replace")
                *lines, pending = pending.split("\n")
                for line in lines:
                    tail.append(line)
                    on_line(line)
            if pending:
                tail.append(pending)
                on_line(pending)
            status = container.wait()
            if self.cancel.is_set():
                raise interrupted
            return StepResult(int(status.get("StatusCode", 1)), tuple(tail))
        except DockerException:
            if self.cancel.is_set():  # the main thread removed the container under us
                raise interrupted from None
            raise
        finally:
            self.cancel.unregister(token)
            if container is not None:
                _remove(container)

    def leftovers(self) -> list[str]:
        """Containers this runner started that still exist (should always be empty)."""
        found = self.client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={self.run_id}"})
        return [c.name for c in found]


def _remove(container: Any) -> None:
    """Kill and remove; a container already gone (or going) is fine."""
    from docker.errors import APIError, NotFound

    try:
        container.remove(force=True)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code != 409:  # 409: a removal is already in progress
            raise
