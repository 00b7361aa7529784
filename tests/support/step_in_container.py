"""Run one long step through the ContainerRunner in its own process, so a test can
interrupt it. Prints `run-id <id>` first, then the step's output.

    python -m tests.support.step_in_container IMAGE
"""

from __future__ import annotations

import sys

from factory.runners import Step
from factory.runners.container import ContainerRunner
from factory.runners.engine import docker_client


def main() -> int:
    runner = ContainerRunner(docker_client())
    print(f"run-id {runner.run_id}", flush=True)
    step = Step(name="sleeper", image=sys.argv[1], argv=("bash", "-c", "echo started; sleep 300"))
    result = runner.run(step, lambda line: print(line, flush=True))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
