"""A process whose main thread runs a blocking step through `runners.base.interruptible`,
so a test can signal it. The step holds a lock while it blocks, as an engine client's pool
does; its stop function needs that lock's partner. Prints `ready`, then how the step ended.

    python -m tests.support.interruptible_child
"""

from __future__ import annotations

import sys
import threading

from factory.runners.base import Cancellation, interruptible


def main() -> int:
    cancel = Cancellation()
    pool = threading.Lock()
    stopped = threading.Event()

    def stop() -> None:
        stopped.set()

    def step() -> str:
        token = cancel.register(stop)
        assert token is not None
        try:
            with pool:  # a KeyboardInterrupt raised in here would skip the stop's handshake
                print("ready", flush=True)
                stopped.wait()
            return "stopped by the main thread"
        except KeyboardInterrupt:
            return "KeyboardInterrupt inside the step"
        finally:
            cancel.unregister(token)

    outcome = interruptible(cancel, step)
    free = pool.acquire(timeout=5)
    print(f"{outcome}; signal {cancel.signum}; lock free: {free}", flush=True)
    return 128 + (cancel.signum or 0)


if __name__ == "__main__":
    sys.exit(main())
