"""The real-size benchmark's report (bench/real_size.py): every container's and node's
figures, each bundle's smoke and parity, and the last line, `overhead=R factory=F bare=B
gates=G peak-gate=P`."""

from __future__ import annotations

from pathlib import Path

from real_size_meter import ContainerMeter
from real_size_shared import MODEL

from factory.cells.report import read_gates


def mib(size: int) -> str:
    return f"{size / (1 << 20):.0f} MiB" if size else "n/a"


def report(
    nodes: dict[str, float],
    bare: dict[str, float],
    meter: ContainerMeter,
    targets: list[str],
    quants: list[str],
    work: Path,
) -> None:
    print(f"{'step':<64} {'seconds':>8} {'peak':>10}")
    for name, usage in sorted(meter.usage.items()):
        print(f"{name:<64} {usage.seconds:8.1f} {mib(usage.peak):>10}")
    for name, seconds in sorted(nodes.items()):
        print(f"{'node ' + name:<64} {seconds:8.1f}")
    # The tokenizer node counts on the factory's side: the bare flow has no such step.
    ours = sum(s for n, s in nodes.items() if n.split(":")[0] in ("fetch", "tokenizer", "convert", "compile"))
    theirs = sum(bare.values())
    gates = sum(s for n, s in nodes.items() if n.startswith("bundle:"))
    # The gates' containers (smoke, library, parity bundle and reference) are the rest.
    steps = ("convert:", "compile:", "bare ")
    gate_peak = max((u.peak for n, u in meter.usage.items() if not n.startswith(steps)), default=0)
    print(f"factory fetch+tokenizer+convert+compile {ours:.1f} s, bare {theirs:.1f} s (fetch {bare['fetch']:.1f} s)")
    for target in targets:
        for quant in quants:
            gate = read_gates(work / "dist" / f"{MODEL}-{quant}-{target}")
            if gate is None:
                print(f"{quant} {target}: no bundle (a gate refused it, see above)")
                continue
            smoke, parity = gate.get("smoke", {}), gate.get("parity", {})
            figures = (
                f"decode {smoke['decode_tok_s']:.2f} tok/s, prefill {smoke['prefill_tok_s']:.2f} tok/s"
                if smoke.get("status") == "passed"
                else f"smoke {smoke.get('status')} ({smoke.get('reason', '')})"
            )
            kl = (
                f"parity KL mean {parity['kl_mean']:.2e} top-1 {parity['top1']:.2f}"
                if "kl_mean" in parity
                else (f"parity {parity.get('status')}")
            )
            print(f"{quant} {target}: {figures}; {kl}")
    print(
        f"overhead={ours / theirs:.2f} factory={ours:.1f} bare={theirs:.1f} "
        f"gates={gates:.1f} peak-gate={gate_peak >> 20}"
    )
