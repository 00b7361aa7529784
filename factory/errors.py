"""The factory's error types.

Every error a user can cause is a FactoryError: it carries what failed, how to
fix it, and the exit code the CLI returns. Anything else reaching the CLI is a
bug in the factory and is reported as such.

Exit codes (docs/cli.md#exit-codes shows the same):
  1  a step failed for a reason the factory does not classify further
  2  bad input: manifest, lock, selectors, flags (InputError, UsageError)
  3  a remote service or store could not be reached or refused us (NetworkError, StoreError)
  4  bytes or documents that are not what they should be: a gate rejected a bundle, a blob
     or document in a store is damaged (IntegrityError, DocumentError, GateFailure)
  5  no container engine (EngineUnavailable)
  6  a toolchain image failed to build (ImageBuildError)
  7  this machine's disk is full or refuses writes (LocalDiskError)
  8  a signature does not verify: the signed index or release manifest was altered (BadSignature)
  9  trust is configured but the store's index is not signed (MissingSignature)
  10  the index is signed only by keys this machine does not trust (UnknownSigner)
  11  the signed index has expired (ExpiredIndex)
  12  the index is older than one this machine already saw from that store: a rollback (RollbackRefused)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM): 128 + the signal, as the shell reports it
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class FactoryError(Exception):
    """An error the user can act on."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One defect in an input file, located as precisely as the file allows."""

    file: str
    field: str
    message: str
    fix: str
    line: int | None = None

    def locate(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"

    def render(self) -> str:
        return f"{self.locate()}\n  fix: {self.fix}"


def render_problems(problems: list[Problem]) -> str:
    """One problem with its fix; several with theirs, or their one shared fix said once at the end."""
    if len(problems) == 1:
        return "error: " + problems[0].render()
    head = f"error: {len(problems)} problems\n"
    fixes = {p.fix for p in problems}
    if len(fixes) > 1:
        return head + "\n".join(p.render() for p in problems)
    return head + "\n".join(p.locate() for p in problems) + f"\n  fix: {fixes.pop()}"


class InputError(FactoryError):
    """Bad input (manifest, lock, selectors, flags): nothing was run. Exit code 2."""

    exit_code = 2

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("InputError needs at least one problem")
        self.problems = problems
        super().__init__(problems[0].message, hint=problems[0].fix)

    def render(self) -> str:
        return render_problems(self.problems)


class UsageError(FactoryError):
    """A command-line argument that cannot be honoured. Exit code 2."""

    exit_code = 2


class NetworkError(FactoryError):
    """A remote service (hub, registry) could not be reached or refused us. Exit code 3."""

    exit_code = 3


class IntegrityError(FactoryError):
    """Bytes that do not match their manifest, or a document that breaks the store's
    contract (see documents.DocumentError). Exit code 4."""

    exit_code = 4


class LocalDiskError(FactoryError):
    """This machine's disk cannot take the files: too little free space, or a write failed. Exit code 7."""

    exit_code = 7


def read_input_text(path: Path, *, what: str, fix: str) -> str:
    """A UTF-8 input file's text, or an InputError naming the file and how to fix it."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        message = f"{what} not found"
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read the {what}: {exc}"
    raise InputError([Problem(file=str(path), field="", message=message, fix=fix)])


class TrustError(FactoryError):
    """A signed-metadata check refused the store's index before any digest in it was used.
    Each kind has its own exit code (8-12); nothing is written to the output folder."""


class BadSignature(TrustError):
    exit_code = 8


class MissingSignature(TrustError):
    exit_code = 9


class UnknownSigner(TrustError):
    exit_code = 10


class ExpiredIndex(TrustError):
    exit_code = 11


class RollbackRefused(TrustError):
    exit_code = 12
