"""Fetching a model snapshot from the Hugging Face hub at its locked commit.

huggingface_hub does the work: HF_ENDPOINT (mirrors), HF_TOKEN and the local
cache (HF_HOME / HF_HUB_CACHE) are honoured as everywhere else, and its
progress bars show. The snapshot is then linked (or copied) out of the cache
into a plain folder, since cache entries are symlinks that a container mount
would not follow.
"""

from __future__ import annotations

import os
import shutil
from fnmatch import fnmatchcase
from pathlib import Path

from .errors import NetworkError
from .toolchains.base import SourceFormat

# What a conversion reads: the config and one weight format (safetensors preferred).
_CONFIG = ["config.json", "generation_config.json"]
_SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
_TORCH = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


def choose_files(repo_files: list[str]) -> tuple[list[str], SourceFormat]:
    """PURE: the patterns to download and the source format they make."""
    if any(fnmatchcase(f, "*.safetensors") for f in repo_files):
        return [*_CONFIG, *_SAFETENSORS], "huggingface-safetensor"
    return [*_CONFIG, *_TORCH], "huggingface-torch"


def fetch_snapshot(repo: str, commit: str, dest: Path) -> SourceFormat:
    """Download the files a conversion needs into `dest` (a new folder)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = HfApi().list_repo_files(repo, revision=commit)
        patterns, source_format = choose_files(files)
        if "config.json" not in files:
            raise NetworkError(f"{repo}@{commit[:12]} has no config.json", hint="is this a Hugging Face model repo?")
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
        if path.is_dir():
            continue
        target = dest / path.relative_to(snapshot)
        target.parent.mkdir(parents=True, exist_ok=True)
        real = path.resolve()
        try:
            os.link(real, target)
        except OSError:
            shutil.copyfile(real, target)
    return source_format
