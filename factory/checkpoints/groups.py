"""Matrices that q4 group quantization represents exactly, for the synthetic checkpoints."""

from __future__ import annotations

import numpy as np


def exact_groups(rng: np.random.Generator, rows: int, cols: int, std: float) -> np.ndarray:
    """A (rows, cols) float32 matrix of groups of 32 along a row: integers -7..7 times a
    power-of-two scale near `std`, each group reaching 7, so a 4-bit group quantizer with
    per-group scales keeps every value and a parity check sees the compiled code, not the
    rounding."""
    ints = rng.integers(-7, 8, size=(rows, cols // 32, 32))
    peak = rng.integers(0, 32, size=(rows, cols // 32))
    np.put_along_axis(ints, peak[..., None], rng.choice([-7, 7], size=(rows, cols // 32, 1)), axis=2)
    scale = np.float32(2.0 ** np.round(np.log2(std / 4.3)))
    return (ints.reshape(rows, cols) * scale).astype("float32")
