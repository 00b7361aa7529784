"""A matrix of many cheap cells for the scale check: one tiny RWKV-4 World checkpoint,
two quantizations and as many CUDA targets as asked for, built with the conformance
toolchain (no GPU is needed: CUDA targets are compiled, never run). Shared by
tests/integration/test_build_scale.py and bench/scale.py."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.docker import conformance_context, ensure_wheelhouse, toolchain_manifest
from tests.support.hub import LocalHub
from tests.support.run import factory
from tests.support.tiny_rwkv import tiny_rwkv_files

QUANTS = ("q4f16_1", "q4f32_1")
_ARCHS = ("sm_70", "sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
_THREADS = (1024, 768, 512, 384, 256, 192, 128, 96, 64)
REPO_ID = "factory-tests/rwkv-4-world-tiny"
MODEL = "rwkv-4-world-scale"
"""A model name no other test uses: every step container's label names it, so the steps of
this matrix can be told from other users' containers on a shared engine."""


def scale_targets(count: int) -> dict[str, Any]:
    """`count` distinct CUDA targets (arch x thread limit), so every cell has its own build key."""
    combos = list(itertools.product(_ARCHS, _THREADS))
    if count > len(combos):
        raise ValueError(f"at most {len(combos)} targets")
    return {
        f"cuda-{arch.replace('_', '')}-t{threads}": {
            "device": {"kind": "cuda", "arch": arch, "max_threads_per_block": threads},
            "runner": "container",
            "os": "linux",
        }
        for arch, threads in combos[:count]
    }


@dataclass(frozen=True)
class ScaleProject:
    root: Path
    manifest: Path
    env: Mapping[str, str]
    cells: int

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return factory(*args, env=dict(self.env), cwd=self.root)


def scale_project(root: Path, hub: LocalHub, *, cells: int) -> ScaleProject:
    """Manifest, lock and toolchain image for a matrix of at least `cells` cells. The
    conformance context carries no salt, so an unchanged stand-in reuses its image."""
    commit = hub.commit(REPO_ID, tiny_rwkv_files())
    conformance_context(root / "conformance")
    data = toolchain_manifest(root, flow="legacy")
    data["models"][0].update(name=MODEL, hf={"repo": REPO_ID, "revision": commit})
    data["quantizations"] = list(QUANTS)
    targets = -(-cells // len(QUANTS))
    data["targets"] = scale_targets(targets)
    manifest = root / "scale.yaml"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    project = ScaleProject(root, manifest, hub.env(), targets * len(QUANTS))
    for args in (
        ("lock", "-m", str(manifest), "--local-images"),
        ("images", "build", "-m", str(manifest), "--wheelhouse", str(ensure_wheelhouse()), "--offline"),
    ):
        done = project.run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"factory {args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return project


class StepContainers:
    """Collects the factory step label of every container of this matrix (its model) the
    engine creates while the block runs. It follows the engine's live event stream: the engine keeps only a short
    history of events, which a build of a hundred cells (and other users' containers) overruns."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.steps: list[str] = []
        self._stream: Any = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> StepContainers:
        self._stream = self.client.events(decode=True, filters={"type": "container", "event": "create"})

        def read() -> None:
            try:
                for event in self._stream:
                    step = event.get("Actor", {}).get("Attributes", {}).get("org.factory.step", "")
                    if MODEL in step:
                        self.steps.append(step)
            except Exception:  # closing the stream ends the loop with an error
                return

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        time.sleep(0.5)  # let the subscription reach the engine before the block starts anything
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(1)  # events of the block's last moments
        self._stream.close()
        if self._reader is not None:
            self._reader.join(timeout=10)
