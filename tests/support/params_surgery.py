"""Deliberate damage to converted params, for tests that a gate catches it: two
tensors of one shape trade places inside their shards (the index still agrees,
every value is finite, only the model is wrong)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def swap_tensors(params: Path, first: str, second: str, index_name: str = "tensor-cache.json") -> None:
    """Swap the bytes of two same-sized tensors in place (new files, so hard links elsewhere keep the old bytes)."""
    index = json.loads((params / index_name).read_text())
    found = {}
    for shard in index["records"]:
        for record in shard["records"]:
            if record["name"] in (first, second):
                found[record["name"]] = (shard["dataPath"], int(record["byteOffset"]), int(record["nbytes"]))
    if set(found) != {first, second}:
        raise KeyError(f"{sorted({first, second} - set(found))} not in {params / index_name}")
    (path_a, offset_a, size_a), (path_b, offset_b, size_b) = found[first], found[second]
    if size_a != size_b:
        raise ValueError(f"{first} has {size_a} bytes, {second} {size_b}")
    data = {name: bytearray((params / name).read_bytes()) for name in {path_a, path_b}}
    chunk_a = bytes(data[path_a][offset_a : offset_a + size_a])
    chunk_b = bytes(data[path_b][offset_b : offset_b + size_b])
    data[path_a][offset_a : offset_a + size_a] = chunk_b
    data[path_b][offset_b : offset_b + size_b] = chunk_a
    for name, content in data.items():
        tmp = params / f".{name}.swap"
        tmp.write_bytes(content)
        os.replace(tmp, params / name)
