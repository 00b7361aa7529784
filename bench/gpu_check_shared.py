"""What both sides of the GPU check (bench/gpu_check.py) agree on: the carried folder's file
names, the devices a check can select, and the refusal that ends a command with exit 2.
Carried to the GPU machine: the standard library only."""

from __future__ import annotations

CONFIG = "gpu-check.json"
RUNTIME_TAR = "tvm-runtime.tar.gz"
MIB = 1 << 20
LIMIT_MIB = 64
DEFAULT_DEVICES = ("cuda", "vulkan")
# Each device's runtime library beside libtvm_runtime.so.
SIDECARS = {"cpu": (), "cuda": ("tvm_runtime_cuda",), "vulkan": ("tvm_runtime_vulkan",)}


class Refusal(Exception):
    """An input or size problem: exit 2 with the message."""


def parse_devices(text: str) -> tuple[str, ...]:
    devices = tuple(d.strip() for d in text.split(",") if d.strip())
    wrong = [d for d in devices if d not in SIDECARS]
    if wrong or not devices:
        raise Refusal(f"--devices {text!r}: give some of {', '.join(SIDECARS)}")
    return devices
