"""ShardWriter: output readable by the safetensors library and MLX, sharded by size, groups kept whole."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.convert import ConvertError, ShardWriter, parse_size
from safetensors import safe_open


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("2GiB", 2 * 2**30),
        ("1.5 kb", 1500),
        (1234, 1234),
        ("77", 77),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GB", "5 XB", "-1GB", 0])
def test_parse_size_rejects(bad: str | int) -> None:
    with pytest.raises(ConvertError):
        parse_size(bad)


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=12),
    limit=st.integers(min_value=16, max_value=400),
)
def test_shards_round_trip_and_respect_the_limit(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], limit: int
) -> None:
    directory = tmp_path_factory.mktemp("w")
    rng = np.random.default_rng(len(sizes) * 1000 + limit)
    arrays = {f"t{i}": rng.standard_normal((n,)).astype(np.float32) for i, n in enumerate(sizes)}
    writer = ShardWriter(directory, limit)
    for name, a in arrays.items():
        writer.add(name, mx.array(a))
    weight_map = writer.finish()
    files = sorted(directory.glob("*.safetensors"))
    assert sorted(weight_map) == sorted(arrays)
    assert not list(directory.glob(".*"))  # no spill files left
    assert (directory / "model.safetensors.index.json").exists() == (len(files) > 1)
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            assert f.metadata() == {"format": "mlx"}
            keys = list(f.keys())
            total = sum(arrays[k].nbytes for k in keys)
            assert total <= limit or len(keys) == 1
            for k in keys:
                np.testing.assert_array_equal(f.get_tensor(k), arrays[k])
                assert weight_map[k] == file.name
    if len(files) > 1:
        index = json.loads((directory / "model.safetensors.index.json").read_text())
        assert index["metadata"]["total_size"] == sum(a.nbytes for a in arrays.values())


def test_groups_stay_together_and_strided_arrays_written_contiguously(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, 100)
    base = mx.arange(24, dtype=mx.float32).reshape(4, 6)
    writer.add("a", mx.ones((20,)))  # 80 bytes
    writer.add_group([("g.weight", base.T), ("g.scales", mx.ones((3,), dtype=mx.bfloat16))])
    weight_map = writer.finish()
    assert weight_map["g.weight"] == weight_map["g.scales"] != weight_map["a"]
    loaded = mx.load(str(tmp_path / weight_map["g.weight"]))
    assert mx.array_equal(loaded["g.weight"], base.T) and loaded["g.scales"].dtype == mx.bfloat16


def test_duplicate_names_and_empty_output(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path, 100)
    writer.add("x", mx.ones((2,)))
    with pytest.raises(ConvertError, match="two tensors map to the output name 'x'"):
        writer.add("x", mx.ones((2,)))
    with pytest.raises(ConvertError, match="no tensors were written"):
        ShardWriter(tmp_path / "e", 100).finish()
