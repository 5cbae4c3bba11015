"""Header validation and tensor reads, checked against the safetensors library itself."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.convert import CorruptCheckpointError, read_header
from mlx_core.convert.safetensors_file import read_tensor
from safetensors.numpy import load_file, save_file


def raw_file(path: Path, header: dict, data: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_reads_match_safetensors_library(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "a": rng.standard_normal((3, 5)).astype(np.float32),
        "b": rng.standard_normal((7,)).astype(np.float16),
        "c": rng.integers(-100, 100, (2, 2, 2)).astype(np.int8),
        "d": rng.integers(0, 2**60, (4,)).astype(np.uint64),
        "e": rng.standard_normal((2, 3)),
        "f": rng.integers(0, 2, (5,)).astype(bool),
        "empty": np.zeros((0, 4), np.float32),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"), metadata={"format": "pt"})
    header = read_header(tmp_path / "x.safetensors")
    assert header.metadata == {"format": "pt"} and set(header.tensors) == set(tensors)
    reference = load_file(str(tmp_path / "x.safetensors"))
    with open(tmp_path / "x.safetensors", "rb") as fh:
        for name, info in header.tensors.items():
            got = read_tensor(fh, info)
            assert got.shape == reference[name].shape
            np.testing.assert_array_equal(np.array(got), reference[name])
    assert read_header(tmp_path / "x.safetensors").tensors["e"].dtype == "F64"


def test_bfloat16_bits_preserved(tmp_path: Path) -> None:
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0x0001], dtype=np.uint16)
    path = raw_file(
        tmp_path / "b.safetensors",
        {"w": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}},
        bits.tobytes(),
    )
    info = read_header(path).tensors["w"]
    with open(path, "rb") as fh:
        got = read_tensor(fh, info)
    assert got.dtype == mx.bfloat16
    np.testing.assert_array_equal(np.array(got.view(mx.uint16)), bits)


F32x2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("header", "data", "message"),
    [
        ({"w": F32x2}, b"\0" * 4, "truncated: the header describes 8 bytes"),
        ({"w": F32x2}, b"\0" * 12, "unexpected bytes follow"),
        ({"w": {**F32x2, "dtype": "F8_E4M3"}}, b"\0" * 8, "dtype 'F8_E4M3'"),
        ({"w": {**F32x2, "shape": [3]}}, b"\0" * 8, "need 12"),
        ({"w": {**F32x2, "shape": [-2]}}, b"\0" * 8, "invalid shape"),
        ({"w": {**F32x2, "data_offsets": [8, 0]}}, b"\0" * 8, "invalid data_offsets"),
        ({"w": F32x2, "v": {**F32x2, "data_offsets": [4, 12]}}, b"\0" * 12, "overlaps"),
        ({"w": {**F32x2, "data_offsets": [4, 12]}}, b"\0" * 12, "hole of 4 bytes"),
        ({"w": "nonsense"}, b"", "not a JSON object"),
        ({"__metadata__": [1], "w": F32x2}, b"\0" * 8, "__metadata__"),
    ],
)
def test_invalid_headers_rejected(tmp_path: Path, header: dict, data: bytes, message: str) -> None:
    with pytest.raises(CorruptCheckpointError, match=message):
        read_header(raw_file(tmp_path / "x.safetensors", header, data))


def test_short_and_garbage_files(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"\1\2")
    with pytest.raises(CorruptCheckpointError, match="not even the 8-byte header length"):
        read_header(tmp_path / "a")
    (tmp_path / "b").write_bytes(struct.pack("<Q", 50) + b"{}")
    with pytest.raises(CorruptCheckpointError, match="header needs 50 bytes but only 2 follow"):
        read_header(tmp_path / "b")
    (tmp_path / "c").write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{}")
    with pytest.raises(CorruptCheckpointError, match="not UTF-8 JSON"):
        read_header(tmp_path / "c")
    (tmp_path / "d").write_bytes(b"PK\x03\x04" + b"\0" * 60)  # a zip (torch .bin) is not safetensors
    with pytest.raises(CorruptCheckpointError):
        read_header(tmp_path / "d")
