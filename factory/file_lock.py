"""The one way processes take turns here: an exclusive flock on a lock file (made,
with its folder, when missing). The kernel drops it when the holder dies, so a killed
process never leaves a lock behind."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: Path, *, poll: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold the lock on `path`. With `poll`, wait by retrying every 50 ms and call
    `poll` between tries; it may raise to give up (e.g. on Ctrl-C from another thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        if poll is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    poll()
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
