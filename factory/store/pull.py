"""`factory pull`: index -> bundle manifest -> blobs (parallel, resumed, verified)
-> the folder the runtime loads, made atomically from a content-addressed cache."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from factory.devices.host_cpu import bundle_level, host_flags, level_of
from factory.devices.runtime import RuntimeSpec, runtime_words
from factory.errors import UsageError
from factory.paths import blob_cache
from factory.store.backends.base import LocalWriteError, Store, TransferCancelled
from factory.store.blob_cache import blob_path, check_room, disk_error, fetch_blob, folder_lock, is_cached, partial_size
from factory.store.bundle_folder import BUNDLE_PLACEHOLDER, link_or_copy, replace_folder
from factory.store.documents import BUNDLE_MANIFEST, Index, IndexRecord
from factory.store.index import read_bundle_manifest
from factory.store.transfer_progress import byte_progress
from factory.trust.policy import Trust, open_index


@dataclass(frozen=True)
class Pulled:
    path: Path
    name: str
    version: str
    run: str
    downloaded_bytes: int


def resolve(
    store: Store, model: str, quant: str, target: str, version: str | None, trust: Trust | None = None
) -> tuple[str, str, IndexRecord]:
    """The bundle version to pull, from an index that passed the trust checks (when trust is configured)."""
    index = open_index(store, trust)
    if target == "auto":
        target = auto_target(index, model, quant)
    name = f"{model}/{quant}/{target}"
    entry = index.bundles.get(name)
    if entry is None:
        known = sorted(index.bundles)
        raise UsageError(
            f"{store.url} has no bundle {name}",
            hint="`factory ls --store ...` lists them" + (f"; e.g. {known[0]}" if known else " (the store is empty)"),
        )
    chosen = version or entry.latest
    if chosen is None:
        raise UsageError(f"every version of {name} is yanked", hint="pass --version to pull a yanked one on purpose")
    record = entry.versions.get(chosen)
    if record is None:
        raise UsageError(f"{name} has no version {chosen}", hint=f"published: {', '.join(sorted(entry.versions))}")
    return name, chosen, record


def auto_target(index: Index, model: str, quant: str) -> str:
    """The target of model/quant whose device this host has, where that can be told: its GPU
    (Metal on Apple silicon, CUDA of its compute capability), else the x86-64 CPU bundle of
    the highest level this CPU has (never one it lacks an instruction for)."""
    candidates = {
        name.rsplit("/", 1)[-1]: entry
        for name, entry in index.bundles.items()
        if name.startswith(f"{model}/{quant}/") and entry.latest
    }
    wanted: str | None = None
    if sys.platform == "darwin" and platform.machine() == "arm64":
        wanted = "metal"
    elif shutil.which("nvidia-smi"):
        try:
            cap = subprocess.run(
                ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                capture_output=True, text=True, check=True, timeout=10,
            ).stdout.split()[0]  # fmt: skip
            wanted = "sm_" + cap.replace(".", "")
        except (subprocess.SubprocessError, IndexError, OSError):
            wanted = None
    if wanted is not None:
        for target, entry in sorted(candidates.items()):
            if entry.latest and wanted in entry.versions[entry.latest].compatibility.device:
                return str(target)
    flags = host_flags()
    if flags is not None:
        host = level_of(flags)
        levels = {t: bundle_level(e.versions[e.latest].compatibility.device) for t, e in candidates.items() if e.latest}
        fitting = sorted((-level, t) for t, level in levels.items() if level is not None and level <= host)
        if fitting:
            return str(fitting[0][1])
        wanted = f"{wanted + ', ' if wanted else ''}x86-64 level {host}"
    raise UsageError(
        f"--target auto cannot tell which of {model}/{quant}'s targets fits this host "
        f"({sys.platform} {platform.machine()}{', ' + wanted if wanted else ''})",
        hint="pass --target; available: " + (", ".join(sorted(candidates)) or "none"),
    )


def pull(
    store: Store,
    model: str,
    quant: str,
    target: str,
    *,
    version: str | None,
    out: Path,
    cache: Path | None = None,
    jobs: int = 8,
    trust: Trust | None = None,
    runtime: RuntimeSpec | None = None,
) -> Pulled:
    """`cache` defaults to $FACTORY_CACHE, else ~/.cache/factory. With `runtime`, a bundle
    that does not fit it is refused before anything is downloaded, in words."""
    cache = cache or blob_cache()
    name, version, record = resolve(store, model, quant, target, version, trust)
    manifest, body = read_bundle_manifest(store, name, version, record)
    compat = manifest.compatibility.to_data()
    if runtime is not None and (misfits := runtime.misfits(compat)):
        raise UsageError(
            f"{name} {version} does not fit the runtime you named: " + "; ".join(misfits),
            hint=f"it loads with {runtime_words(compat)}; install that, or pull a bundle built for yours",
        )
    blobs = manifest.blobs()
    wanted = {d: s for d, s in blobs.items() if not is_cached(cache, d, s)}
    dest = out.resolve() / f"{model}-{quant}-{name.rsplit('/', 1)[-1]}"
    # Sizes are in the manifest: refuse before the first byte rather than fill the disk.
    resumable = sum(min(partial_size(cache, d), s) for d, s in wanted.items())
    check_room(cache, dest.parent, download=sum(wanted.values()) - resumable, bundle=sum(blobs.values()))
    names = {f.sha256: f.path for f in manifest.files}
    fetched = _fetch_all(store, cache, wanted, names, f"pull {name}", jobs)

    def fill(tmp: Path) -> None:
        for entry in manifest.files:
            link_or_copy(blob_path(cache, entry.sha256), tmp / entry.path)
        (tmp / BUNDLE_MANIFEST).write_bytes(body)

    # Two pulls into one output folder take turns; each swaps in a whole folder.
    with folder_lock(dest):
        try:
            replace_folder(dest, fill)
        except OSError as exc:
            failure = LocalWriteError(Path(exc.filename or dest), exc)
            raise disk_error(failure, then="the blobs are in the cache; nothing was put in place") from None
    run = manifest.run.replace(BUNDLE_PLACEHOLDER, str(dest))
    return Pulled(dest, name, version, run, fetched)


def _fetch_all(store: Store, cache: Path, wanted: dict[str, int], names: dict[str, str], label: str, jobs: int) -> int:
    """Fetch every wanted blob into the cache in parallel; the first failure stops every
    worker (partial files stay for a resume) and is raised. Returns the bytes fetched."""
    cancel = threading.Event()
    lock = threading.Lock()
    with byte_progress(label, sum(wanted.values())) as advance:

        def locked(amount: int) -> None:
            if cancel.is_set():
                raise TransferCancelled
            with lock:
                advance(amount)

        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            # Largest first: the big shards start at once and small files fill the gaps, so no
            # single large download is left running alone at the end.
            order = sorted(wanted, key=lambda d: (-wanted[d], d))
            futures = [pool.submit(fetch_blob, store, cache, d, wanted[d], names[d], locked, cancel) for d in order]
            wait(futures, return_when=FIRST_EXCEPTION)
            first = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
            if first:
                cancel.set()
                wait(futures)
                later = [f for f in futures if f not in first and not f.cancelled() and f.exception() is not None]
                # The error that stopped the pull, not the cancellations it caused.
                errors = [f.exception() for f in first + later]
                raise next(e for e in errors if e is not None and not isinstance(e, TransferCancelled))
            return sum(f.result() for f in futures)
        finally:
            cancel.set()  # also on Ctrl-C in this thread: workers stop at their next block
            pool.shutdown(wait=True, cancel_futures=True)
