"""Benchmark (not a test): how long a second `factory build` of a fully built matrix
takes, next to `factory plan` of the same matrix in the same run.

    .venv/bin/python bench/scale.py [--cells 100] [--repeat 5] [--jobs 4]

It starts a local Hugging Face hub (olah) with a tiny RWKV-4 World checkpoint, builds
the conformance toolchain image (offline, from the tests' wheelhouse) and builds a
matrix of --cells cells once (one model, two quantizations, CUDA targets; needs a
Docker engine, no GPU). Then it times, --repeat times each and alternating, a second
`factory build` (every node is cached: no container may start, which is checked
through the engine's events) and `factory plan`. Both are whole CLI runs, process
start included. It prints every run, the medians, and as its last line exactly:

    second-build/plan=R cells=N second-build-s=S plan-s=P first-build-s=F

R is median second-build time / median plan time: what checking a built matrix costs
on top of planning it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.docker import engine_or_skip, ensure_base_image  # noqa: E402
from tests.support.hub import running_hub  # noqa: E402
from tests.support.scale import ScaleProject, StepContainers, scale_project  # noqa: E402


def timed_run(project: ScaleProject, *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    done = project.run(*args)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"factory {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=100, help="cells in the matrix (default 100)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--jobs", type=int, default=4, help="factory build -j for the first build (default 4)")
    args = parser.parse_args()
    client = engine_or_skip()
    ensure_base_image(client)
    with tempfile.TemporaryDirectory(prefix="factory-scale-", dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        (work / "hub").mkdir()
        (work / "project").mkdir()
        with running_hub(work / "hub") as hub:
            project = scale_project(work / "project", hub, cells=args.cells)
            build = ("build", "-m", str(project.manifest), "--work", "work", "--out", "dist", "-j", str(args.jobs))
            first, _ = timed_run(project, *build)
            print(f"matrix: {project.cells} cells; first build {first:.1f} s")
            builds: list[float] = []
            plans: list[float] = []
            for attempt in range(args.repeat):
                pair = [(builds, build), (plans, ("plan", "-m", str(project.manifest), "--locked"))]
                for times, command in pair if attempt % 2 == 0 else reversed(pair):
                    with StepContainers(client) as started:
                        seconds, stdout = timed_run(project, *command)
                    if started.steps:
                        raise SystemExit(f"factory {command[0]} started {len(started.steps)} container(s)")
                    if command[0] == "build" and f"built 0, cached {project.cells}," not in stdout:
                        raise SystemExit(f"the second build did not find every cell cached:\n{stdout}")
                    times.append(seconds)
    build_s, plan_s = statistics.median(builds), statistics.median(plans)
    print("second build runs: " + " ".join(f"{s:.2f}" for s in builds) + " s")
    print("        plan runs: " + " ".join(f"{s:.2f}" for s in plans) + " s")
    print(f"second build: {build_s:.2f} s (median); plan: {plan_s:.2f} s (median)")
    print(
        f"second-build/plan={build_s / plan_s:.2f} cells={project.cells} second-build-s={build_s:.2f} "
        f"plan-s={plan_s:.2f} first-build-s={first:.1f}"
    )


if __name__ == "__main__":
    main()
