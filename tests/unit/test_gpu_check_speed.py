"""The GPU check's speed cells (bench/gpu_check_speed_device.py): the params a cell's
tensor-cache index lists are written on the GPU machine, shard by shard, each record by its
dtype, where TVM's loader reads them; an index TVM could not load is refused before a byte is
written. The 7B-shaped cell's build and run are in the mlc module's GPU check test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from gpu_check_shared import Refusal  # noqa: E402
from gpu_check_speed import SHAPES, speed_prompt  # noqa: E402
from gpu_check_speed_device import FLOAT_SCALE, index_shards, synthesize  # noqa: E402


def _record(name: str, shape: list[int], dtype: str, offset: int) -> dict[str, object]:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return {"name": name, "shape": shape, "dtype": dtype, "format": "raw", "nbytes": nbytes, "byteOffset": offset}


def _index() -> dict[str, object]:
    first = [_record("w.q_weight", [300, 8], "uint32", 0), _record("w.q_scale", [300, 2], "float16", 9600)]
    # A gap of 16 bytes before the last record, as an aligned writer may leave.
    second = [_record("decay", [1000], "float32", 0), _record("norm", [77], "float16", 4016)]
    return {
        "metadata": {"ParamSize": 4},
        "records": [
            {"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": 10800, "records": first},
            {"dataPath": "params_shard_1.bin", "format": "raw-shard", "nbytes": 4016 + 154, "records": second},
        ],
    }


def _load(folder: Path, index: dict[str, object]) -> dict[str, np.ndarray]:
    """What tvmjs.load_tensor_cache reads from the shards, with numpy."""
    out = {}
    for path, _, records in index_shards(index):
        data = (folder / path).read_bytes()
        for rec in records:
            chunk = data[rec["byteOffset"] : rec["byteOffset"] + rec["nbytes"]]
            out[rec["name"]] = np.frombuffer(chunk, dtype=rec["dtype"]).reshape(rec["shape"])
    return out


def test_the_params_are_written_where_the_index_says_with_finite_small_floats(tmp_path: Path) -> None:
    index = _index()
    (tmp_path / "tensor-cache.json").write_text(json.dumps(index))
    total = synthesize(tmp_path / "tensor-cache.json", tmp_path, seed=3)
    assert total == 10800 + 4170
    assert (tmp_path / "params_shard_0.bin").stat().st_size == 10800
    assert (tmp_path / "params_shard_1.bin").stat().st_size == 4170
    tensors = _load(tmp_path, index)
    for name in ("w.q_scale", "decay", "norm"):
        values = tensors[name].astype("float64")
        assert np.isfinite(values).all() and np.abs(values).max() <= FLOAT_SCALE, name
        assert values.std() > FLOAT_SCALE / 4, name  # spread, not a constant
    assert len(np.unique(tensors["w.q_weight"])) > 2000  # random bits, not a pattern
    # Two tensors of one dtype do not get the same bytes.
    assert not np.array_equal(tensors["norm"], tensors["w.q_scale"].reshape(-1)[:77])

    # The same seed writes the same bytes; another seed other bytes.
    again = tmp_path / "again"
    again.mkdir()
    synthesize(tmp_path / "tensor-cache.json", again, seed=3)
    assert (again / "params_shard_1.bin").read_bytes() == (tmp_path / "params_shard_1.bin").read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    synthesize(tmp_path / "tensor-cache.json", other, seed=4)
    assert (other / "params_shard_1.bin").read_bytes() != (tmp_path / "params_shard_1.bin").read_bytes()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i["records"][0]["records"][1].update(byteOffset=9000), "overlaps"),
        (lambda i: i["records"][1].update(nbytes=4100), "outside its shard"),
        (lambda i: i["records"][0].update(dataPath="../params_shard_0.bin"), "a dataPath file name"),
    ],
    ids=["overlap", "past-the-shard", "path-outside"],
)
def test_an_index_tvm_could_not_load_is_refused_before_anything_is_written(
    tmp_path: Path, change: object, message: str
) -> None:
    index = _index()
    change(index)  # type: ignore[operator]
    (tmp_path / "tensor-cache.json").write_text(json.dumps(index))
    with pytest.raises(Refusal, match=message):
        synthesize(tmp_path / "tensor-cache.json", tmp_path)
    assert not list(tmp_path.glob("params_shard_*"))


def test_the_7b_shape_is_rwkv4_world_7b_and_carries_the_seed_figures() -> None:
    shape = SHAPES["rwkv-4-world-7b"]
    config = shape.config
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (4096, 32, 65536)
    assert config["intermediate_size"] == 4 * config["hidden_size"] and config["rescale_every"] == 6
    assert shape.seed["q0f16"]["prefill_tok_s"] == 362.7 and shape.seed["q0f16"]["decode_tok_s"] == 72.4
    assert shape.seed["q4f16_1"]["prefill_tok_s"] == 1104.7 and shape.seed["q4f16_1"]["decode_tok_s"] == 122.6
    assert speed_prompt().endswith("\n\nAssistant:") and len(speed_prompt()) > 400
