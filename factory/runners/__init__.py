"""Where build steps run: a container (Linux) or the host's metal-runner prefix (macOS),
and the one connection to the Docker engine (`engine`).

May import: the shared modules only.
"""

from factory.runners.base import ENV_ALLOW_LIST, Cancellation, Mount, Runner, Step, StepResult, step_environment

__all__ = ["ENV_ALLOW_LIST", "Cancellation", "Mount", "Runner", "Step", "StepResult", "step_environment"]
