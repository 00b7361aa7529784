"""The one place that starts a subprocess.

Every command is echoed as `+ cmd` (with secret-looking values masked), its
output is streamed line by line to a callback, and a non-zero exit becomes a
CommandError that carries the tail of the output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from factory.errors import FactoryError

_SECRET_FLAG = re.compile(r"(?i)(token|secret|password|passwd|credential|api[-_]?key)")


class CommandError(FactoryError):
    """A command the factory ran exited non-zero."""

    def __init__(self, argv: Sequence[str], exit_code: int, tail: Sequence[str]) -> None:
        shown = "\n    ".join(tail[-20:]) or "(no output)"
        super().__init__(
            f"`{display(argv)}` exited with {exit_code}; last output:\n    {shown}",
            hint="read the output above; rerun with the same command to reproduce",
        )
        self.argv = tuple(argv)
        self.returncode = exit_code


@dataclass(frozen=True)
class Completed:
    exit_code: int
    output: str


def display(argv: Sequence[str]) -> str:
    """The command as a shell line, with values of secret-looking flags masked."""
    shown: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            shown.append("***")
            mask_next = False
            continue
        name, eq, _value = arg.partition("=")
        if name.startswith("-") and _SECRET_FLAG.search(name):
            if eq:
                shown.append(f"{name}=***")
            else:
                shown.append(arg)
                mask_next = True
            continue
        shown.append(arg)
    return shlex.join(shown)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    echo: Callable[[str], None] | None = None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
) -> Completed:
    """Run argv (never through a shell), stream its merged output, return or raise.

    With inherit_env=False the child sees only `env`: that is how steps get an
    allow-listed environment. `on_start` receives a function that kills the child, for a
    caller that must stop it from another thread.
    """
    if echo is not None:
        echo(f"+ {display(argv)}")
    child_env = {**os.environ, **(env or {})} if inherit_env else dict(env or {})
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=50)
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except FileNotFoundError:
        raise FactoryError(f"command not found: {argv[0]}", hint=f"install {argv[0]} or put it on PATH") from None
    try:
        if on_start is not None:
            on_start(proc.kill)
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            tail.append(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    except BaseException:
        # Ctrl-C or an error in the callback: do not leave the child running.
        proc.kill()
        proc.wait()
        raise
    if check and code != 0:
        raise CommandError(argv, code, list(tail))
    return Completed(code, "\n".join(lines))
