"""Fetching a model snapshot from the Hugging Face hub at its locked commit.

huggingface_hub does the work: HF_ENDPOINT (mirrors), HF_TOKEN and the local
cache (HF_HOME / HF_HUB_CACHE) are honoured as everywhere else, and its
progress bars show. The snapshot is then linked (or copied) out of the cache
into a plain folder, since cache entries are symlinks that a container mount
would not follow.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

from factory.errors import InputError, NetworkError, Problem
from factory.manifest.model import WeightFormat
from factory.manifest.weights import choose_files, content_digest, local_files, other_format
from factory.store.bundle_folder import link_or_copy


def fetch_snapshot(repo: str, commit: str, dest: Path, weight_format: WeightFormat, field: str = "hf.format") -> None:
    """Download the files a conversion needs into `dest` (a new folder)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = HfApi().list_repo_files(repo, revision=commit)
        if "config.json" not in files:
            raise InputError(
                [Problem(file=repo, field="hf.repo", message=f"{commit[:12]} has no config.json",
                         fix="name a Hugging Face model repo in transformers layout")]
            )  # fmt: skip
        patterns = choose_files(files, weight_format)
        if patterns is None:
            other = other_format(weight_format)
            has_other = choose_files(files, other) is not None
            raise InputError(
                [Problem(file=repo, field=field, message=f"{commit[:12]} has no {weight_format} weights",
                         fix=f"set {field}: {other}" if has_other else "this repo has no weights the flows read")]
            )  # fmt: skip
        snapshot = Path(snapshot_download(repo, revision=commit, allow_patterns=patterns))
    except RepositoryNotFoundError:
        raise NetworkError(f"model repo {repo} not found (or private without HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise NetworkError(f"commit {commit} not found in {repo}", hint="run `factory lock --upgrade`") from None
    except (HfHubHTTPError, HTTPError, OSError) as exc:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        raise NetworkError(f"downloading {repo} from {endpoint} failed ({type(exc).__name__}: {exc})") from None
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(snapshot.rglob("*")):
        if not path.is_dir():
            link_or_copy(path.resolve(), dest / path.relative_to(snapshot))
    index_single_safetensors(dest)


def copy_local(folder: Path, weight_format: WeightFormat, digest: str, dest: Path, field: str) -> None:
    """Copy a local model folder's conversion files into `dest` (a new folder) and check
    the copies against the content digest the plan was made with: a file edited since
    then would otherwise be built under the old key. Copied, never linked, so an edit
    in place in the user's folder cannot reach the cache later either."""
    names = local_files(folder, weight_format) if folder.is_dir() else None
    dest.mkdir(parents=True, exist_ok=True)
    for name in names or ():
        shutil.copyfile(folder / name, dest / name)
    if names is None or content_digest(dest, names) != digest:
        raise InputError(
            [Problem(file=str(folder), field=field, message="the folder changed after the build was planned",
                     fix="leave the model folder alone while a build runs, then build again")]
        )  # fmt: skip
    index_single_safetensors(dest)


def index_single_safetensors(folder: Path) -> None:
    """Write model.safetensors.index.json beside a lone model.safetensors.

    mlc-llm's convert_weight (support/auto_weight.py, _check_safetensor) writes this
    index into the source folder itself when it is missing; the steps see the model
    read-only, so it is made here, from the file's own header (no tensor is read)."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if not single.is_file() or index.exists():
        return
    with single.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    weight_map = {name: single.name for name in sorted(header) if name != "__metadata__"}
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2) + "\n")
