"""`factory build` end to end: a tiny real RWKV checkpoint on a local hub (olah),
the conformance toolchain image on a real engine, real TVM in the gates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docker import conformance_context, ensure_wheelhouse, toolchain_manifest
from tests.support.hub import LocalHub
from tests.support.run import FACTORY, factory
from tests.support.tiny_rwkv import tiny_rwkv_files

pytestmark = [pytest.mark.docker, pytest.mark.hub]
QUANTS = ["q4f16_1", "q4f32_1"]
TARGETS = {
    "cuda-sm80": {"device": {"kind": "cuda", "arch": "sm_80"}, "runner": "container", "os": "linux"},
    "cuda-sm90": {"device": {"kind": "cuda", "arch": "sm_90"}, "runner": "container", "os": "linux"},
}


@dataclass
class Project:
    root: Path
    hub: LocalHub
    commit: str
    poisoned: str

    def manifest(self, name: str = "m.yaml", *, flow: str = "legacy", **model: Any) -> Path:
        data = toolchain_manifest(self.root, flow=flow)
        entry = data["models"][0]
        entry["name"] = "rwkv-4-world-tiny" if flow == "legacy" else "rwkv-5-world-tiny"
        entry["hf"] = {"repo": "factory-tests/rwkv-4-world-tiny", "revision": self.commit}
        entry.update(model)
        data["quantizations"] = QUANTS
        data["targets"] = TARGETS
        path = self.root / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        done = self.run("lock", "-m", str(path), "--local-images")
        assert done.returncode == 0, done.stderr
        return path

    def run(self, *args: str) -> Any:
        return factory(*args, env=self.hub.env(), cwd=self.root)


@pytest.fixture(scope="module")
def project(local_hub: LocalHub, docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    root = tmp_path_factory.mktemp("build")
    commit = local_hub.commit("factory-tests/rwkv-4-world-tiny", tiny_rwkv_files())
    poisoned = local_hub.commit("factory-tests/rwkv-4-world-poisoned", tiny_rwkv_files(poison_nan=True))
    conformance_context(root / "conformance", salt=uuid.uuid4().hex)
    p = Project(root=root, hub=local_hub, commit=commit, poisoned=poisoned)
    for flow in ("legacy", "current"):
        manifest = p.manifest(f"{flow}.yaml", flow=flow)
        done = p.run("images", "build", "-m", str(manifest), "--wheelhouse", str(ensure_wheelhouse()), "--offline")
        assert done.returncode == 0, done.stderr
    yield p


def _containers_started(client: Any, since: float, until: float) -> list[str]:
    events = client.events(since=f"{since:.6f}", until=f"{until:.6f}", decode=True)
    return [e["Actor"]["Attributes"].get("org.factory.step", "") for e in events
            if e.get("Type") == "container" and e.get("status") == "create"]  # fmt: skip


def test_build_converts_once_per_quant_and_a_rerun_starts_nothing(project: Project, docker_client: Any) -> None:
    manifest = project.root / "legacy.yaml"
    since = time.time()
    done = project.run("build", "-m", str(manifest), "--work", "work", "--out", "dist", "-j", "2")
    until = time.time() + 0.5
    assert done.returncode == 0, done.stderr + done.stdout
    steps = _containers_started(docker_client, since, until)
    converts = [s for s in steps if s.startswith("convert:")]
    compiles = [s for s in steps if s.startswith("compile:")]
    assert len(converts) == len(QUANTS)  # models x quantizations, not x targets
    assert len(compiles) == len(QUANTS) * len(TARGETS)
    for quant in QUANTS:
        for target in TARGETS:
            bundle = project.root / "dist" / f"rwkv-4-world-tiny-{quant}-{target}"
            manifest_data = json.loads((bundle / "factory-bundle.json").read_text())
            _check_bundle(bundle, manifest_data, quant)

    time.sleep(1.1)
    since = time.time()
    again = project.run("build", "-m", str(manifest), "--work", "work", "--out", "dist")
    until = time.time() + 0.5
    assert again.returncode == 0, again.stderr
    assert _containers_started(docker_client, since, until) == []
    assert "built 0, cached" in again.stdout


def _check_bundle(bundle: Path, manifest: dict[str, Any], quant: str) -> None:
    from factory.store.bundle_folder import sha256_file

    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"factory-bundle.json"}
    assert set(listed) == on_disk
    for path, entry in listed.items():
        assert entry["sha256"] == sha256_file(bundle / path)
        assert entry["size"] == (bundle / path).stat().st_size
    roles = {f["role"] for f in manifest["files"]}
    assert {"params-index", "params-shard", "chat-config", "tokenizer", "library"} <= roles
    assert manifest["compatibility"] == {
        "flow": "legacy",
        "params_index": "ndarray-cache.json",
        "mlc_llm": "b44cdc53381bd804ef000775bb280de1c7ca6439",
        "tvm": "f06d486b4a1a27f0bbb072688a5fc41e7b15323c",
        "device": manifest["compatibility"]["device"],
        "library": f"rwkv-4-world-tiny-{quant}-cuda.so",
        "patches": None,  # the toolchain carries no patches
    }
    assert manifest["compatibility"]["device"] in ("nvidia/nvidia-a100", "nvidia/nvidia-h100")
    assert manifest["gates"]["layout"]["status"] == "passed"
    assert manifest["gates"]["params"]["status"] == "passed"
    assert manifest["gates"]["library"]["status"] == "passed"
    # Built without --smoke: the smoke and parity gates say they were not run, and why.
    assert manifest["gates"]["smoke"]["status"] == "not-run"
    assert manifest["gates"]["smoke"]["reason"] == "not asked for (--smoke)"
    assert manifest["gates"]["parity"]["status"] == "not-run"
    config = json.loads((bundle / "params" / "mlc-chat-config.json").read_text())
    assert config["tokenizer_files"] == ["tokenizer_model"]
    assert manifest["provenance"]["model"]["commit"]


def test_require_smoke_fails_without_a_device(project: Project) -> None:
    manifest = project.root / "legacy.yaml"
    args = ["--work", "work", "--out", "dist", "--only", "*/q4f16_1/cuda-sm80", "--require-smoke"]
    done = project.run("build", "-m", str(manifest), *args)
    assert done.returncode == 4, done.stderr
    assert "--require-smoke" in done.stderr and "no cuda device on this host" in done.stderr


def test_current_flow_bundle_layout(project: Project) -> None:
    manifest = project.root / "current.yaml"
    done = project.run(
        "build", "-m", str(manifest), "--work", "work", "--out", "dist", "--only", "*/q4f16_1/cuda-sm90"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout
    bundle = project.root / "dist" / "rwkv-5-world-tiny-q4f16_1-cuda-sm90"
    data = json.loads((bundle / "factory-bundle.json").read_text())
    assert data["compatibility"]["params_index"] == "tensor-cache.json"
    assert data["compatibility"]["device"] == '{"arch":"sm_90","kind":"cuda"}'
    assert (bundle / "tensor-cache.json").is_file() and (bundle / "rwkv-5-world-tiny-q4f16_1-cuda-sm90.so").is_file()
    config = json.loads((bundle / "mlc-chat-config.json").read_text())
    assert "tokenizer_model" in config["tokenizer_files"]
    assert data["run"].startswith("mlc_llm chat ")


def test_two_models_of_one_source_share_its_fetch_and_both_build(project: Project) -> None:
    """One checkpoint under two model names (two conv templates, or with and without an
    override): one fetch node's output serves both (the same key: the same repo at the same
    revision), written under the first one's name, and the second one's convert must find it."""
    data = yaml.safe_load((project.root / "current.yaml").read_text())
    twin = {**data["models"][0], "name": "rwkv-5-world-tiny-twin"}
    data["models"].append(twin)
    path = project.root / "twins.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert project.run("lock", "-m", str(path), "--local-images").returncode == 0
    only = ("--only", "*/q4f16_1/cuda-sm90")
    done = project.run("build", "-m", str(path), "--work", "work-twins", "--out", "dist-twins", "-j", "2", *only)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    for name in ("rwkv-5-world-tiny", "rwkv-5-world-tiny-twin"):
        bundle = project.root / "dist-twins" / f"{name}-q4f16_1-cuda-sm90"
        assert (bundle / f"{name}-q4f16_1-cuda-sm90.so").is_file(), name
    fetched = list((project.root / "work-twins" / "nodes" / "fetch").iterdir())
    assert len(fetched) == 1, fetched  # fetched once


@pytest.mark.parametrize("damage", ["missing", "short"])
def test_a_damaged_shard_fails_the_layout_lint(project: Project, damage: str) -> None:
    """Damage a cached conversion, forget its bundles, build again: the layout lint refuses."""
    import shutil

    manifest = project.root / "legacy.yaml"
    args = ["--work", f"work-{damage}", "--out", f"dist-{damage}", "--only", "*/q4f16_1/cuda-sm80"]
    assert project.run("build", "-m", str(manifest), *args).returncode == 0
    work = project.root / f"work-{damage}" / "nodes"
    shard = next(work.glob("convert/*/rwkv-4-world-tiny-q4f16_1/params/params_shard_0.bin"))
    if damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:-100])
    shutil.rmtree(work / "bundle")
    done = project.run("build", "-m", str(manifest), *args)
    assert done.returncode == 4, done.stderr
    assert "rejected by the layout gate" in done.stderr
    expected = "listed in ndarray-cache.json but missing" if damage == "missing" else "ndarray-cache.json says"
    assert "params_shard_0.bin" in done.stderr and expected in done.stderr


def test_nan_weights_fail_the_params_gate_with_the_hint(project: Project) -> None:
    manifest = project.manifest(
        "nan.yaml", hf={"repo": "factory-tests/rwkv-4-world-poisoned", "revision": project.poisoned}
    )
    done = project.run(
        "build", "-m", str(manifest), "--work", "work", "--out", "dist-nan", "--only", "*/q4f16_1/cuda-sm80"
    )
    assert done.returncode == 4, done.stderr
    assert "rejected by the params gate" in done.stderr
    assert "NaN/Inf" in done.stderr
    assert "first_layer_fp32" in done.stderr
    assert not (project.root / "dist-nan" / "rwkv-4-world-tiny-q4f16_1-cuda-sm80").exists()


def test_a_broken_vocab_fails_the_tokenizer_check(project: Project) -> None:
    from factory.tokenizer.rwkv_world import upstream_vocab_path

    lines = upstream_vocab_path().read_text(encoding="utf-8").splitlines(keepends=True)
    broken = project.root / "vocab" / "broken_vocab.txt"
    broken.parent.mkdir(exist_ok=True)
    broken.write_text("".join(line for line in lines if not line.startswith("33 ")), encoding="utf-8")
    manifest = project.manifest("vocab.yaml", tokenizer={"path": "vocab/broken_vocab.txt"})
    done = project.run(
        "build", "-m", str(manifest), "--work", "work", "--out", "dist-vocab", "--only", "*/q4f16_1/cuda-sm80"
    )
    assert done.returncode == 4, done.stderr
    assert "tokenizer" in done.stderr
    assert "blocked" in done.stdout
    assert not (project.root / "dist-vocab").exists()


def test_build_publishes_to_a_store_and_a_fresh_builder_skips_what_the_store_has(
    project: Project, docker_client: Any
) -> None:
    import tvm
    from tvm.contrib import tvmjs

    manifest = project.root / "legacy.yaml"
    store = f"file://{project.root / 'store'}"
    only = ["--only", "*/q4f16_1/*"]
    done = project.run("build", "-m", str(manifest), "--work", "work", "--out", "dist", "--store", store, *only)
    assert done.returncode == 0, done.stderr
    assert "published 2 bundle(s)" in done.stdout
    time.sleep(1.1)
    since = time.time()
    fresh = project.run("build", "-m", str(manifest), "--work", "work-2", "--out", "dist-2", "--store", store, *only)
    until = time.time() + 0.5
    assert fresh.returncode == 0, fresh.stderr
    assert _containers_started(docker_client, since, until) == []
    assert "in store 2" in fresh.stdout
    pulled = project.run(
        "pull", "rwkv-4-world-tiny", "-q", "q4f16_1", "-t", "cuda-sm90", "--store", store, "--out", "pulled",
        "--cache", "cache",
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    folder = project.root / "pulled" / "rwkv-4-world-tiny-q4f16_1-cuda-sm90"
    tensors, _ = tvmjs.load_tensor_cache(str(folder / "params" / "ndarray-cache.json"), tvm.cpu())
    assert "embeddings.weight.q_weight" in tensors
    assert f"python -m mlc_chat chat {folder}/params --model-lib-path {folder}/" in pulled.stdout


def _step_containers(client: Any, marker: str) -> list[Any]:
    """Step containers (any state) that mount something under `marker`: this test's own,
    not those of other builds sharing the engine. A container removed while it is being
    listed (the build cleaning up) is simply gone."""
    from docker.errors import NotFound

    for _ in range(10):
        try:
            found = client.containers.list(all=True, filters={"label": "org.factory.step"})
            break
        except NotFound:
            continue
    else:
        raise AssertionError("the engine kept removing containers while they were listed")
    return [c for c in found if any(marker in m.get("Source", "") for m in c.attrs.get("Mounts", []))]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signalled_build_stops_and_removes_its_step_containers(
    project: Project, docker_client: Any, signum: int
) -> None:
    """Steps run on worker threads, where no signal arrives: the build's main thread must
    stop them, remove their containers and exit with 128 + the signal's number."""
    manifest = project.root / "legacy.yaml"
    work = project.root / f"work-signal-{signum}"
    proc = subprocess.Popen(
        [str(FACTORY), "build", "-m", str(manifest), "--work", str(work), "--out", str(work / "dist"), "-j", "2"],
        cwd=project.root,
        env={**os.environ, **project.hub.env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not [c for c in _step_containers(docker_client, str(work)) if c.status == "running"]:
            assert proc.poll() is None, f"the build ended before any step ran: {proc.communicate()}"
            assert time.monotonic() < deadline, "no step container started"
            time.sleep(0.05)
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=120)
        left = [c.name for c in _step_containers(docker_client, str(work))]
        assert left == [], f"containers left behind: {left}"
        assert proc.returncode == 128 + signum, err
        assert f"interrupted by {signal.Signals(signum).name}" in err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for container in _step_containers(docker_client, str(work)):
            container.remove(force=True)
