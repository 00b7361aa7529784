"""Runs INSIDE a toolchain image (its mlc_llm and TVM), for bench/gpu_check.py's speed cells:
the tensor-cache.json that `mlc_llm convert_weight` would write for a model, without its
weights. The parameters' names, shapes and dtypes come from the model definition as
quantized (what `convert_weight` checks every converted tensor against, and what the
compiled library's `_metadata` lists), laid out in shards the way TVM's
`tvmjs.dump_tensor_cache` lays them out (32 MiB at most, a larger tensor alone). The GPU
machine writes the shards from this index (gpu_check_speed_device.py), with synthetic values.

    python gpu_check_index.py MLC_CHAT_CONFIG OUT_JSON

The model's config is the chat config's `model_config` (what `mlc_llm compile` reads);
FACTORY_FLOAT32_LAYERS, where a cell sets it, is in the environment as for convert_weight.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

SHARD_CAP = 32 << 20


def index(chat_config: Path) -> dict[str, object]:
    from mlc_llm.model import MODELS
    from mlc_llm.quantization import QUANTIZATION
    from tvm.runtime import DataType

    config = json.loads(chat_config.read_text())
    model_info = MODELS[config["model_type"]]
    quantization = QUANTIZATION[config["quantization"]]
    model_config = model_info.config.from_dict(config["model_config"])
    model, _ = model_info.quantize[quantization.kind](model_config, quantization)
    _, named, _ = model.export_tvm(spec=model.get_default_spec(), allow_extern=True)
    shards: list[dict[str, object]] = []
    records: list[dict[str, object]] = []
    offset = 0
    total = 0
    count = 0

    def close() -> None:
        nonlocal records, offset
        if records:
            shards.append({"dataPath": f"params_shard_{len(shards)}.bin", "format": "raw-shard",
                           "nbytes": offset, "records": records})  # fmt: skip
        records, offset = [], 0

    for name, param in named:
        shape = [int(d) for d in param.shape]
        nbytes = math.prod(shape) * DataType(param.dtype).itemsize
        if records and offset + nbytes > SHARD_CAP:
            close()
        records.append({"name": name, "shape": shape, "dtype": str(param.dtype), "format": "raw",
                        "nbytes": nbytes, "byteOffset": offset})  # fmt: skip
        offset += nbytes
        total += nbytes
        count += 1
    close()
    metadata = {
        "ParamSize": count,
        "ParamBytes": float(total),
        "Synthetic": "names, shapes and dtypes only: gpu_check writes the values",
    }
    return {"metadata": metadata, "records": shards}


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    Path(sys.argv[2]).write_text(json.dumps(index(Path(sys.argv[1])), indent=1) + "\n")
