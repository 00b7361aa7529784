"""The bounds an exact fixture is held to: every quantized matrix is made of 4-bit groups,
so q4 quantization keeps it exactly, and the bundle must reproduce the float32 reference
to float32 rounding (q4f32_1, q0f32) or to float16 rounding (q4f16_1). Shared by the mlc
tests, which build such bundles, and the recorded parity sweep's unit test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Exact:
    kl_mean: float
    kl_max: float
    top1: float
    """Top-1 agreement: over every position (near-ties included) where `every_position`,
    else over the decisive positions the gate counts (factory/cells/parity.py, tie_margin)."""
    every_position: bool
    why: str


# Bounds for the exact fixtures (every quantized matrix is made of 4-bit groups, so q4
# quantization keeps it exactly), token by token and through prefill.
EXACT = {
    # Float32 arithmetic in another order. Measured here with lossless params: KL mean
    # 1.1e-11 (RWKV-5) and 1.6e-11 (RWKV-6), max |dlogit| 4e-5; with float32 params stored
    # as bf16 it was 6e-4 to 1.6e-3. The reference's top token at every position.
    "q4f32_1": Exact(kl_mean=1e-8, kl_max=1e-7, top1=1.0, every_position=True, why="float32 rounding only"),
    # Float16 activations and scales. Measured over the recorded sweep (tests/golden/
    # parity_sweep.json: RWKV-5/6/7 x 4 seeds, token and prefill paths): KL mean 2.5e-4 to
    # 1.9e-3, KL max up to 1.3e-2 (RWKV-6 seed 31), top-1 0.78 to 1.0 over all positions
    # (RWKV-7 seed 23 flips two near-tied top tokens of 9 after its prefill). One seed each
    # had measured 1.3e-3 at most, and a bound of 1e-2 over it fell to the sweep; these leave
    # about 2.5x on the sweep's worst. Where the reference is decisive (a margin over twice
    # what f16 rounding moves a logit) a flip cannot come from rounding: every such position
    # must agree.
    "q4f16_1": Exact(kl_mean=5e-3, kl_max=3e-2, top1=1.0, every_position=False, why="float16 activations round"),
}


def exact_problems(path: dict[str, Any], quant: str) -> list[str]:
    """What keeps one path's parity figures (a gate's details or its prefill part) from the
    exact bounds of `quant`; top-1 1.0 means every position, near-ties included."""
    exact = EXACT[quant]
    problems = []
    if not path["kl_mean"] <= exact.kl_mean:
        problems.append(f"KL mean {path['kl_mean']:.3g} > {exact.kl_mean:g}")
    if not path["kl_max"] <= exact.kl_max:
        problems.append(f"KL max {path['kl_max']:.3g} > {exact.kl_max:g}")
    top1 = path["top1"] if exact.every_position else path["top1_decisive"]
    if not top1 >= exact.top1:
        problems.append(
            f"top-1 {top1:.3f} < {exact.top1:g} ({'every' if exact.every_position else 'decisive'} positions)"
        )
    if exact.every_position and path["first_divergence"] is not None:
        problems.append(f"diverges at {path['first_divergence']}")
    return problems
