"""Options mean the same thing in every command (issue 12, defect 9):

- every store command takes --store, else the `store:` of --matrix (default manifests/world.yaml);
- `verify` checks a store with --store and downloads --jobs blobs at a time;
- -t is --target wherever it exists; images take --toolchain only;
- --out is always a folder; a file is always --output-file (-o).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from factory.cli import app
from factory.store.backends import open_store
from factory.store.backends.local import LocalStore
from factory.store.housekeeping import verify_store
from factory.store.publish import publish
from tests.conftest import WORLD, copy_patches
from tests.support.bundles import make_bundle

runner = CliRunner()
NAME = "rwkv-5-world-tiny/q4f16_1/cuda-sm80"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a manifest whose `store:` holds one published bundle (and no --store anywhere)."""
    data: dict[str, Any] = yaml.safe_load(WORLD.read_text())
    data["root"] = "."
    data["store"] = "the-store"
    copy_patches(data, tmp_path)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    bundle = make_bundle(tmp_path / "dist", version="1.0.0")
    publish(open_store(str(tmp_path / "the-store")), [bundle])
    return tmp_path


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), env={"FACTORY_STORE": ""})


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["verify"],
        ["gc"],
        ["pull", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm80", "--out", "{tmp}/pulled"],
        ["yank", "rwkv-5-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm80", "--version", "1.0.0"],
    ],
)
def test_every_store_command_falls_back_to_the_manifest_store(project: Path, args: list[str]) -> None:
    filled = [a.replace("{tmp}", str(project)) for a in args]
    result = _invoke(*filled, "--matrix", str(project / "m.yaml"))
    assert result.exit_code == 0, result.output


def test_the_default_manifest_is_used_when_it_is_here(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "manifests").mkdir()
    text = (project / "m.yaml").read_text().replace("root: .", "root: ..")
    (project / "manifests" / "world.yaml").write_text(text)
    monkeypatch.chdir(project)
    result = _invoke("ls")
    assert result.exit_code == 0, result.output
    assert "rwkv-5-world-tiny" in result.stdout


def test_without_store_or_manifest_the_error_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke("verify")
    assert result.exit_code == 2
    assert "no store given" in result.stderr and "--matrix" in result.stderr


def test_verify_takes_store_and_jobs(project: Path) -> None:
    result = _invoke("verify", "--store", str(project / "the-store"), "--jobs", "3")
    assert result.exit_code == 0, result.output
    assert "1 bundle version(s)" in result.stdout
    both = _invoke("verify", str(project / "dist"), "--store", str(project / "the-store"))
    assert both.exit_code == 2 and "not both" in both.stderr


def test_verify_downloads_blobs_in_parallel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(tmp_path / "store"))
    publish(store, [make_bundle(tmp_path / "dist", megabytes=0.1)])
    lock = threading.Lock()
    running, most = 0, 0
    original = LocalStore.get_blob

    def slow(self: LocalStore, *args: Any, **kwargs: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        try:
            original(self, *args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(LocalStore, "get_blob", slow)
    bundles, blobs = verify_store(store, jobs=4)
    assert bundles == 1 and blobs >= 3
    assert most > 1


def test_minus_t_is_target_and_images_refuse_it(tmp_path: Path) -> None:
    for args in (
        ["images", "build", "--matrix", str(WORLD), "-t", "legacy-2024.03"],
        ["images", "metal-env", "--matrix", str(WORLD), "-t", "legacy-2024.03"],
    ):
        result = _invoke(*args)
        assert result.exit_code == 2, result.output
        assert "-t (--target in every command)" in result.output and "--toolchain NAME" in result.output


def test_out_is_a_folder_and_files_are_output_file(tmp_path: Path, project: Path) -> None:
    release = _invoke("release", "--matrix", str(project / "m.yaml"), "--out", str(tmp_path / "r.json"))
    assert release.exit_code == 2 and "--output-file FILE" in release.output
    pull = _invoke("pull", "x", "-q", "q", "-t", "t", "-o", str(tmp_path))
    assert pull.exit_code == 2 and "--out DIR" in pull.output
    old = _invoke("tokenizer", "rwkv-world", "--output", str(tmp_path / "tok"))
    assert old.exit_code == 2 and "--output-file FILE" in old.output
    new = _invoke("tokenizer", "rwkv-world", "--output-file", str(tmp_path / "tok"))
    assert new.exit_code == 0, new.output
    assert (tmp_path / "tok").is_file()
