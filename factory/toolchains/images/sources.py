"""The mlc-llm source a wheel toolchain image is built from, as one .tar.gz.

A connected builder downloads GitHub's archive of the pinned commit (kept in the
cache by commit); an offline or air-gapped one names a local archive or folder
(`--mlc-llm-source`, or FACTORY_MLC_LLM_SOURCE). Either way the image gets
factory-extra/sources/mlc-llm.tar.gz with one top folder holding `python/`.
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
from pathlib import Path

from factory.errors import InputError, NetworkError, Problem
from factory.manifest.model import SourcePin
from factory.paths import cache_home

ENV = "FACTORY_MLC_LLM_SOURCE"
_FIELD = "--mlc-llm-source"


def default_source() -> Path | None:
    value = os.environ.get(ENV)
    return Path(value) if value else None


def mlc_llm_archive(pin: SourcePin, given: Path | None) -> Path:
    """A .tar.gz of mlc-llm at `pin.commit`: `given` (archive or folder), else the cached download."""
    if given is not None:
        if given.is_dir():
            return _archive_folder(given, pin.commit)
        if given.is_file():
            _check_archive(given, pin.commit)
            return given
        raise InputError([_problem(given, "no such file or folder", "give a .tar.gz of mlc-llm or its checkout")])
    cached = cache_home() / "sources" / f"mlc-llm-{pin.commit}.tar.gz"
    if not cached.is_file():
        _download(pin, cached)
    _check_archive(cached, pin.commit)
    return cached


def archive_commit(path: Path) -> str | None:
    """The commit `git archive` (and GitHub's archive download) recorded in the tar, if any."""
    with tarfile.open(path, "r:gz") as tar:
        comment = tar.pax_headers.get("comment", "").strip()
    return comment or None


def _check_archive(path: Path, commit: str) -> None:
    try:
        recorded = archive_commit(path)
        with tarfile.open(path, "r:gz") as tar:
            has_package = any(
                name.count("/") >= 2 and name.split("/", 1)[1].startswith("python/mlc_llm/") for name in tar.getnames()
            )
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError([_problem(path, f"not a readable .tar.gz ({exc})", "give a `git archive` tarball")]) from None
    if recorded is not None and recorded != commit:
        raise InputError(
            [_problem(path, f"is mlc-llm {recorded[:12]}, the toolchain pins {commit[:12]}", "give the pinned commit")]
        )
    if not has_package:
        raise InputError(
            [_problem(path, "holds no TOP/python/mlc_llm/", "archive the repository root (python/ at least)")]
        )


def _archive_folder(folder: Path, commit: str) -> Path:
    if not (folder / "python" / "mlc_llm").is_dir():
        raise InputError([_problem(folder, "has no python/mlc_llm/", "give the root of an mlc-llm checkout")])
    dest = cache_home() / "sources" / f"mlc-llm-{commit}-from-folder.tar.gz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.NamedTemporaryFile(dir=dest.parent, suffix=".part", delete=False) as handle,
        tarfile.open(fileobj=handle, mode="w:gz") as tar,
    ):
        tar.add(folder / "python", arcname=f"mlc-llm-{commit[:8]}/python")
    os.replace(handle.name, dest)
    return dest


def _download(pin: SourcePin, dest: Path) -> None:
    repo = pin.repo.removesuffix(".git").rstrip("/")
    if not repo.startswith("https://github.com/"):
        raise NetworkError(
            f"cannot download {pin.repo}@{pin.commit[:12]}: only GitHub archives are fetched",
            hint=f"give a local archive or checkout with {_FIELD} PATH (or {ENV})",
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
            hint=f"offline? give a local archive or checkout of mlc-llm {pin.commit[:12]} with {_FIELD} PATH",
        ) from None
    os.replace(handle.name, dest)


def _problem(path: Path, message: str, fix: str) -> Problem:
    return Problem(file=str(path), field=_FIELD, message=message, fix=fix)
