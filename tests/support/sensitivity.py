"""How much each parameter group of a checkpoint moves the reference's logits. Runs
INSIDE a toolchain (torch and the `rwkv` package), with the factory's in-toolchain
scripts at SCRIPTS_DIR:

    python sensitivity.py SCRIPTS_DIR MODEL_DIR TOKENS_JSON [SAVE_DIR]

Each tensor of the Hugging Face checkpoint (every kind in every layer: mixes, LoRA
factors, decay, bonus, norms, gate, heads) is perturbed in turn by Gaussian noise of a
quarter of its RMS, with a fixed seed, and the reference runs the tokens again. The
ln_x group norm is also run with mlc-llm's default eps (1e-5) instead of the
reference's 64e-5 (RWKV-5/6 only: the x070 reference is TorchScript, compiled with
its eps of 64e-5 before anything could swap the function, and RWKV-4 has no group
norm, so for both `ln_x_eps` is null).
Prints `SENSITIVITY {json}`: the KL mean of each run's next-token distributions from
the unperturbed run's, by tensor name, and for the eps. With SAVE_DIR, each run's logits
are saved there too (base.npy, then NNN.npy in the order of `variants.json`), for the
recorded parity sweep (tests/support/record_parity_sweep.py).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

NOISE = 0.25


def kl_mean(reference: Any, other: Any) -> float:
    import numpy as np

    def log_softmax(x: Any) -> Any:
        x = np.asarray(x, dtype="float64")
        top = x.max(axis=-1, keepdims=True)
        return x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))

    log_p, log_q = log_softmax(reference), log_softmax(other)
    return float((np.exp(log_p) * (log_p - log_q)).sum(axis=-1).mean())


def main(scripts_dir: str, model_dir: str, tokens_json: str, save_dir: str | None = None) -> None:
    import numpy as np
    import torch

    variants: list[str] = []

    def keep(name: str, logits: Any) -> None:
        if save_dir is not None:
            np.save(Path(save_dir) / ("base.npy" if name == "" else f"{len(variants):03d}.npy"), np.asarray(logits))
            if name:
                variants.append(name)
                (Path(save_dir) / "variants.json").write_text(json.dumps(variants))

    sys.path.insert(0, scripts_dir)
    script: Any = importlib.import_module("reference_script")
    _hf_tensors, reference_logits, reference_tensors = (
        script._hf_tensors,
        script.reference_logits,
        script.reference_tensors,
    )

    tokens = [int(t) for t in json.loads(Path(tokens_json).read_text())]
    hf = {name: tensor.float() for name, tensor in _hf_tensors(Path(model_dir)).items()}
    base_weights = reference_tensors(hf)
    base, _ = reference_logits(base_weights, tokens)
    keep("", base)
    generator = torch.Generator().manual_seed(0)
    groups = {}
    for name, tensor in sorted(hf.items()):
        rms = float(tensor.pow(2).mean().sqrt())
        noise = torch.randn(tensor.shape, generator=generator) * (NOISE * rms)
        logits, _ = reference_logits(reference_tensors({**hf, name: tensor + noise}), tokens)
        groups[name] = kl_mean(base, logits)
        keep(name, logits)
    if script.is_rwkv7(hf) or not any(".ln_x." in name for name in hf):
        print("SENSITIVITY " + json.dumps({"groups": groups, "ln_x_eps": None}), flush=True)
        return

    real_group_norm = torch.nn.functional.group_norm

    def default_eps(*args: Any, **kwargs: Any) -> Any:
        kwargs["eps"] = 1e-5
        return real_group_norm(*args, **kwargs)

    torch.nn.functional.group_norm = default_eps
    try:
        logits, _ = reference_logits(base_weights, tokens)
    finally:
        torch.nn.functional.group_norm = real_group_norm
    keep("ln_x eps 1e-5", logits)
    print("SENSITIVITY " + json.dumps({"groups": groups, "ln_x_eps": kl_mean(base, logits)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
