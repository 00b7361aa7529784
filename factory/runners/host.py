"""Running a step natively in a metal-runner prefix (macOS runners).

The prefix is the folder images/metal-runner/bootstrap.sh builds for one
toolchain hash; it holds a venv with TVM and mlc-llm. There are no mounts on
the host: paths are used as they are, and the environment is the same
allow-list the container runner uses.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from pathlib import Path

from factory import process
from factory.errors import FactoryError
from factory.runners.base import Cancellation, Step, StepResult, interruptible, step_environment

READY_MARK = ".factory-ready"
RUNNER_ENV = "runner.env"


class HostRunner:
    def __init__(self, prefix: Path, *, cancel: Cancellation | None = None) -> None:
        if not (prefix / READY_MARK).is_file():
            raise FactoryError(
                f"{prefix} is not a finished metal-runner prefix (no {READY_MARK})",
                hint="run images/metal-runner/bootstrap.sh for this toolchain first",
            )
        self.prefix = prefix
        self.cancel = cancel or Cancellation()

    def run(self, step: Step, on_line: Callable[[str], None]) -> StepResult:
        return interruptible(self.cancel, functools.partial(self._run, step, on_line))

    def _run(self, step: Step, on_line: Callable[[str], None]) -> StepResult:
        env = step_environment(step)
        bin_dir = self.prefix / "venv" / "bin"
        env["PATH"] = f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin"
        env["HOME"] = str(self.prefix / "home")
        env["VIRTUAL_ENV"] = str(self.prefix / "venv")
        built = self.prefix / "src" / "tvm" / "build"
        if built.is_dir():  # a source toolchain's TVM; a wheel's finds its own libraries
            env["TVM_LIBRARY_PATH"] = str(built)
        env.update(prefix_environment(self.prefix))
        (self.prefix / "home").mkdir(exist_ok=True)
        argv = [_host_path(arg, step) for arg in step.argv]
        if argv and argv[0] in {"python", "python3"}:
            argv[0] = str(bin_dir / "python")
        tail: deque[str] = deque(maxlen=50)

        def keep(line: str) -> None:
            tail.append(line)
            on_line(line)

        cwd = Path(_host_path(step.workdir, step)) if step.workdir != "/" else None
        tokens: list[int | None] = []

        def started(kill: Callable[[], None]) -> None:
            tokens.append(token := self.cancel.register(kill))
            if token is None:
                kill()

        try:
            done = process.run(argv, cwd=cwd, env=env, inherit_env=False, on_line=keep, check=False, on_start=started)
        finally:
            for token in tokens:
                self.cancel.unregister(token)
        if self.cancel.is_set():
            raise FactoryError(f"step {step.name} interrupted; its process was killed")
        return StepResult(done.exit_code, tuple(tail))


def prefix_environment(prefix: Path) -> dict[str, str]:
    """What bootstrap.sh wrote for every step of its prefix (runner.env, KEY=VALUE lines):
    a wheel toolchain's SKIP_LOADING_MLCLLM_SO, as its Linux image sets it."""
    path = prefix / RUNNER_ENV
    if not path.is_file():
        return {}
    pairs = (line.partition("=") for line in path.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, sep, value in pairs if sep}


def _host_path(arg: str, step: Step) -> str:
    """Steps are written against mount targets (/in/..., /out); on the host those are the sources."""
    for mount in sorted(step.mounts, key=lambda m: len(m.target), reverse=True):
        if arg == mount.target or arg.startswith(mount.target + "/"):
            return str(mount.source) + arg[len(mount.target) :]
    return arg
