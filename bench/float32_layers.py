"""Benchmark (not a test): what `overrides.float32_layers: 1` (the RWKV-4 World cards' "fp32
for the first layer") costs on the CPU, at a real model's shape.

    .venv/bin/python bench/float32_layers.py [--shape 1b5] [--quant q4f16_1]
        [--target cpu-x86_64-v3] [--work DIR]

One synthetic RWKV-4 World checkpoint of the shape asked (1b5: 24 layers, 2048 wide, FFN
8192, vocab 65536; fp16 safetensors of exact 4-bit groups, scaled by fan-in so float16 holds
every activation) is built twice by `factory build --smoke -j 1` from one manifest, as two
models on the same local folder: without the setting (the baseline) and with it. Both
bundles pass through every gate, so the figures are those of bundles that match the fp32
reference. Then `factory run -n 64` runs each bundle ROUNDS times, alternating the two so a
slower moment of the machine falls on both, and the medians of its prefill and decode tok/s
are compared as ratios (setting over baseline), beside the smoke gate's single figures. The
figures go to bench/results/float32-layers-SHAPE-DATE.json and .md.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from factory.checkpoints.groups import exact_groups  # noqa: E402
from tests.support.run import factory  # noqa: E402
from tests.support.wheel import ensure_wheel_wheelhouse, sources_env, wheel_manifest  # noqa: E402

# hidden, layers (FFN 4x hidden), from the published RWKV-4 World configs (../shared/FACTS.md).
SHAPES = {"tiny": (64, 2), "169m": (768, 12), "430m": (1024, 24), "1b5": (2048, 24), "3b": (2560, 32)}
VOCAB = 65536
TIMEOUT = 7200
ROUNDS = 5
RAN = re.compile(r"prefill ([0-9.]+) tok/s, decode ([0-9.]+) tok/s")


def checkpoint(folder: Path, hidden: int, layers: int) -> None:
    """config.json and model.safetensors (fp16): the tiny fixture's recipe
    (factory/checkpoints/rwkv4.py) at this shape, each matrix's scale divided by
    sqrt(fan-in / 64) so activations stay where the tiny model keeps them."""
    from safetensors.numpy import save_file

    if (folder / "model.safetensors").is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    ffn = 4 * hidden

    def matrix(rows: int, cols: int, std: float) -> np.ndarray:
        return exact_groups(rng, rows, cols, std * (64 / cols) ** 0.5).astype("float16")

    def vector(scale: float, shift: float = 0.0) -> np.ndarray:
        return (shift + rng.standard_normal(hidden) * scale).astype("float16")

    tensors: dict[str, np.ndarray] = {"rwkv.embeddings.weight": exact_groups(rng, VOCAB, hidden, 1.0).astype("float16")}
    for i in range(layers):
        block = f"rwkv.blocks.{i}"
        for norm in ("pre_ln", "ln1", "ln2") if i == 0 else ("ln1", "ln2"):
            tensors[f"{block}.{norm}.weight"] = vector(0.1, 1.0)
            tensors[f"{block}.{norm}.bias"] = vector(0.1)
        att, mlp = f"{block}.attention", f"{block}.feed_forward"
        tensors[f"{att}.time_decay"] = vector(0.7, -0.8)
        tensors[f"{att}.time_first"] = vector(0.5)
        for name in ("key", "value", "receptance"):
            tensors[f"{att}.time_mix_{name}"] = rng.uniform(0, 1, (1, 1, hidden)).astype("float16")
        for name in ("key", "value", "receptance", "output"):
            tensors[f"{att}.{name}.weight"] = matrix(hidden, hidden, 0.2)
        for name in ("key", "receptance"):
            tensors[f"{mlp}.time_mix_{name}"] = rng.uniform(0, 1, (1, 1, hidden)).astype("float16")
        tensors[f"{mlp}.key.weight"] = matrix(ffn, hidden, 0.2)
        tensors[f"{mlp}.receptance.weight"] = matrix(hidden, hidden, 0.2)
        tensors[f"{mlp}.value.weight"] = matrix(hidden, ffn, 0.1)
    tensors["rwkv.ln_out.weight"] = vector(0.1, 1.0)
    tensors["rwkv.ln_out.bias"] = vector(0.1)
    tensors["head.weight"] = matrix(VOCAB, hidden, 0.5)
    config = {
        "architectures": ["RwkvForCausalLM"], "model_type": "rwkv", "vocab_size": VOCAB, "context_length": 1024,
        "hidden_size": hidden, "num_hidden_layers": layers, "attention_hidden_size": hidden,
        "intermediate_size": ffn, "layer_norm_epsilon": 1e-5, "rescale_every": 6, "bos_token_id": 0,
        "eos_token_id": 0, "tie_word_embeddings": False, "use_cache": True,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(folder / "model.safetensors.part"))
    (folder / "model.safetensors.part").rename(folder / "model.safetensors")


def figures(bundle: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "factory-bundle.json").read_text())
    smoke, parity = manifest["gates"]["smoke"], manifest["gates"]["parity"]
    return {
        "prefill_tok_s": smoke["prefill_tok_s"], "decode_tok_s": smoke["decode_tok_s"],
        "parity": parity["status"], "kl_mean": parity["kl_mean"], "kl_max": parity["kl_max"],
        "top1": parity["top1"], "device": smoke.get("device", ""),
    }  # fmt: skip


def timed_runs(work: Path, bundles: dict[str, Path], tokens: int) -> dict[str, dict[str, float]]:
    """Median prefill and decode tok/s of `factory run` over ROUNDS alternating runs."""
    seen: dict[str, list[tuple[float, float]]] = {label: [] for label in bundles}
    for _ in range(ROUNDS):
        for label, bundle in bundles.items():
            done = factory("run", str(bundle), "-n", str(tokens), cwd=work, timeout=TIMEOUT)
            found = RAN.search(done.stdout)
            if done.returncode != 0 or not found:
                raise SystemExit(
                    f"factory run {bundle}: exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
                )
            seen[label].append((float(found[1]), float(found[2])))
    return {
        label: {
            "prefill_tok_s": statistics.median(p for p, _ in runs),
            "decode_tok_s": statistics.median(d for _, d in runs),
        }
        for label, runs in seen.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="1b5")
    parser.add_argument("--quant", default="q4f16_1")
    parser.add_argument("--target", default="cpu-x86_64-v3")
    parser.add_argument("--tokens", type=int, default=64, help="tokens each timed run decodes")
    parser.add_argument("--work", default=str(REPO / ".cache" / "bench-float32-layers"))
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    hidden, layers = SHAPES[args.shape]
    source = work / "models" / f"rwkv-4-world-{args.shape}"
    since = time.time()
    checkpoint(source, hidden, layers)
    print(f"checkpoint {source} ({time.time() - since:.0f} s)", flush=True)

    base, kept = f"rwkv-4-world-{args.shape}-fp16", f"rwkv-4-world-{args.shape}-float32-layer"
    models = [
        {"name": base, "local": {"path": str(source)}, "type": "rwkv4-world"},
        {"name": kept, "local": {"path": str(source)}, "type": "rwkv4-world", "overrides": {"float32_layers": 1}},
    ]
    manifest = work / "float32-layers.yaml"
    data = wheel_manifest(models, [args.quant], [args.target], name="float32-layers")
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    for argv in (
        ("lock", "-m", str(manifest), "--local-images"),
        ("images", "build", "-m", str(manifest), "--wheelhouse", str(ensure_wheel_wheelhouse()), "--offline",
         "--mlc-llm-source", sources_env()["FACTORY_MLC_LLM_SOURCE"]),
        ("build", "-m", str(manifest), "--work", "work", "--out", "dist", "-j", "1", "--smoke"),
    ):  # fmt: skip
        since = time.time()
        done = factory(*argv, env=sources_env(), cwd=work, timeout=TIMEOUT)
        print(f"factory {argv[0]} ({time.time() - since:.0f} s) exit {done.returncode}", flush=True)
        if done.returncode != 0:
            raise SystemExit(done.stdout[-3000:] + done.stderr[-6000:])

    dist = work / "dist"
    bundles = {
        "baseline": dist / f"{base}-{args.quant}-{args.target}",
        "float32_layers_1": dist / f"{kept}-{args.quant}-{args.target}",
    }
    gates = {label: figures(bundle) for label, bundle in bundles.items()}
    runs = timed_runs(work, bundles, args.tokens)
    ratios = {k: runs["float32_layers_1"][k] / runs["baseline"][k] for k in ("prefill_tok_s", "decode_tok_s")}
    day = time.strftime("%Y-%m-%d")
    result = {
        "shape": args.shape, "hidden": hidden, "layers": layers, "quant": args.quant, "target": args.target,
        "date": day, "rounds": ROUNDS, "tokens": args.tokens, "runs": runs, "gates": gates, "ratios": ratios,
    }  # fmt: skip
    out = REPO / "bench" / "results" / f"float32-layers-{args.shape}-{day}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        f"| {label} | {runs[key]['prefill_tok_s']:.2f} | {runs[key]['decode_tok_s']:.2f} | "
        f"{gates[key]['prefill_tok_s']:.2f} / {gates[key]['decode_tok_s']:.2f} | "
        f"{gates[key]['parity']} (KL mean {gates[key]['kl_mean']:.2g}, top-1 {gates[key]['top1']:.2f}) |"
        for label, key in (("fp16 (baseline)", "baseline"), ("float32_layers: 1", "float32_layers_1"))
    ]
    out.with_suffix(".md").write_text(
        f"# RWKV-4 World {args.shape} shape, {args.quant} on {args.target}: the first layer in float32\n\n"
        f"`bench/float32_layers.py --shape {args.shape}`, {day}, on {gates['baseline']['device'] or 'this CPU'}: "
        f"medians of {ROUNDS} alternating `factory run -n {args.tokens}` runs each; "
        "the smoke gate's one run beside.\n\n"
        "| build | prefill tok/s | decode tok/s | smoke gate prefill / decode | parity |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        f"ratio (float32_layers 1 / baseline): prefill {ratios['prefill_tok_s']:.3f}, "
        f"decode {ratios['decode_tok_s']:.3f}\n"
    )
    print(f"float32_layers=1 prefill_ratio={ratios['prefill_tok_s']:.3f} decode_ratio={ratios['decode_tok_s']:.3f}")


if __name__ == "__main__":
    main()
