"""The sources a wheel toolchain image is built from, each as one .tar.gz.

mlc-llm's `python/` package always; for a wheel toolchain with Vulkan or WebGPU, also
apache/tvm at the wheel's own commit and its tvm-ffi submodule commit (the wheel ships
neither the Vulkan runtime nor its codegen, nor the web runtime a .wasm links, so the
image builds them beside it), and with WebGPU mlc-llm's `web/` (its wasm runtime object).
A connected builder downloads GitHub's archive of each pinned commit (kept in the
cache by commit); an offline or air-gapped one names a local archive or folder
(`--mlc-llm-source` or FACTORY_MLC_LLM_SOURCE; FACTORY_TVM_SOURCE,
FACTORY_TVM_FFI_SOURCE and FACTORY_MLC_LLM_WEB_SOURCE, which may be the same archive or
checkout as the mlc-llm source when it holds web/). The image gets factory-extra/sources/NAME.tar.gz, each with
one top folder.
Like CA certificates and wheelhouses this is transport: the commit, already in
the image tag and build keys, says which bytes these are, and an archive that
records a different commit (`git archive` writes it into the tar header) is refused.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from factory.errors import InputError, NetworkError, Problem
from factory.manifest.model import SourcePin
from factory.paths import cache_home


@dataclass(frozen=True)
class SourceKind:
    name: str
    env: str
    field: str
    marker: str
    """A folder every archive of this source holds below its top folder."""
    parts: tuple[str, ...]
    """What a checkout contributes to the archive made from it."""


MLC_LLM = SourceKind("mlc-llm", "FACTORY_MLC_LLM_SOURCE", "--mlc-llm-source", "python/mlc_llm/", ("python",))
TVM = SourceKind(
    "tvm", "FACTORY_TVM_SOURCE", "FACTORY_TVM_SOURCE", "src/backend/vulkan/",
    ("CMakeLists.txt", "cmake", "include", "src", "web", "3rdparty/compiler-rt", "LICENSE", "NOTICE"),
)  # fmt: skip
TVM_FFI = SourceKind(
    "tvm-ffi", "FACTORY_TVM_FFI_SOURCE", "FACTORY_TVM_FFI_SOURCE", "include/tvm/ffi/",
    ("CMakeLists.txt", "cmake", "include", "src", "LICENSE", "NOTICE"),
)  # fmt: skip
MLC_LLM_WEB = SourceKind(
    "mlc-llm-web", "FACTORY_MLC_LLM_WEB_SOURCE", "FACTORY_MLC_LLM_WEB_SOURCE", "web/emcc/", ("web", "LICENSE", "NOTICE")
)
ENV = MLC_LLM.env


def default_source(kind: SourceKind = MLC_LLM) -> Path | None:
    value = os.environ.get(kind.env)
    return Path(value) if value else None


def mlc_llm_archive(pin: SourcePin, given: Path | None) -> Path:
    """A .tar.gz of mlc-llm at `pin.commit`: `given` (archive or folder), else the cached download."""
    return source_archive(MLC_LLM, pin, given)


def source_archive(kind: SourceKind, pin: SourcePin, given: Path | None) -> Path:
    """A .tar.gz of `kind` at `pin.commit`: `given` (archive or folder), else the cached download."""
    if given is not None:
        if given.is_dir():
            return _archive_folder(kind, given, pin.commit)
        if given.is_file():
            _check_archive(kind, given, pin.commit)
            return given
        raise InputError(
            [_problem(kind, given, "no such file or folder", f"give a .tar.gz of {kind.name} or its checkout")]
        )
    cached = cache_home() / "sources" / f"{kind.name}-{pin.commit}.tar.gz"
    if not cached.is_file():
        _download(kind, pin, cached)
    _check_archive(kind, cached, pin.commit)
    return cached


def archive_commit(path: Path) -> str | None:
    """The commit `git archive` (and GitHub's archive download) recorded in the tar, if any."""
    with tarfile.open(path, "r:gz") as tar:
        comment = tar.pax_headers.get("comment", "").strip()
    return comment or None


def _check_archive(kind: SourceKind, path: Path, commit: str) -> None:
    try:
        recorded = archive_commit(path)
        with tarfile.open(path, "r:gz") as tar:
            has_package = any(
                name.count("/") >= 2 and name.split("/", 1)[1].startswith(kind.marker) for name in tar.getnames()
            )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(
            [_problem(kind, path, f"not a readable .tar.gz ({exc})", "give a `git archive` tarball")]
        ) from None
    if recorded is not None and recorded != commit:
        raise InputError(
            [
                _problem(
                    kind, path, f"is {kind.name} {recorded[:12]}, the toolchain pins {commit[:12]}",
                    "give the pinned commit",
                )
            ]
        )  # fmt: skip
    if not has_package:
        raise InputError([_problem(kind, path, f"holds no TOP/{kind.marker}", "archive the repository root")])


def _archive_folder(kind: SourceKind, folder: Path, commit: str) -> Path:
    if not (folder / kind.marker).is_dir():
        raise InputError([_problem(kind, folder, f"has no {kind.marker}", f"give the root of a {kind.name} checkout")])
    dest = cache_home() / "sources" / f"{kind.name}-{commit}-from-folder.tar.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".part", delete=False) as handle,
        tarfile.open(fileobj=handle, mode="w:gz") as tar,
    ):
        for part in kind.parts:
            if (folder / part).exists():
                tar.add(folder / part, arcname=f"{kind.name}-{commit[:8]}/{part}")
    os.replace(handle.name, dest)
    return dest


def _download(kind: SourceKind, pin: SourcePin, dest: Path) -> None:
    repo = pin.repo.removesuffix(".git").rstrip("/")
    if not repo.startswith("https://github.com/"):
        raise NetworkError(
            f"cannot download {pin.repo}@{pin.commit[:12]}: only GitHub archives are fetched",
            hint=f"give a local archive or checkout with {kind.field} PATH (or {kind.env})",
        )
    url = f"{repo}/archive/{pin.commit}.tar.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with (
            urllib.request.urlopen(url, timeout=60) as response,
            tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".part", delete=False) as handle,
        ):
            while block := response.read(1 << 20):
                handle.write(block)
    except (urllib.error.URLError, OSError) as exc:
        raise NetworkError(
            f"downloading {url} failed ({exc})",
            hint=f"offline? give a local archive or checkout of {kind.name} {pin.commit[:12]} with {kind.field} PATH",
        ) from None
    os.replace(handle.name, dest)


def _problem(kind: SourceKind, path: Path, message: str, fix: str) -> Problem:
    return Problem(file=str(path), field=kind.field, message=message, fix=fix)
