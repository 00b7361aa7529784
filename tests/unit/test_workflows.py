"""The GitHub workflows, checked offline: schema, actionlint (with shellcheck on
run scripts), zizmor, and the plan's matrix keys against what release.yml reads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from factory.manifest.load import load_manifest
from factory.manifest.lock import Lock
from factory.plan.graph import plan
from factory.plan.views import github_matrix

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}  # actionlint finds shellcheck here
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO, env=env)


def test_there_are_ci_lock_and_release_workflows() -> None:
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "lock.yml", "release.yml"}


def test_workflows_match_the_github_workflow_schema() -> None:
    done = _run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_is_clean() -> None:
    done = _run(str(BIN / "actionlint"), *map(str, WORKFLOWS))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("persona", ["regular", "auditor"])
def test_zizmor_offline_has_no_unexplained_finding(persona: str) -> None:
    done = _run(str(BIN / "zizmor"), "--offline", f"--persona={persona}", ".github/workflows/")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No findings to report" in done.stdout + done.stderr
    # The one accepted finding carries its reason right above it.
    text = (REPO / ".github" / "workflows" / "release.yml").read_text()
    ignores = [i for i, line in enumerate(text.splitlines()) if "zizmor: ignore[" in line]
    assert len(ignores) == 1
    assert "cache-poisoning finding is accepted" in "\n".join(text.splitlines()[ignores[0] - 5 : ignores[0]])


def _workflow(name: str) -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    return data


def _release() -> dict[Any, Any]:
    return _workflow("release.yml")


def _triggers(workflow: dict[Any, Any]) -> dict[str, Any]:
    triggers: dict[str, Any] = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    return triggers


def test_the_plan_matrix_feeds_the_build_job_one_to_one() -> None:
    graph = plan(load_manifest(REPO / "manifests" / "world.yaml"), Lock())
    include = github_matrix(graph)["include"]
    emitted = set().union(*(entry.keys() for entry in include))
    assert all(set(entry) == emitted for entry in include)
    jobs = _release()["jobs"]
    build = jobs["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    used = set(re.findall(r"matrix\.([a-z_]+)", yaml.safe_dump(build)))
    assert used == emitted, f"emitted but unused: {emitted - used}; used but not emitted: {used - emitted}"
    plan_step = next(s for s in jobs["plan"]["steps"] if s.get("id") == "plan")
    assert "--format github" in plan_step["run"] and "--locked" in plan_step["run"]
    # The image job's toolchain list is derived from the same output, by keys it has.
    assert '.runner == "container"' in plan_step["run"] and ".toolchain" in plan_step["run"]


def test_release_workflow_shape() -> None:
    workflow = _release()
    triggers = workflow[True] if True in workflow else workflow["on"]  # YAML 1.1 reads `on` as True
    assert triggers["push"]["tags"] == ["v*"]
    assert "only" in triggers["workflow_dispatch"]["inputs"]
    assert workflow["concurrency"] == {"group": "release", "cancel-in-progress": False}
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        assert "timeout-minutes" in job, name
        assert "permissions" in job, name
        for step in job["steps"]:
            uses = step.get("uses")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", uses), f"{name}: {uses} is not pinned by SHA"
    release_steps = yaml.safe_dump(workflow["jobs"]["release"])
    assert "factory release" in release_steps and "attest-build-provenance" in release_steps
    assert "gh release create" in release_steps and "GITHUB_STEP_SUMMARY" in release_steps
    # The index and release manifest are signed with the key of the protected environment.
    release_job = workflow["jobs"]["release"]
    assert release_job["environment"] == "release"
    signing = [s for s in release_job["steps"] if "FACTORY_SIGNING_KEY" in s.get("env", {})]
    assert [s["env"]["FACTORY_SIGNING_KEY"] for s in signing] == ["${{ secrets.FACTORY_SIGNING_KEY }}"]
    assert "factory release" in signing[0]["run"] and "release/release.signed.json" in release_steps
    assert "--no-index" in yaml.safe_dump(workflow["jobs"]["build"])


def test_the_lock_workflow_resolves_on_a_schedule_and_by_hand_and_opens_a_pull_request() -> None:
    workflow = _workflow("lock.yml")
    triggers = _triggers(workflow)
    assert "workflow_dispatch" in triggers and triggers["schedule"][0]["cron"]
    assert workflow["permissions"] == {}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"].startswith("ubuntu-") and "timeout-minutes" in job
    assert job["permissions"] == {"contents": "write", "pull-requests": "write"}
    steps = yaml.safe_dump(job["steps"])
    assert 'factory lock --matrix "$MANIFEST" --upgrade' in steps
    assert "gh pr create" in steps and "git push" in steps
    assert workflow["env"]["MANIFEST"] == _release()["env"]["MANIFEST"]
    for step in job["steps"]:
        if step.get("uses"):
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def _lock_check_step() -> tuple[int, dict[str, Any]]:
    steps = _release()["jobs"]["plan"]["steps"]
    index, step = next((i, s) for i, s in enumerate(steps) if "--check" in s.get("run", ""))
    plan_index = next(i for i, s in enumerate(steps) if s.get("id") == "plan")
    assert index < plan_index
    return index, step


def _run_step(script: str, manifest: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "MANIFEST": str(manifest)}
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def test_the_release_plan_job_names_the_lock_workflow_when_the_lock_is_missing_or_incomplete(
    tmp_path: Path,
) -> None:
    _, step = _lock_check_step()
    data = yaml.safe_load((REPO / "manifests" / "world.yaml").read_text())
    data["root"] = str(REPO)
    manifest = tmp_path / "world.yaml"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))

    missing = _run_step(step["run"], manifest)
    assert missing.returncode != 0
    assert "::error" in missing.stdout and ".github/workflows/lock.yml" in missing.stdout
    assert "missing or incomplete" in missing.stdout

    loaded = load_manifest(manifest)
    models = loaded.manifest.models
    hf = {f"{m.hf.repo}@{m.hf.revision}": f"{i:040x}" for i, m in enumerate(models) if m.hf}
    images = {t.base_image: "sha256:" + "a" * 64 for t in loaded.manifest.toolchains.values()}
    lock = tmp_path / "world.lock"
    lock.write_text(json.dumps({"lock_version": 1, "hf": dict(list(hf.items())[1:]), "images": images}))
    incomplete = _run_step(step["run"], manifest)
    assert incomplete.returncode != 0 and ".github/workflows/lock.yml" in incomplete.stdout

    lock.write_text(json.dumps({"lock_version": 1, "hf": hf, "images": images}))
    complete = _run_step(step["run"], manifest)
    assert complete.returncode == 0, complete.stdout + complete.stderr
    assert "::error" not in complete.stdout


def _workflows() -> dict[str, dict[Any, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in WORKFLOWS}


def _shell_of(workflow: dict[Any, Any], job: dict[Any, Any], step: dict[Any, Any]) -> list[str]:
    """The command GitHub runs a Linux `run:` step with: a named `bash` gets pipefail,
    the unnamed default is plain `bash -e` (docs: "Using a specific shell")."""
    shell = (
        step.get("shell")
        or job.get("defaults", {}).get("run", {}).get("shell")
        or workflow.get("defaults", {}).get("run", {}).get("shell")
    )
    if shell == "bash":
        return ["bash", "--noprofile", "--norc", "-eo", "pipefail"]
    assert shell is None, f"unexpected shell {shell!r}"
    return ["bash", "-e"]


def test_every_run_step_fails_on_a_failed_pipeline() -> None:
    for name, workflow in _workflows().items():
        for job_name, job in workflow["jobs"].items():
            for step in job["steps"]:
                if "run" in step:
                    shell = _shell_of(workflow, job, step)
                    assert "pipefail" in shell, f"{name}: {job_name}: {step.get('name', step['run'][:40])}"


def test_a_failing_build_fails_the_release_build_step(tmp_path: Path) -> None:
    """Run the build step's script the way GitHub would, with a `factory` that fails:
    neither `| tee` nor the retry wrapper may turn that into success."""
    workflow = _release()
    job = workflow["jobs"]["build"]
    step = next(s for s in job["steps"] if "factory build" in s.get("run", ""))
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "factory").write_text("#!/bin/sh\necho 'build failed' >&2\nexit 4\n")
    (fake / "factory").chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    env = {
        "PATH": f"{fake}:{os.environ['PATH']}",
        "RETRY_PAUSE": "0",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        "GITHUB_REPOSITORY_OWNER": "Owner",
        "MANIFEST": "manifests/world.yaml",
        "CELLS": "m/q/t",
        "FACTORY_STORE": "s3://bucket/rwkv",
        "MODEL": "m",
        "FLOW": "current",
        "TARGET_OS": "linux",
        "TARGET_ARCH": "x86_64",
    }
    done = subprocess.run(
        [*_shell_of(workflow, job, step), str(script)], capture_output=True, text=True, cwd=REPO, env=env, check=False
    )
    assert done.returncode != 0, f"a failed build passed the step:\n{done.stdout}{done.stderr}"
    assert "failed 2 times (last exit 4)" in done.stderr


def test_retry_returns_the_last_exit_status_and_stops_at_the_first_success(tmp_path: Path) -> None:
    retry = REPO / ".github" / "scripts" / "retry.sh"
    env = {**os.environ, "RETRY_PAUSE": "0"}
    failing = subprocess.run(
        ["bash", str(retry), "3", "sh", "-c", "exit 7"], capture_output=True, text=True, env=env, check=False
    )
    assert failing.returncode == 7 and "failed 3 times (last exit 7)" in failing.stderr
    counter = tmp_path / "n"
    flaky = f"echo x >> {counter}; [ $(wc -l < {counter}) -ge 2 ]"
    passing = subprocess.run(
        ["bash", str(retry), "3", "sh", "-c", flaky], capture_output=True, text=True, env=env, check=False
    )
    assert passing.returncode == 0 and counter.read_text().count("x") == 2


@pytest.mark.parametrize(("job", "step_name"), [("plan", "factory plan"), ("release", "factory release (")])
def test_only_takes_several_globs_and_never_expands_them_against_files(
    tmp_path: Path, job: str, step_name: str
) -> None:
    """`only` (a dispatch input) holds cell globs separated by spaces; each becomes one
    --only, passed as written even where a `*` would match files in the checkout."""
    workflow = _release()
    step = next(s for s in workflow["jobs"][job]["steps"] if str(s.get("name", "")).startswith(step_name))
    fake = tmp_path / "bin"
    fake.mkdir()
    # Prints its arguments one per line (and a matrix line for the plan step's jq).
    (fake / "factory").write_text('#!/bin/sh\nfor a in "$@"; do echo "ARG $a" >&2; done\necho \'{"include": []}\'\n')
    (fake / "factory").chmod(0o755)
    (tmp_path / "rwkv-6-world-1b6").mkdir()  # what an unquoted `rwkv-*` would expand to
    (tmp_path / "release-notes.md").write_text("notes\n")  # what `factory release --notes` writes
    script = tmp_path / "step.sh"
    script.write_text(step["run"].replace("bash .github/scripts/retry.sh 3 ", ""))
    env = {
        "PATH": f"{fake}:{os.environ['PATH']}",
        "ONLY": "rwkv-*  rwkv-7-world-1b5/q4f32_1/cpu-*",
        "MANIFEST": "manifests/world.yaml",
        "FACTORY_STORE": "s3://bucket/rwkv",
        "FACTORY_SIGNING_KEY": "key",
        "GITHUB_OUTPUT": str(tmp_path / "output"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }
    done = subprocess.run(
        [*_shell_of(workflow, workflow["jobs"][job], step), str(script)],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    args = [line[4:] for line in done.stderr.splitlines() if line.startswith("ARG ")]
    only = [args[i + 1] for i, a in enumerate(args) if a == "--only"]
    assert only == ["rwkv-*", "rwkv-7-world-1b5/q4f32_1/cpu-*"], args

    env["ONLY"] = ""
    every = subprocess.run(
        [*_shell_of(workflow, workflow["jobs"][job], step), str(script)],
        capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
    )  # fmt: skip
    assert every.returncode == 0 and "ARG --only" not in every.stderr, every.stderr
