"""A GitHub Actions `run:` step, run here as a hosted runner would run it: the script from
the workflow file itself, given to the shell GitHub picks (`shell: bash` gets pipefail), in
a checkout, with the workflow's, job's and step's `env:` resolved the way a run resolves
them. Only single expressions (`${{ matrix.cells }}`) are resolved, from the values the
caller gives per context; an expression nobody gave a value for is an error, so a secret or
input the workflow gains later fails the rehearsal instead of passing as empty."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
EXPRESSION = re.compile(r"^\$\{\{\s*(\w+)\.(\w+)\s*\}\}$")


@dataclass(frozen=True)
class Step:
    workflow: str
    job: str
    name: str
    script: str
    env: tuple[tuple[str, str], ...]
    """Every env entry that applies to the step (workflow, then job, then step), unresolved."""


@dataclass(frozen=True)
class StepRun:
    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    """What the step wrote to $GITHUB_OUTPUT."""
    summary: str


def workflow_step(workflow: str, job: str, name: str) -> Step:
    """The one run step of `job` in `workflow` whose name starts with `name`."""
    data: dict[Any, Any] = yaml.safe_load((WORKFLOWS / workflow).read_text())
    steps = data["jobs"][job]["steps"]
    found = [s for s in steps if "run" in s and str(s.get("name", "")).startswith(name)]
    assert len(found) == 1, f"{workflow}: job {job} has {len(found)} run steps named {name!r}..."
    env: dict[str, str] = {}
    for level in (data.get("env", {}), data["jobs"][job].get("env", {}), found[0].get("env", {})):
        env.update({str(k): str(v) for k, v in level.items()})
    shell = found[0].get("shell") or data.get("defaults", {}).get("run", {}).get("shell")
    assert shell == "bash", f"{workflow}: {name}: expected the named bash shell, got {shell!r}"
    return Step(workflow, job, name, str(found[0]["run"]), tuple(env.items()))


def resolve_env(step: Step, contexts: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The step's environment with each `${{ context.key }}` replaced from `contexts`. An
    unset secret or variable is the empty string on GitHub; here the caller says so by
    giving "", so every name the step reads is a deliberate choice."""
    resolved: dict[str, str] = {}
    for name, value in step.env:
        if "${{" not in value:
            resolved[name] = value
            continue
        match = EXPRESSION.match(value.strip())
        assert match, f"{step.workflow}: {step.name}: {name}: an expression this runner cannot evaluate: {value}"
        context, key = match.groups()
        assert key in contexts.get(context, {}), f"{step.workflow}: {step.name}: no value given for {context}.{key}"
        resolved[name] = contexts[context][key]
    return resolved


def run_step(
    step: Step,
    checkout: Path,
    contexts: Mapping[str, Mapping[str, str]],
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 3600,
) -> StepRun:
    """Run the step's script in `checkout` with `bash --noprofile --norc -eo pipefail`, as
    GitHub runs `shell: bash`, with `factory` (this interpreter's) first on PATH."""
    files = checkout / ".github-step"
    files.mkdir(exist_ok=True)
    output, summary, github_env = files / "output", files / "summary.md", files / "env"
    for path in (output, summary, github_env):
        path.write_text("")
    env = {
        **os.environ,
        **(extra_env or {}),
        **resolve_env(step, contexts),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(output),
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_ENV": str(github_env),
        "GITHUB_REPOSITORY_OWNER": "factory-rehearsal",
        "CI": "true",
    }
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.script],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
    return StepRun(done.returncode, done.stdout, done.stderr, outputs, summary.read_text())
