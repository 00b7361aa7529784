"""Scripts that run INSIDE a toolchain (its own TVM, torch, mlc-llm), not in the factory.

The build mounts this folder as a unit at /factory in a container (or runs it from the
metal-runner prefix). Each script is self-contained: it imports nothing from the factory,
since the toolchain has no factory installed. The factory may import their pure helpers.
"""

from pathlib import Path

# The folder a build mounts at /factory inside a toolchain.
SCRIPTS_DIR = Path(__file__).resolve().parent
