"""Building, listing and pushing toolchain images through the Docker engine.

What an image is made of (and its tag) is decided in plan.py; this
module only assembles the build context, talks to the engine and reports.
"""

from __future__ import annotations

import io
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from factory.errors import FactoryError, InputError, NetworkError, Problem
from factory.manifest.load import LoadedManifest
from factory.manifest.lock import Lock
from factory.toolchains.images.plan import EXTRA_DIR, LABEL, ImagePlan, context_files, plan_image
from factory.toolchains.images.sources import (
    MLC_LLM_WEB,
    TVM,
    TVM_FFI,
    default_source,
    mlc_llm_archive,
    source_archive,
)

_EXTRA_DIRS = (
    "",
    "/patches",
    "/patches/mlc-llm",
    "/patches/tvm",
    "/patches/tokenizers-cpp",
    "/certs",
    "/wheelhouse",
    "/sources",
)
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


class ImageBuildError(FactoryError):
    """The engine failed to build a toolchain image. Exit code 6."""

    exit_code = 6


@dataclass(frozen=True, kw_only=True)
class BuildExtras:
    """Transport-only additions: they never change the image tag."""

    ca_certs: tuple[Path, ...] = ()
    wheelhouse: Path | None = None
    offline: bool = False
    mlc_llm_source: Path | None = field(default_factory=default_source)
    """A local mlc-llm archive or checkout for wheel toolchains (else downloaded by commit)."""
    tvm_source: Path | None = field(default_factory=lambda: default_source(TVM))
    tvm_ffi_source: Path | None = field(default_factory=lambda: default_source(TVM_FFI))
    mlc_llm_web_source: Path | None = field(default_factory=lambda: default_source(MLC_LLM_WEB))
    """Local TVM, tvm-ffi and mlc-llm web/ archives or checkouts for a wheel toolchain with
    Vulkan or WebGPU (else downloaded by commit)."""


@dataclass(frozen=True)
class BuildOutcome:
    toolchain: str
    ref: str
    built: bool
    image_id: str = ""


@dataclass
class BuildLog:
    """Where build output goes: a line sink and a step sink (for a progress display)."""

    line: Callable[[str], None]
    step: Callable[[int, int, str], None] = field(default=lambda _n, _total, _text: None)


def check_extras(extras: BuildExtras) -> None:
    problems = []
    for cert in extras.ca_certs:
        if not cert.is_file():
            problems.append(Problem(file=str(cert), field="--ca-cert", message="file not found", fix="give a PEM file"))
        elif b"-----BEGIN CERTIFICATE-----" not in cert.read_bytes():
            problems.append(
                Problem(
                    file=str(cert),
                    field="--ca-cert",
                    message="not a PEM certificate",
                    fix="convert it: `openssl x509 -inform der -in FILE -out FILE.crt`",
                )
            )
    if extras.wheelhouse is not None and (not extras.wheelhouse.is_dir() or not any(extras.wheelhouse.glob("*.whl"))):
        problems.append(
            Problem(
                file=str(extras.wheelhouse),
                field="--wheelhouse",
                message="not a folder of .whl files",
                fix="fill it with `pip download -d DIR -r requirements.txt` on a connected machine",
            )
        )
    if extras.offline and extras.wheelhouse is None:
        problems.append(
            Problem(file="", field="--offline", message="--offline needs a wheelhouse", fix="add --wheelhouse DIR")
        )
    if problems:
        raise InputError(problems)


def context_tar(plan: ImagePlan, extras: BuildExtras, sources: Mapping[str, Path] | None = None) -> bytes:
    """The build context as bytes (see write_context)."""
    buffer = io.BytesIO()
    write_context(buffer, plan, extras, sources or {})
    return buffer.getvalue()


def write_context(fileobj: IO[bytes], plan: ImagePlan, extras: BuildExtras, sources: Mapping[str, Path]) -> None:
    """The build context as an uncompressed tar: the toolchain's context folder,
    plus factory-extra/ with the Dockerfile, patches, certs, wheelhouse and sources.
    Entries are sorted with fixed metadata so equal inputs give equal bytes; files
    stream from disk, so a multi-GB wheelhouse never sits in memory."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add_dir(name: str) -> None:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)

        def add_file(name: str, path: Path, executable: bool = False) -> None:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mode = 0o755 if executable else 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)

        for path in context_files(plan.context):
            rel = path.relative_to(plan.context).as_posix()
            if rel == EXTRA_DIR or rel.startswith(EXTRA_DIR + "/"):
                continue
            add_file(rel, path, bool(path.stat().st_mode & 0o111))
        for sub in _EXTRA_DIRS:
            add_dir(f"{EXTRA_DIR}{sub}")
        add_file(f"{EXTRA_DIR}/Dockerfile", plan.dockerfile)
        for dest, source in plan.patches:
            add_file(f"{EXTRA_DIR}/patches/{dest}", source)
        for index, cert in enumerate(extras.ca_certs):
            add_file(f"{EXTRA_DIR}/certs/{index:02d}-{cert.stem}.crt", cert)
        if extras.wheelhouse is not None:
            for wheel in sorted(extras.wheelhouse.glob("*.whl")):
                add_file(f"{EXTRA_DIR}/wheelhouse/{wheel.name}", wheel)
        for name, source in sorted(sources.items()):
            add_file(f"{EXTRA_DIR}/sources/{name}", source)


def local_image_id(client: Any, ref: str) -> str | None:
    from docker.errors import ImageNotFound

    try:
        return str(client.images.get(ref).id)
    except ImageNotFound:
        return None


def plan_for_engine(client: Any, loaded: LoadedManifest, name: str, lock: Lock) -> ImagePlan:
    """The toolchain's image plan, with the engine's copy of an unlocked base as its identity."""
    base = loaded.manifest.toolchains[name].base_image
    return plan_image(loaded, name, lock, local_base_id=local_image_id(client, base))


def ensure_image(
    client: Any, plan: ImagePlan, extras: BuildExtras, log: BuildLog, registry: str | None = None
) -> BuildOutcome:
    """The image present in the engine: already there, pulled from `registry` by its content tag, or built."""
    if registry and local_image_id(client, plan.ref) is None:
        pull_cached(client, plan, registry, log)
    return build_image(client, plan, extras, log)


def build_image(client: Any, plan: ImagePlan, extras: BuildExtras, log: BuildLog) -> BuildOutcome:
    """Build the image unless the engine already has its content tag."""
    existing = local_image_id(client, plan.ref)
    if existing is not None:
        log.line(f"{plan.toolchain}: {plan.ref} is up to date; nothing to build")
        return BuildOutcome(plan.toolchain, plan.ref, built=False, image_id=existing)
    buildargs = dict(plan.build_args)
    if extras.offline:
        buildargs["PIP_NO_INDEX"] = "1"
    sources = {}
    if plan.mlc_llm_source is not None:
        sources["mlc-llm.tar.gz"] = mlc_llm_archive(plan.mlc_llm_source, extras.mlc_llm_source)
    given = {
        "tvm": (TVM, extras.tvm_source),
        "tvm-ffi": (TVM_FFI, extras.tvm_ffi_source),
        "mlc-llm-web": (MLC_LLM_WEB, extras.mlc_llm_web_source),
    }
    for kind_name, pin in plan.tvm_sources:
        kind, local = given[kind_name]
        sources[f"{kind_name}.tar.gz"] = source_archive(kind, pin, local)
    log.line(f"{plan.toolchain}: building {plan.ref} from {plan.dockerfile}")
    with tempfile.TemporaryFile() as context:
        write_context(context, plan, extras, sources)
        context.seek(0)
        _build_from(client, context, plan, buildargs, log)
    image_id = local_image_id(client, plan.ref)
    if image_id is None:
        raise ImageBuildError(f"{plan.toolchain}: the engine reported success but has no {plan.ref}")
    return BuildOutcome(plan.toolchain, plan.ref, built=True, image_id=image_id)


def _build_from(client: Any, context: IO[bytes], plan: ImagePlan, buildargs: dict[str, str], log: BuildLog) -> None:
    stream = client.api.build(
        fileobj=context,
        custom_context=True,
        dockerfile=f"{EXTRA_DIR}/Dockerfile",
        tag=plan.ref,
        buildargs=buildargs,
        labels=dict(plan.labels),
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    _follow(stream, plan, log)


def _follow(stream: Iterator[Mapping[str, Any]], plan: ImagePlan, log: BuildLog) -> None:
    tail: list[str] = []
    for chunk in stream:
        if "error" in chunk:
            detail = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()
            shown = "\n    ".join(tail[-15:])
            raise ImageBuildError(
                f"{plan.toolchain}: building {plan.ref} failed: {detail}\n  last output:\n    {shown}",
                hint=f"fix {plan.dockerfile} or the toolchain's pins; the full log is above",
            )
        text = str(chunk.get("stream") or chunk.get("status") or "")
        for line in text.splitlines():
            if not line.strip():
                continue
            tail = [*tail[-30:], line]
            step = _STEP.match(line)
            if step:
                log.step(int(step.group(1)), int(step.group(2)), step.group(3))
            log.line(f"{plan.toolchain} | {line}")


def push_image(client: Any, plan: ImagePlan, registry: str, log: BuildLog) -> str:
    """Tag the image under `registry` and push it; returns the pushed reference."""
    from docker.errors import APIError

    repository = f"{registry.rstrip('/')}/{plan.repository}"
    remote = f"{repository}:{plan.tag}"
    try:
        client.api.tag(plan.ref, repository, plan.tag)
        log.line(f"{plan.toolchain}: pushing {remote}")
        for chunk in client.api.push(repository, tag=plan.tag, stream=True, decode=True):
            if "error" in chunk:
                raise NetworkError(
                    f"pushing {remote} failed: {str(chunk['error']).strip()}",
                    hint="check the registry address and `docker login` to it",
                )
    except APIError as exc:
        raise NetworkError(f"pushing {remote} failed: {exc.explanation or exc}") from None
    return remote


@dataclass(frozen=True)
class ImageRow:
    toolchain: str
    ref: str
    image_hash: str
    created: str
    size_mb: float
    status: str


def list_images(client: Any, current: Mapping[str, str] | None = None) -> list[ImageRow]:
    """Toolchain images the engine has. `current` maps toolchain -> the tag the
    manifest asks for now, to mark rows current or stale."""
    rows = []
    for image in client.images.list(filters={"label": f"{LABEL}.toolchain"}):
        labels = image.labels or {}
        name = labels.get(f"{LABEL}.toolchain", "?")
        image_hash = labels.get(f"{LABEL}.image-hash", "")
        status = ""
        if current is not None:
            status = "current" if current.get(name) == image_hash else "stale"
        for ref in image.tags or ["<untagged>"]:
            rows.append(
                ImageRow(
                    toolchain=name,
                    ref=ref,
                    image_hash=image_hash,
                    created=str(image.attrs.get("Created", ""))[:19],
                    size_mb=round(int(image.attrs.get("Size", 0)) / 1e6, 1),
                    status=status,
                )
            )
    return sorted(rows, key=lambda r: (r.toolchain, r.ref))


def missing_toolchains(rows: Sequence[ImageRow], current: Mapping[str, str]) -> list[str]:
    have = {(r.toolchain, r.image_hash) for r in rows}
    return sorted(name for name, tag in current.items() if (name, tag) not in have)


def pull_cached(client: Any, plan: ImagePlan, registry: str, log: BuildLog) -> bool:
    """Fetch the image's content tag from `registry` (a CI cache) and tag it locally.
    False when the registry lacks it or cannot be reached: the caller builds instead."""
    from docker.errors import APIError

    remote = f"{registry.rstrip('/')}/{plan.repository}"
    try:
        for chunk in client.api.pull(remote, tag=plan.tag, stream=True, decode=True):
            if "error" in chunk:
                log.line(f"{plan.toolchain}: {remote}:{plan.tag} not in the registry ({str(chunk['error']).strip()})")
                return False
        client.api.tag(f"{remote}:{plan.tag}", plan.repository, plan.tag)
    except APIError as exc:
        log.line(f"{plan.toolchain}: {remote}:{plan.tag} not pulled ({exc.explanation or exc}); building")
        return False
    log.line(f"{plan.toolchain}: pulled {remote}:{plan.tag}")
    return True
