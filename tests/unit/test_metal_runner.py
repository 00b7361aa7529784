"""images/metal-runner: the bootstrap contract, its reuse of a built prefix, its locks, shellcheck."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from factory.manifest.load import load_manifest
from factory.toolchains.images.plan import METAL_ARGS, plan_metal_prefix
from tests.support.run import factory

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "images" / "metal-runner"
BIN = Path(sys.executable).parent


def _skipped(part: str) -> bool:
    return part.startswith((".venv", ".cache", ".factory")) or part == ".git"


def _shell_scripts() -> list[Path]:
    """Every shell script of ours: *.sh outside virtualenvs and caches, plus .ci/run."""
    found = [
        p
        for p in REPO.rglob("*.sh")
        if not any(
            part.startswith((".venv", ".cache", ".factory")) or part == ".git" for part in p.relative_to(REPO).parts
        )
    ]
    return [*sorted(found), REPO / ".ci" / "run"]


def test_every_shell_script_is_shellcheck_clean() -> None:
    scripts = _shell_scripts()
    assert RUNNER / "bootstrap.sh" in scripts
    assert REPO / ".github" / "scripts" / "retry.sh" in scripts
    done = subprocess.run([str(BIN / "shellcheck"), *map(str, scripts)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def _metal_env(tmp_path: Path, toolchain: str = "current-v0.20.0") -> dict[str, str]:
    manifest = str(REPO / "manifests" / "source-built.yaml")
    done = factory("images", "metal-env", "-m", manifest, "--toolchain", toolchain, "--prefix-root", str(tmp_path))
    assert done.returncode == 0, done.stderr
    env = {}
    for line in done.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


def test_metal_env_exports_what_bootstrap_reads(tmp_path: Path) -> None:
    env = _metal_env(tmp_path)
    assert env["MLC_LLM_COMMIT"] == "bb586e51eb20cba2e82216b75d22d8dd6657cce1"
    assert env["FLOW"] == "current"
    assert env["FACTORY_PREFIX_ROOT"] == str(tmp_path)
    script = (RUNNER / "bootstrap.sh").read_text()
    read = set(re.findall(r"\$\{?([A-Z_]+)", script))
    assert set(env) - {"TOOLCHAIN"} <= read
    assert set(METAL_ARGS) <= set(env)


def test_the_prefix_hash_follows_the_pins() -> None:
    loaded = load_manifest(REPO / "manifests" / "source-built.yaml")
    legacy = plan_metal_prefix(loaded, "legacy-2024.03")
    current = plan_metal_prefix(loaded, "current-v0.20.0")
    assert legacy.hash != current.hash
    assert plan_metal_prefix(loaded, "legacy-2024.03") == legacy


def _bootstrap(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(RUNNER / "bootstrap.sh")],
        env={**os.environ, **env, "LLVM_CONFIG": "/nonexistent"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_bootstrap_reuses_a_finished_prefix(tmp_path: Path) -> None:
    env = _metal_env(tmp_path)
    prefix = tmp_path / env["TOOLCHAIN_HASH"]
    prefix.mkdir()
    (prefix / ".factory-ready").write_text("2026-01-01")
    done = _bootstrap(env)
    assert done.returncode == 0, done.stderr
    assert "reusing it" in done.stdout


def test_bootstrap_refuses_while_another_build_holds_the_lock(tmp_path: Path) -> None:
    env = _metal_env(tmp_path)
    (tmp_path / f"{env['TOOLCHAIN_HASH']}.lock").mkdir()
    done = _bootstrap(env)
    assert done.returncode == 1
    assert "another build" in done.stderr


@pytest.mark.parametrize("generation", ["legacy", "current", "wheel"])
def test_python_locks_pin_and_hash_every_requirement(generation: str) -> None:
    text = (RUNNER / f"requirements-{generation}.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", text, flags=re.MULTILINE)
    assert len(pins) > 20
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 1)[1])
    assert all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    wanted = {
        line.split("==")[0].split(">")[0].split("<")[0].lower().replace("_", "-")
        for line in (RUNNER / f"requirements-{generation}.in").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert wanted <= {name.lower().replace("_", "-") for name, _ in pins}


def _locked_names(lock: Path) -> set[str]:
    names = set()
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==", line)
        if match:
            names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def test_the_legacy_lock_has_what_import_mlc_chat_needs() -> None:
    """bootstrap.sh installs mlc-llm with --no-deps, so the hashed lock alone must
    hold the runtime package's install_requires at b44cdc53 (python/setup.py) and
    pydantic, which mlc_chat imports without declaring it."""
    from factory.toolchains.contract import legacy_contract

    requires = legacy_contract("b44cdc53381bd804ef000775bb280de1c7ca6439").runtime_requires
    assert requires.package == "mlc_chat" and requires.source.startswith("python/setup.py:")
    needed = {*requires.names, *(n.name for n in requires.imported_not_declared)}
    assert {"fastapi", "shortuuid", "tiktoken", "prompt_toolkit", "openai", "pydantic"} <= needed
    script = (RUNNER / "bootstrap.sh").read_text()
    assert 'pip install --quiet --no-deps "$mlc/python" "$mlc"' in script
    locked = _locked_names(RUNNER / "requirements-legacy.lock")
    missing = {re.sub(r"[-_.]+", "-", n).lower() for n in needed} - locked
    assert not missing, f"requirements-legacy.lock lacks {sorted(missing)}; add them to the .in and run relock.sh"


def _wheel_with_metal(tmp_path: Path) -> Path:
    """manifests/world.yaml's wheel toolchain cells only (their Metal target included)."""
    import yaml

    data = yaml.safe_load((REPO / "manifests" / "world.yaml").read_text())
    data["root"] = str(REPO)
    data["toolchains"] = {"wheel-tvm0.26": data["toolchains"]["wheel-tvm0.26"]}
    data["models"] = [m for m in data["models"] if m["toolchain"] == "wheel-tvm0.26"]
    data.pop("matrix")
    assert data["toolchains"]["wheel-tvm0.26"]["build"]["metal"] is True
    assert data["targets"]["metal-arm64"]["runner"] == "host"
    path = tmp_path / "wheel-metal.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _pins(lock: Path) -> dict[str, str]:
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", lock.read_text(), flags=re.MULTILINE)
    }


def test_the_macos_runner_installs_the_linux_images_wheel_toolchain(tmp_path: Path) -> None:
    """One toolchain on both sides: the macOS prefix of a wheel toolchain takes the same
    apache-tvm, mlc-llm commit and patches (in the same order) as its Linux image, and its
    hashed lock the same TVM, tvm-ffi and reference pins as the image's lock."""
    from factory.manifest.lock import Lock
    from factory.toolchains.images.plan import plan_image

    loaded = load_manifest(_wheel_with_metal(tmp_path))
    (name,) = loaded.manifest.toolchains
    image = plan_image(loaded, name, Lock(local_images={"debian:bookworm-slim": "sha256:" + "a" * 64}))
    mac = plan_metal_prefix(loaded, name)
    for key in ("TVM_WHEEL", "MLC_LLM_REPO", "MLC_LLM_COMMIT", "FLOW", "PYTHON_VERSION"):
        assert mac.env[key] == image.build_args[key], key
    assert mac.env["TVM_WHEEL"] == "apache-tvm==0.26.0"
    assert [(dest, src) for dest, src in mac.patches] == [(dest, src) for dest, src in image.patches]
    assert any("rwkv7-model.patch" in dest for dest, _ in mac.patches)
    linux, macos = _pins(REPO / "images" / "wheel" / "requirements.lock"), _pins(RUNNER / "requirements-wheel.lock")
    for package in ("apache-tvm", "apache-tvm-ffi", "rwkv", "safetensors", "numpy"):
        assert macos[package] == linux[package], package
    assert macos["torch"] == linux["torch"].split("+")[0]  # the image takes PyTorch's CPU build
    assert not any(name.startswith("nvidia-") for name in macos)
    wanted = {
        re.sub(r"[-_.]+", "-", re.split(r"[=<>]", line)[0]).lower()
        for line in (REPO / "images" / "wheel" / "requirements.in").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert {n for n in wanted if not n.startswith("nvidia-")} <= set(macos)


def test_bootstrap_takes_the_wheel_path_for_a_wheel_toolchain(tmp_path: Path) -> None:
    env = _metal_env_for(tmp_path, _wheel_with_metal(tmp_path))
    assert env["TVM_WHEEL"] == "apache-tvm==0.26.0"
    script = (RUNNER / "bootstrap.sh").read_text()
    assert 'pip install --quiet --require-hashes -r "$here/requirements-wheel.lock"' in script
    assert "apply_patches mlc-llm" in script
    # A wheel prefix is reused like any other.
    prefix = Path(env["FACTORY_PREFIX_ROOT"]) / env["TOOLCHAIN_HASH"]
    prefix.mkdir(parents=True)
    (prefix / ".factory-ready").write_text("2026-01-01")
    done = _bootstrap(env)
    assert done.returncode == 0 and "reusing it" in done.stdout, done.stderr


def _metal_env_for(tmp_path: Path, manifest: Path) -> dict[str, str]:
    loaded = load_manifest(manifest)
    (name,) = loaded.manifest.toolchains
    done = factory(
        "images", "metal-env", "-m", str(manifest), "--toolchain", name, "--prefix-root", str(tmp_path / "prefixes")
    )
    assert done.returncode == 0, done.stderr
    env = {}
    for line in done.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env
