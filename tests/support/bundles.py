"""Bundles made from files for the store tests: real params written with TVM's
tensor-cache writer, so a pulled folder can be loaded with TVM's reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factory.store.bundle_folder import bundle_manifest, describe, write_manifest
from factory.toolchains.base import web_runtime_name


def make_params(folder: Path, *, seed: int = 0, megabytes: float = 1.0) -> None:
    from tvm.contrib import tvmjs

    rng = np.random.default_rng(seed)
    rows = max(1, int(megabytes * 1024 * 1024 / (256 * 2)))
    tensors = {
        "embeddings.weight": rng.standard_normal((rows, 256)).astype("float16"),
        "ln_out.weight": np.ones(256, "float16"),
    }
    tvmjs.dump_tensor_cache(tensors, str(folder), encode_format="raw", shard_cap_mb=1, show_progress=False)
    (folder / "tensor-cache-b16.json").unlink(missing_ok=True)
    (folder / "mlc-chat-config.json").write_text('{"model_type": "rwkv5", "tokenizer_files": ["tokenizer_model"]}')
    (folder / "tokenizer_model").write_bytes(b"\x81\x00\xc4\x01A")


def make_bundle(
    out: Path,
    *,
    model: str = "rwkv-5-world-tiny",
    quant: str = "q4f16_1",
    target: str = "cuda-sm80",
    version: str = "1.0.0",
    params_from: Path | None = None,
    seed: int = 0,
    megabytes: float = 1.0,
    gates: dict[str, object] | None = None,
    library_megabytes: float = 0.0,
    suffix: str = "so",
    device: str | None = None,
) -> Path:
    """A current-flow bundle folder; `params_from` shares another bundle's params (hard links);
    `library_megabytes` makes the library that large (random bytes), e.g. to cross the
    multipart threshold of the S3 store."""
    bundle = out / f"{model}-{quant}-{target}"
    bundle.mkdir(parents=True)
    if params_from is not None:
        for path in params_from.iterdir():
            if path.name != "factory-bundle.json" and not path.name.endswith(".so"):
                (bundle / path.name).hardlink_to(path)
    else:
        make_params(bundle, seed=seed, megabytes=megabytes)
    library = f"{model}-{quant}-{target}.{suffix}"
    if library_megabytes:
        (bundle / library).write_bytes(np.random.default_rng(seed).bytes(int(library_megabytes * (1 << 20))))
    else:
        (bundle / library).write_bytes(f"library for {target} {seed}".encode() * 100)
    if suffix == "wasm":  # a WebGPU bundle carries the JS runtime its .wasm was linked for
        (bundle / web_runtime_name(library)).write_text(f"var tvmjs = {{}}; // {seed}\n")
    manifest = bundle_manifest(
        cell={"model": model, "quant": quant, "target": target, "name": f"{model}/{quant}/{target}"},
        files=describe(bundle, "tensor-cache.json", library),
        compatibility={
            "flow": "current",
            "params_index": "tensor-cache.json",
            "device": device or target,
            "library": library,
        },
        provenance={"build_key": f"key-{model}-{quant}-{target}-{seed}", "release": {"name": "t", "version": version}},
        gates=gates or {},
        run=f"mlc_llm chat {{bundle}} --model-lib {{bundle}}/{library} --device cuda",
    )
    write_manifest(bundle, manifest)
    return bundle
