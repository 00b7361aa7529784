"""The parity gate's arithmetic: figures, bounds, and the prefill path's own verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.cells.parity import compare, threshold_for, verdict


def _logits(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 50)).astype("float32") * 4


def test_identical_logits_agree_exactly() -> None:
    ref = _logits(6)
    figures = compare(ref, ref.copy(), kl_bound=1e-3)
    assert figures.kl_mean == 0.0 and figures.kl_max == 0.0 and figures.top1 == 1.0
    assert figures.first_divergence is None and figures.positions == 6


def test_a_changed_top_token_is_the_first_divergence_counted_from_the_first_position() -> None:
    ref = _logits(5)
    got = ref.copy()
    got[3] = -got[3]  # another top token at row 3
    figures = compare(ref, got, kl_bound=10.0, first_position=15)
    assert figures.first_divergence == 18 and figures.first_position == 15
    assert figures.top1 == 0.8 and figures.kl_max > 0


def test_the_prefill_path_is_judged_on_its_own() -> None:
    ref = _logits(24)
    _, bound = threshold_for("q4f32_1")
    token_by_token = compare(ref, ref, kl_bound=bound.kl_max)
    drifted = ref[15:].copy()
    drifted[0] = drifted[0][::-1]  # the distribution right after the prefill is wrong
    after_prefill = compare(ref[15:], drifted, kl_bound=bound.kl_max, first_position=15)
    passed, problems, details = verdict(token_by_token, "q4f32_1", after_prefill)
    assert not passed
    assert all(p.startswith("after a prefill of 16 tokens: ") for p in problems)
    assert "after a prefill of 16 tokens: first diverging position: 15 of 24" in problems
    assert details["kl_mean"] == 0.0 and details["prefill"]["first_position"] == 15
    assert details["threshold"]["class"] == "q4"


def test_both_paths_within_bounds_pass() -> None:
    ref = _logits(24)
    passed, problems, details = verdict(
        compare(ref, ref, kl_bound=1.0), "q0f32", compare(ref[15:], ref[15:], kl_bound=1.0, first_position=15)
    )
    assert passed and problems == [] and details["threshold"]["class"] == "f32"


def test_the_summary_names_both_paths() -> None:
    from factory.cells.gates import GateResult
    from factory.cells.gating import gate_summary

    ref = _logits(24)
    _, _, details = verdict(
        compare(ref, ref, kl_bound=1.0), "q4f32_1", compare(ref[15:], ref[15:], kl_bound=1.0, first_position=15)
    )
    line = gate_summary(GateResult("parity", "passed", details=details))
    assert line == "parity passed (KL mean 0, top-1 1.00; after prefill 0)"


def test_the_parameter_count_comes_from_the_safetensors_headers(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from factory.cells.gating import checkpoint_parameters
    from factory.checkpoints.example import TINY, write_checkpoint

    files = write_checkpoint(tmp_path, 6, TINY)
    tensors = load_file(str(next(f for f in files if f.suffix == ".safetensors")))
    total, embedding = checkpoint_parameters(tmp_path)
    assert total == sum(t.size for t in tensors.values())
    assert embedding == tensors["rwkv.embeddings.weight"].size == 65536 * TINY.hidden


def test_the_gate_says_when_the_host_cannot_hold_the_reference(tmp_path: Path) -> None:
    from factory.cells.gating import checkpoint_parameters, reference_shortfall
    from factory.cells.parity import reference_memory
    from factory.checkpoints.example import TINY, write_checkpoint

    write_checkpoint(tmp_path, 6, TINY)
    need = reference_memory(*checkpoint_parameters(tmp_path))
    assert reference_shortfall(tmp_path, need) is None
    reason = reference_shortfall(tmp_path, need - 1)
    assert reason is not None and "float32 reference needs about" in reason and "more memory" in reason


def test_a_1b6_reference_fits_a_24_gib_runner_and_a_7b_one_does_not() -> None:
    from factory.cells.parity import reference_memory

    runner = 24 << 30
    # RWKV-6 World 1B6 (1.60e9 weights, 65536 x 2048 embedding) and 7B (7.64e9, 65536 x 4096).
    assert reference_memory(1_600_000_000, 65536 * 2048) < runner / 2
    assert reference_memory(7_640_000_000, 65536 * 4096) > runner


def _tied(rows: int, margin: float) -> np.ndarray:
    """Rows whose top token (index 0) leads index 1 by exactly `margin` logits."""
    ref = np.zeros((rows, 50), dtype="float32")
    ref[:, 0], ref[:, 1] = 5.0, 5.0 - margin
    return ref


def test_a_flipped_near_tie_is_reported_but_does_not_refuse() -> None:
    """The RWKV-7 seed-23 case: two flips where the reference's margins were 0.061 and 0.012
    logits, moved by f16 rounding; with 9 prefill positions they cost 0.222 of top-1."""
    _, bound = threshold_for("q4f16_1")
    ref = _tied(9, 5.0)
    ref[3, 1], ref[6, 1] = 5.0 - 0.061, 5.0 - 0.012
    got = ref.copy()
    got[3, [0, 1]] = got[3, [1, 0]]
    got[6, [0, 1]] = got[6, [1, 0]]
    figures = compare(ref, got, kl_bound=bound.kl_max, tie_margin=bound.tie_margin, first_position=15)
    assert figures.top1 < bound.top1  # what the old gate judged
    assert figures.top1_decisive == 1.0 and figures.decisive == 7 and figures.flips == ()
    assert [(t["position"], t["agrees"]) for t in figures.near_ties] == [(18, 0.0), (21, 0.0)]
    assert figures.first_divergence is None
    passed, problems, details = verdict(figures, "q4f16_1")
    assert passed and problems == [], problems
    from factory.cells.gates import GateResult
    from factory.cells.gating import gate_summary

    line = gate_summary(GateResult("parity", "passed", details=details))
    assert line.endswith("; 2 near-ties flipped, not counted)"), line


def test_a_flip_where_the_reference_is_decisive_refuses_and_names_what_it_saw() -> None:
    _, bound = threshold_for("q4f16_1")
    ref = _tied(9, 3.0)
    ref[5, 1] = 5.0 - 0.05  # one near-tie, kept
    got = ref.copy()
    for row in (1, 2, 5):
        got[row, [0, 1]] = got[row, [1, 0]]
    figures = compare(ref, got, kl_bound=bound.kl_max, tie_margin=bound.tie_margin, first_position=15)
    assert figures.decisive == 8 and figures.top1_decisive == 0.75
    assert [f["position"] for f in figures.flips] == [16, 17] and figures.first_divergence == 16
    passed, problems, _ = verdict(figures, "q4f16_1")
    assert not passed
    top1 = next(p for p in problems if p.startswith("top-1"))
    assert "top-1 agreement 0.750 < 0.8 over the 8 positions where the reference leads by more than" in top1
    assert "another top token at 16 (margin 3, KL " in top1 and "17 (margin 3, KL " in top1
    assert f"bundle KL mean {figures.kl_mean:.3g}" in top1
    assert f"not counted: 1 near-ties (margin <= {bound.tie_margin:g}), 1 flipped" in problems


def test_every_float32_position_is_decisive() -> None:
    """fp32 rounding moves a logit by 1e-4 at most: a flip at any margin is a bug."""
    _, bound = threshold_for("q0f32")
    assert bound.tie_margin == 0.0 and bound.top1 == 1.0
    ref = _tied(4, 1e-3)
    got = ref.copy()
    got[2, [0, 1]] = got[2, [1, 0]]
    figures = compare(ref, got, kl_bound=bound.kl_max, tie_margin=bound.tie_margin)
    assert figures.decisive == 4 and figures.near_ties == ()
    passed, problems, _ = verdict(figures, "q0f32")
    assert not passed and any("another top token at 2 (margin 0.001" in p for p in problems)


def test_recorded_positions_give_the_figures_of_the_full_rows() -> None:
    """The sweep keeps per-position figures, not 65,536 logits a row: the gate's figures
    computed from them are the full rows' figures."""
    from factory.cells.parity import Position, positions, summarize

    ref, got = _logits(24, 1), _logits(24, 2)
    rows = [Position.from_row(p.as_row()) for p in positions(ref, got)]
    assert summarize(rows, kl_bound=0.5, tie_margin=0.3, first_position=3) == compare(
        ref, got, kl_bound=0.5, tie_margin=0.3, first_position=3
    )
