"""The GPU check's speed cells, prepared here (bench/gpu_check.py `prepare --speed-models` and
`--speed-bundles`): what the GPU machine needs to time a model too big to carry, without its
params: the library, mlc-chat-config.json, tokenizer_model and tensor-cache.json. The GPU
machine writes the params from the index (gpu_check_speed_device.py).

- `--speed-models`: a manifest's model (world.yaml's, by default) at a real shape, built here
  in the toolchain image with the manifest's own gen_config and compile steps (the release's
  argv, from its flow) from the shape's config.json alone; the index comes from the model
  definition as quantized (gpu_check_index.py, in the image). SHAPES holds each model's
  config.json as its repository publishes it, and the figures to print beside it.
- `--speed-bundles`: bundles of `--dist`, their params left behind.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_check_shared import Refusal

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
INDEX = "tensor-cache.json"
TOKENIZER = "tokenizer_model"
CHAT_CONFIG = "mlc-chat-config.json"
# Speed cells on the GPU machine: a prompt of about 128 tokens, then 128 decoded (the seed
# article does not say its lengths; vm_script's run times one prefill call and each decode).
PROMPT_REPEAT = 9
DECODE_TOKENS = 128


@dataclass(frozen=True)
class Shape:
    config: dict[str, Any]
    """config.json as the model's repository publishes it (only its shape matters here)."""
    seed: dict[str, dict[str, Any]] = field(default_factory=dict)
    """quantization -> figures to print beside the measured ones."""


# RWKV/rwkv-4-world-7b's config.json (transformers' RwkvConfig); the seed article's figures for
# RWKV-4-World-7B on an A800 with mlc-llm in 2023 (../shared/FACTS.md, "RWKV World").
SHAPES: dict[str, Shape] = {
    "rwkv-4-world-7b": Shape(
        config={
            "architectures": ["RwkvForCausalLM"],
            "model_type": "rwkv",
            "vocab_size": 65536,
            "context_length": 4096,
            "hidden_size": 4096,
            "num_hidden_layers": 32,
            "attention_hidden_size": 4096,
            "intermediate_size": 16384,
            "layer_norm_epsilon": 1e-5,
            "rescale_every": 6,
            "bos_token_id": 0,
            "eos_token_id": 0,
            "tie_word_embeddings": False,
            "torch_dtype": "bfloat16",
        },
        seed={
            "q0f16": {"prefill_tok_s": 362.7, "decode_tok_s": 72.4, "device": "A800 (the seed article)"},
            "q4f16_1": {"prefill_tok_s": 1104.7, "decode_tok_s": 122.6, "device": "A800 (the seed article)"},
        },
    ),
}


@dataclass(frozen=True)
class Cell:
    name: str
    model: str
    quant: str
    target: str
    device: str
    folder: Path
    library: str
    seed: dict[str, Any] | None


def speed_prompt() -> str:
    from factory.cells.gating import SMOKE_PROMPT

    return " ".join([SMOKE_PROMPT.removesuffix("\n\nAssistant:")] * PROMPT_REPEAT) + "\n\nAssistant:"


def _factory() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def model_cells(
    manifest_path: Path, models: list[str], quants: list[str], target_name: str, image: str, into: Path
) -> list[Cell]:
    """Build each model x quantization's speed cell for `target_name` in `image` (gen_config,
    the index and compile, one container each cell), into folders under `into`."""
    _factory()
    from factory.cells.kernels import judge_kernels
    from factory.errors import FactoryError
    from factory.in_toolchain import SCRIPTS_DIR
    from factory.manifest.load import load_manifest
    from factory.tokenizer.rwkv_world import parse_vocab, upstream_vocab_path, write_tokenizer_model
    from factory.toolchains import FLOWS
    from factory.toolchains.base import (
        CONVERTED,
        KERNEL_CHECK_REPORT,
        MODEL_ROOT,
        OUT,
        SCRIPTS_MOUNT,
        needs_kernel_check,
        with_kernel_check,
    )

    try:
        manifest = load_manifest(manifest_path).manifest
    except FactoryError as e:
        raise Refusal(f"--manifest {manifest_path}: {e}") from e
    target = manifest.targets.get(target_name)
    if target is None:
        raise Refusal(f"--speed-target {target_name}: not a target of {manifest_path} ({', '.join(manifest.targets)})")
    vocab = parse_vocab(upstream_vocab_path())
    cells = []
    for name in models:
        shape = SHAPES.get(name)
        found = [m for m in manifest.models if m.name == name]
        if shape is None or not found:
            raise Refusal(
                f"--speed-models {name}: give a model of {manifest_path} with a shape in "
                f"bench/gpu_check_speed.py SHAPES ({', '.join(sorted(SHAPES))})"
            )
        model = found[0]
        toolchain = manifest.toolchains[model.toolchain]
        flow = FLOWS[toolchain.flow]
        source = Path(tempfile.mkdtemp(prefix=f"{name}-config-", dir=into))
        (source / "config.json").write_text(json.dumps(shape.config, indent=2) + "\n")
        source.chmod(0o755)
        for quant in quants:
            steps = {s.name: s for s in flow.convert_steps(model, quant, "huggingface-safetensor")}
            # The release's compile, through the kernel check on GPU targets as a release cell's is.
            compile_steps = with_kernel_check(
                flow.compile_steps(model, quant, target_name, target, toolchain.build), target
            )
            library = flow.compiled_library(model.name, quant, target_name, target)
            folder = into / f"{name}-{quant}-{target_name}"
            folder.mkdir()
            folder.chmod(0o777)  # the image's user writes here
            env = {**steps["gen_config"].env, **compile_steps[0].env}
            commands = [
                shlex.join(steps["gen_config"].argv),
                shlex.join(["python", "/bench/gpu_check_index.py", f"{OUT}/{CHAT_CONFIG}", f"{OUT}/{INDEX}"]),
                shlex.join(compile_steps[0].argv),
            ]
            argv = [
                "docker", "run", "--rm", "--network", "none", "-e", "HOME=/tmp",
                *(x for k, v in sorted(env.items()) for x in ("-e", f"{k}={v}")),
                "-v", f"{source}:{MODEL_ROOT}/{model.name}:ro", "-v", f"{folder}:{OUT}", "-v", f"{folder}:{CONVERTED}",
                "-v", f"{HERE}:/bench:ro", "-v", f"{SCRIPTS_DIR}:{SCRIPTS_MOUNT}:ro",
                "--entrypoint", "bash", image, "-c", "set -e; " + "; ".join(commands),
            ]  # fmt: skip
            print(f"speed cell {folder.name}: gen_config, index and compile in {image}", flush=True)
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not (folder / library).is_file():
                tail = (done.stdout + done.stderr)[-3000:]
                raise Refusal(f"speed cell {folder.name}: the build in {image} exited {done.returncode}:\n{tail}")
            if needs_kernel_check(target):
                report_path = folder / KERNEL_CHECK_REPORT
                report = json.loads(report_path.read_text()) if report_path.is_file() else None
                refused = judge_kernels(library, report)
                if refused is not None:
                    raise Refusal(
                        f"speed cell {folder.name}: the kernel check refused it: {'; '.join(refused.problems)}"
                    )
                functions = len((report or {}).get("checked", []))
                print(f"speed cell {folder.name}: kernel check passed ({functions} GPU functions)")
            write_tokenizer_model(vocab, folder / TOKENIZER)
            device = vm_device(target.device_kind)
            cells.append(
                Cell(name=folder.name, model=name, quant=quant, target=target_name, device=device,
                     folder=folder, library=library, seed=shape.seed.get(quant))
            )  # fmt: skip
    return cells


def vm_device(kind: str) -> str:
    """The Relax VM's device for a kind of library, as the gates drive it (token_runner)."""
    _factory()
    from factory.cells.gating import token_runner

    runner = token_runner(kind)
    return runner[1][0] if runner and runner[1] else kind


def bundle_cells(bundles: list[Any], names: list[str]) -> list[Cell]:
    """Bundles of --dist as speed cells (gpu_check_pack.Bundle); their params stay here."""
    by_name = {b.name: b for b in bundles}
    cells = []
    for name in names:
        b = by_name.get(name)
        if b is None:
            raise Refusal(f"--speed-bundles {name}: no such bundle in --dist ({', '.join(sorted(by_name))})")
        cells.append(
            Cell(name=b.name, model=b.model, quant=b.quant, target=b.target, device=b.device,
                 folder=b.folder / b.params_dir, library=os.path.relpath(b.folder / b.library, b.folder / b.params_dir),
                 seed=None)
        )  # fmt: skip
    return cells


def cell_files(cell: Cell) -> dict[str, Path]:
    """What a cell carries: the library, chat config, tokenizer and index; never a params shard."""
    files = {rel: cell.folder / rel for rel in (cell.library, CHAT_CONFIG, TOKENIZER, INDEX)}
    missing = [rel for rel, path in files.items() if not path.is_file()]
    if missing:
        raise Refusal(f"speed cell {cell.name}: {', '.join(missing)} missing in {cell.folder}")
    return files
