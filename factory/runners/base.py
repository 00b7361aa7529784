"""The Runner interface and the step description both implementations run."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)

# Host variables a step may inherit. Everything else (HF_TOKEN, AWS_*, GITHUB_TOKEN,
# ...) stays behind: fetch and publish run in the factory itself, so no step needs them.
ENV_ALLOW_LIST = (
    "MLC_MULTI_ARCH",
    "TVM_NUM_THREADS",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "TZ",
    "LANG",
    "LC_ALL",
)


@dataclass(frozen=True, kw_only=True)
class Mount:
    source: Path
    target: str
    """Path inside the step's filesystem view (the container; on the host runner, equal to source)."""
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class Step:
    name: str
    argv: tuple[str, ...]
    image: str = ""
    """Container image reference; ignored by the host runner."""
    mounts: tuple[Mount, ...] = ()
    workdir: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    """Values the factory sets for this step (never secrets)."""
    needs_gpu: bool = False
    network: bool = False
    """Compile steps run with no network; only steps that must fetch set this."""


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    tail: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Cancellation:
    """Shared by the main thread and the workers running steps.

    Signals reach only the main thread, so its handler calls `request` (which only sets a
    flag) and the main thread then calls `stop_all`. A runner registers a stop function for
    each running step; once cancelled, `register` refuses, so a step that was about to
    start stops itself rather than slipping past the sweep.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._stops: dict[int, Callable[[], None]] = {}
        self._next = 0
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        """Safe in a signal handler: no lock, no I/O."""
        if self.signum is None:
            self.signum = signum
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def register(self, stop: Callable[[], None]) -> int | None:
        """A token for `unregister`, or None when the build is already cancelled."""
        with self._lock:
            if self._event.is_set():
                return None
            self._next += 1
            self._stops[self._next] = stop
            return self._next

    def unregister(self, token: int | None) -> None:
        if token is not None:
            with self._lock:
                self._stops.pop(token, None)

    def stop_all(self) -> int:
        """Stop every registered step (main thread, after `request`); returns how many."""
        with self._lock:
            stops = list(self._stops.values())
            self._stops.clear()
        for stop in stops:
            # A stop that fails is not the end: the step's own cleanup removes it again as it unwinds.
            with contextlib.suppress(Exception):
                stop()
        return len(stops)


@contextlib.contextmanager
def signals_cancel(cancel: Cancellation) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM cancel through `cancel` instead of raising in
    whatever the main thread was doing (off the main thread, signals are left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        cancel.request(signum)

    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def interruptible(cancel: Cancellation, work: Callable[[], T]) -> T:
    """Run `work` so that Ctrl-C and SIGTERM stop it cleanly, whichever thread calls.

    On the main thread, `work` runs on a worker while the main thread only waits, holds
    the signal handlers and, once a signal came, stops what `work` registered with
    `cancel`. A signal never raises inside the engine client or a subprocess wait (a
    KeyboardInterrupt there can leave a connection pool's lock held, and the cleanup that
    follows then blocks on it forever). Off the main thread (a build's workers), the
    caller's main thread already does this, so `work` just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        return work()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def body() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=body, name="step", daemon=True)
    with signals_cancel(cancel):
        worker.start()
        stopped = False
        while worker.is_alive():
            worker.join(0.1)
            if cancel.is_set() and not stopped:
                stopped = True
                cancel.stop_all()
    if failure:
        raise failure[0]
    return outcome[0]


class Runner(Protocol):
    def run(self, step: Step, on_line: Callable[[str], None]) -> StepResult: ...


def step_environment(step: Step, host_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment a step sees: allow-listed host variables, then the step's own."""
    source = os.environ if host_env is None else host_env
    env = {name: source[name] for name in ENV_ALLOW_LIST if name in source}
    env.update(step.env)
    return env
