"""The Runner interface and the step description both implementations run."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Host variables a step may inherit. Everything else (HF_TOKEN, AWS_*, GITHUB_TOKEN,
# ...) stays behind: fetch and publish run in the factory itself, so no step needs them.
ENV_ALLOW_LIST = (
    "MLC_MULTI_ARCH",
    "TVM_NUM_THREADS",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "TZ",
    "LANG",
    "LC_ALL",
)


@dataclass(frozen=True, kw_only=True)
class Mount:
    source: Path
    target: str
    """Path inside the step's filesystem view (the container; on the host runner, equal to source)."""
    read_only: bool = True


@dataclass(frozen=True, kw_only=True)
class Step:
    name: str
    argv: tuple[str, ...]
    image: str = ""
    """Container image reference; ignored by the host runner."""
    mounts: tuple[Mount, ...] = ()
    workdir: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    """Values the factory sets for this step (never secrets)."""
    needs_gpu: bool = False
    network: bool = False
    """Compile steps run with no network; only steps that must fetch set this."""


@dataclass(frozen=True)
class StepResult:
    exit_code: int
    tail: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class Runner(Protocol):
    def run(self, step: Step, on_line: Callable[[str], None]) -> StepResult: ...


def step_environment(step: Step, host_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment a step sees: allow-listed host variables, then the step's own."""
    source = os.environ if host_env is None else host_env
    env = {name: source[name] for name in ENV_ALLOW_LIST if name in source}
    env.update(step.env)
    return env
