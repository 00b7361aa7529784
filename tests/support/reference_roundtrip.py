"""Runs INSIDE the wheel toolchain (torch + rwkv): checks the parity gate's own weight
conversion. A tiny RWKV-4, RWKV-5.2, RWKV-6 and RWKV-7 model is made in the layout the reference
package loads directly (the original `.pth` names), run by the reference as it is
(RWKV-7 in a child process: the package picks x070 at import, from RWKV_V7_ON);
then written in the Hugging Face layout (with a table of this file's own, not the
factory's) and run through factory/in_toolchain/reference_script.py. The logits must be equal.

    python reference_roundtrip.py FACTORY_DIR WORK_DIR
Prints `ROUNDTRIP {json}` with the largest difference per version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("RWKV_JIT_ON", "0")
os.environ.setdefault("RWKV_CUDA_ON", "0")

HIDDEN, HEAD, FFN, VOCAB, LAYERS = 64, 64, 224, 512, 2
TOKENS = [3, 17, 250, 9, 77, 400, 1, 33]
ATT_V5_V6 = ("key", "value", "receptance", "gate", "output")


def original_layout(version: int) -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(version)

    def rand(*shape: int, scale: float = 0.3) -> Any:
        return torch.randn(*shape, generator=gen) * scale

    heads = HIDDEN // HEAD
    w = {"emb.weight": rand(VOCAB, HIDDEN, scale=1.0), "blocks.0.ln0.weight": 1 + rand(HIDDEN, scale=0.1),
         "blocks.0.ln0.bias": rand(HIDDEN, scale=0.1)}  # fmt: skip
    for i in range(LAYERS):
        b = f"blocks.{i}"
        for ln in ("ln1", "ln2"):
            w[f"{b}.{ln}.weight"] = 1 + rand(HIDDEN, scale=0.1)
            w[f"{b}.{ln}.bias"] = rand(HIDDEN, scale=0.1)
        if version == 4:
            # RWKV-4: per-channel decay and bonus, three mixes, no gate and no group norm.
            for k in ("k", "v", "r"):
                w[f"{b}.att.time_mix_{k}"] = torch.rand(1, 1, HIDDEN, generator=gen)
            w[f"{b}.att.time_decay"] = rand(HIDDEN) - 1
            w[f"{b}.att.time_first"] = rand(HIDDEN)
        elif version == 5:
            for k in ("k", "v", "r", "g"):
                w[f"{b}.att.time_mix_{k}"] = torch.rand(1, 1, HIDDEN, generator=gen)
            w[f"{b}.att.time_decay"] = rand(heads, HEAD) - 1
        else:
            for k in ("x", "w", "k", "v", "r", "g"):
                w[f"{b}.att.time_maa_{k}"] = torch.rand(1, 1, HIDDEN, generator=gen)
            w[f"{b}.att.time_maa_w1"] = rand(HIDDEN, 32 * 5, scale=0.05)
            w[f"{b}.att.time_maa_w2"] = rand(5, 32, HIDDEN, scale=0.05)
            w[f"{b}.att.time_decay_w1"] = rand(HIDDEN, 64, scale=0.05)
            w[f"{b}.att.time_decay_w2"] = rand(64, HIDDEN, scale=0.05)
            w[f"{b}.att.time_decay"] = rand(1, 1, HIDDEN) - 1
        if version > 4:
            w[f"{b}.att.time_faaaa"] = rand(heads, HEAD)
        for name in ("key", "value", "receptance", "output") if version == 4 else ATT_V5_V6:
            w[f"{b}.att.{name}.weight"] = rand(HIDDEN, HIDDEN)
        if version > 4:
            w[f"{b}.att.ln_x.weight"] = 1 + rand(HIDDEN, scale=0.1)
            w[f"{b}.att.ln_x.bias"] = rand(HIDDEN, scale=0.1)
        mix = ("time_mix_k", "time_mix_r") if version < 6 else ("time_maa_k", "time_maa_r")
        for name in mix:
            w[f"{b}.ffn.{name}"] = torch.rand(1, 1, HIDDEN, generator=gen)
        w[f"{b}.ffn.key.weight"] = rand(FFN, HIDDEN)
        w[f"{b}.ffn.receptance.weight"] = rand(HIDDEN, HIDDEN)
        w[f"{b}.ffn.value.weight"] = rand(HIDDEN, FFN)
    w["ln_out.weight"] = 1 + rand(HIDDEN, scale=0.1)
    w["ln_out.bias"] = rand(HIDDEN, scale=0.1)
    w["head.weight"] = rand(VOCAB, HIDDEN, scale=0.5)
    return w


# Original names -> Hugging Face names (RWKV/rwkv-4-world-*, RWKV/rwkv-5-world-*, RWKV/v6-Finch-*-HF).
_HF_PART = {"att": "attention", "ffn": "feed_forward", "ln0": "pre_ln"}
_HF_LEAF = {"time_mix_k": "time_mix_key", "time_mix_v": "time_mix_value", "time_mix_r": "time_mix_receptance",
            "time_mix_g": "time_mix_gate"}  # fmt: skip


def hf_name(name: str) -> str:
    if name == "head.weight":
        return name
    if name.startswith("emb."):
        return "rwkv.embeddings." + name[len("emb.") :]
    if name.startswith("ln_out."):
        return "rwkv." + name
    _, block, part, leaf, *rest = name.split(".")
    return ".".join(["rwkv", "blocks", block, _HF_PART.get(part, part), _HF_LEAF.get(leaf, leaf), *rest])


V7_HEAD, V7_RANKS = 32, {"w": 8, "a": 8, "v": 4, "g": 16}


def original_layout_v7() -> dict[str, Any]:
    """BlinkDL's x070 `.pth` names and shapes; layer 0 carries v0/v1/v2 as released files do."""
    import torch

    gen = torch.Generator().manual_seed(7)

    def rand(*shape: int, scale: float = 0.3) -> Any:
        return torch.randn(*shape, generator=gen) * scale

    w = {"emb.weight": rand(VOCAB, HIDDEN, scale=1.0), "blocks.0.ln0.weight": 1 + rand(HIDDEN, scale=0.1),
         "blocks.0.ln0.bias": rand(HIDDEN, scale=0.1)}  # fmt: skip
    for i in range(LAYERS):
        b = f"blocks.{i}"
        for ln in ("ln1", "ln2"):
            w[f"{b}.{ln}.weight"] = 1 + rand(HIDDEN, scale=0.1)
            w[f"{b}.{ln}.bias"] = rand(HIDDEN, scale=0.1)
        for k in "rwkvag":
            w[f"{b}.att.x_{k}"] = torch.rand(1, 1, HIDDEN, generator=gen)
        for k, rank in V7_RANKS.items():
            w[f"{b}.att.{k}1"] = rand(HIDDEN, rank, scale=0.2)
            w[f"{b}.att.{k}2"] = rand(rank, HIDDEN, scale=0.2)
            if k != "g":
                w[f"{b}.att.{k}0"] = rand(1, 1, HIDDEN, scale=0.5)
        w[f"{b}.att.k_k"] = 0.5 + torch.rand(1, 1, HIDDEN, generator=gen)
        w[f"{b}.att.k_a"] = torch.rand(1, 1, HIDDEN, generator=gen)
        w[f"{b}.att.r_k"] = rand(HIDDEN // V7_HEAD, V7_HEAD)
        for name in ("receptance", "key", "value", "output"):
            w[f"{b}.att.{name}.weight"] = rand(HIDDEN, HIDDEN)
        w[f"{b}.att.ln_x.weight"] = 1 + rand(HIDDEN, scale=0.1)
        w[f"{b}.att.ln_x.bias"] = rand(HIDDEN, scale=0.1)
        w[f"{b}.ffn.x_k"] = torch.rand(1, 1, HIDDEN, generator=gen)
        w[f"{b}.ffn.key.weight"] = rand(4 * HIDDEN, HIDDEN)
        w[f"{b}.ffn.value.weight"] = rand(HIDDEN, 4 * HIDDEN)
    w["ln_out.weight"] = 1 + rand(HIDDEN, scale=0.1)
    w["ln_out.bias"] = rand(HIDDEN, scale=0.1)
    w["head.weight"] = rand(VOCAB, HIDDEN, scale=0.5)
    return w


# Original x070 names -> the RWKV organisation's -HF names (flash-linear-attention), this
# file's own table: LoRA factors become Linear weights (transposed), X0 their bias.
_V7_TOP = {"emb.weight": "model.embeddings.weight", "head.weight": "lm_head.weight"}
_V7_PART = {"ln0": "pre_norm", "ln1": "attn_norm", "ln2": "ffn_norm", "att": "attn", "ffn": "ffn"}
_V7_ATT = {"receptance": "r_proj", "key": "k_proj", "value": "v_proj", "output": "o_proj", "ln_x": "g_norm"}


def hf_tensors_v7(weights: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, tensor in weights.items():
        if name in _V7_TOP:
            out[_V7_TOP[name]] = tensor
            continue
        if name.startswith("ln_out."):
            out["model.norm." + name[len("ln_out.") :]] = tensor
            continue
        _, block, part, leaf, *rest = name.split(".")
        prefix = f"model.layers.{block}.{_V7_PART[part]}"
        if part == "att" and len(leaf) == 2 and leaf[0] in "wavg" and leaf[1] in "012":
            if block == "0" and leaf[0] == "v":
                continue  # layer 0 has no value LoRA in the HF layout
            suffix = {"1": "lora.0.weight", "2": "lora.2.weight", "0": "lora.2.bias"}[leaf[1]]
            value = tensor.reshape(-1) if leaf[1] == "0" else tensor.t()
            out[f"{prefix}.{leaf[0]}_lora.{suffix}"] = value.contiguous()
        elif part == "att" and leaf in ("k_k", "k_a"):
            out[f"{prefix}.{leaf}"] = tensor.reshape(-1)
        else:
            out[".".join([prefix, _V7_ATT.get(leaf, leaf) if part == "att" else leaf, *rest])] = tensor
    return out


def run_v7_directly(pth_stem: str, out_npy: str) -> None:
    """In a fresh process: the x070 reference on the original file, token by token."""
    os.environ["RWKV_V7_ON"] = "1"
    import numpy as np
    from rwkv.model import RWKV

    model = RWKV(model=pth_stem, strategy="cpu fp32")
    state, rows = None, []
    for token in TOKENS:
        logits, state = model.forward([token], state)
        rows.append(logits.float().numpy())
    np.save(out_npy, np.stack(rows))


def roundtrip_v7(factory_dir: str, work: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    weights = original_layout_v7()
    original = work / "v7-original"
    torch.save({k: v.clone() for k, v in weights.items()}, f"{original}.pth")
    direct_npy = work / "v7-direct.npy"
    subprocess.run([sys.executable, __file__, "--v7-direct", str(original), str(direct_npy)], check=True)
    hf = work / "v7-hf"
    hf.mkdir(exist_ok=True)
    save_file(hf_tensors_v7(weights), str(hf / "model.safetensors"))
    (hf / "config.json").write_text(json.dumps({"model_type": "rwkv7"}))
    (work / "tokens.json").write_text(json.dumps(TOKENS))
    out = work / "v7-converted.npy"
    script = Path(factory_dir) / "reference_script.py"
    done = subprocess.run(
        [sys.executable, str(script), str(hf), str(work / "tokens.json"), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    version = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("FACTORY-REFERENCE "))[18:])[
        "version"
    ]
    direct, converted = np.load(direct_npy), np.load(out)
    return {"max_abs_diff": float(np.abs(direct - converted).max()), "version": version, "std": float(direct.std())}


def main(factory_dir: str, work_dir: str) -> None:
    import numpy as np
    import torch
    from rwkv.model import RWKV
    from safetensors.torch import save_file

    work = Path(work_dir)
    report = {}
    for version in (4, 5, 6):
        weights = original_layout(version)
        original = work / f"v{version}-original"
        torch.save({k: v.clone() for k, v in weights.items()}, f"{original}.pth")
        model = RWKV(model=str(original), strategy="cpu fp32", verbose=False)
        state, rows = None, []
        for token in TOKENS:
            logits, state = model.forward([token], state)
            rows.append(logits.float().numpy())
        direct = np.stack(rows)
        hf = work / f"v{version}-hf"
        hf.mkdir(exist_ok=True)
        save_file({hf_name(k): v.contiguous() for k, v in weights.items()}, str(hf / "model.safetensors"))
        (hf / "config.json").write_text(json.dumps({"model_type": f"rwkv{version}"}))
        (work / "tokens.json").write_text(json.dumps(TOKENS))
        out = work / f"v{version}-converted.npy"
        script = Path(factory_dir) / "reference_script.py"
        subprocess.run([sys.executable, str(script), str(hf), str(work / "tokens.json"), str(out)], check=True)
        converted = np.load(out)
        report[f"v{version}"] = {"max_abs_diff": float(np.abs(direct - converted).max()), "version": model.version}
    report["v7"] = roundtrip_v7(factory_dir, work)
    print("ROUNDTRIP " + json.dumps(report), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--v7-direct"]:
        run_v7_directly(*sys.argv[2:4])
    else:
        main(*sys.argv[1:3])
