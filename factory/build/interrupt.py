"""Ctrl-C and SIGTERM during a build.

Python delivers signals to the main thread only, and every step runs on a worker
thread, so the main thread's handler just marks the build cancelled; the
executor's loop (also on the main thread) then starts nothing more and stops the
containers and processes the runners registered. The build ends with 128 plus
the signal's number: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from ..errors import FactoryError
from ..runners import Cancellation

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BuildInterrupted(FactoryError):
    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"build interrupted by {name}: nothing more was started, running steps were stopped and their "
            "containers removed",
            hint="run the same command again: finished nodes are cached and are not built again",
        )
        self.exit_code = 128 + signum


@contextmanager
def signals_cancel(cancel: Cancellation) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM cancel the build instead of ending the process."""
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
