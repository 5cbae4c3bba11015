"""Validated, lazy reading of one safetensors file: header checks first, then one tensor at a time.

Every length in the header is checked against the file before any tensor byte is read (the habit the
safetensors format itself recommends), so a truncated or corrupt file fails with a clear error instead of
a crash or silently wrong weights. ``read_tensor`` reads one tensor with ``readinto`` (never a memory
map, so a large shard's pages never count towards resident memory); conversion itself hands validated
files to MLX's lazy loader, which reads each tensor only when it is evaluated.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import CorruptCheckpointError

MAX_HEADER_BYTES = 100_000_000
"""Largest JSON header accepted (the safetensors reference implementation uses the same limit)."""

# safetensors dtype tag -> (numpy storage dtype, mlx dtype). bfloat16 is stored as raw uint16 in numpy.
SAFETENSORS_DTYPES: dict[str, tuple[np.dtype, mx.Dtype]] = {
    "F64": (np.dtype("<f8"), mx.float64),
    "F32": (np.dtype("<f4"), mx.float32),
    "F16": (np.dtype("<f2"), mx.float16),
    "BF16": (np.dtype("<u2"), mx.bfloat16),
    "I64": (np.dtype("<i8"), mx.int64),
    "I32": (np.dtype("<i4"), mx.int32),
    "I16": (np.dtype("<i2"), mx.int16),
    "I8": (np.dtype("i1"), mx.int8),
    "U64": (np.dtype("<u8"), mx.uint64),
    "U32": (np.dtype("<u4"), mx.uint32),
    "U16": (np.dtype("<u2"), mx.uint16),
    "U8": (np.dtype("u1"), mx.uint8),
    "BOOL": (np.dtype("?"), mx.bool_),
}
MLX_TO_SAFETENSORS: dict[mx.Dtype, str] = {mlx: tag for tag, (_, mlx) in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: its file, dtype tag, shape and absolute byte range ``[start, end)``."""

    name: str
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    """The validated header of one safetensors file; tensors ordered by their offset in the file."""

    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of ``path`` without reading tensor data.

    Raises CorruptCheckpointError when the file is too short, the header is not the JSON object the
    format requires, a dtype/shape/offset is malformed, tensors overlap or leave holes, or the file is
    shorter (truncated) or longer than the header says.
    """
    path = Path(path)
    size = path.stat().st_size
    where = f"{path}"
    if size < 8:
        raise CorruptCheckpointError(f"{where} is truncated: {size} bytes, not even the 8-byte header length")
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        if header_len > MAX_HEADER_BYTES:
            raise CorruptCheckpointError(
                f"{where} is not a valid safetensors file: header length {header_len} exceeds "
                f"{MAX_HEADER_BYTES} bytes (wrong file type or corrupt first bytes)"
            )
        if 8 + header_len > size:
            raise CorruptCheckpointError(
                f"{where} is truncated: the header needs {header_len} bytes but only {size - 8} follow"
            )
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(
            f"{where} has a corrupt safetensors header (not UTF-8 JSON): {exc}"
        ) from exc
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{where} has a corrupt safetensors header: expected a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CorruptCheckpointError(f"{where}: __metadata__ must be a JSON object of strings")
    data_start = 8 + header_len
    data_len = size - data_start
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        tensors.append(_parse_entry(where, path, name, entry, data_start))
    tensors.sort(key=lambda t: (t.start, t.end))
    cursor = 0
    for info in tensors:
        begin = info.start - data_start
        if begin < cursor:
            raise CorruptCheckpointError(f"{where}: tensor {info.name!r} overlaps the tensor before it")
        if begin > cursor:
            raise CorruptCheckpointError(f"{where}: a hole of {begin - cursor} bytes precedes {info.name!r}")
        cursor = info.end - data_start
    if cursor > data_len:
        raise CorruptCheckpointError(
            f"{where} is truncated: the header describes {cursor} bytes of tensor data but the file holds "
            f"{data_len}; download or copy it again"
        )
    if cursor < data_len:
        raise CorruptCheckpointError(
            f"{where} is corrupt: {data_len - cursor} unexpected bytes follow the last tensor"
        )
    return SafetensorsHeader(path=path, tensors={t.name: t for t in tensors}, metadata=dict(metadata))


def _parse_entry(where: str, path: Path, name: str, entry: Any, data_start: int) -> TensorInfo:
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"{where}: header entry for {name!r} is not a JSON object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        known = ", ".join(SAFETENSORS_DTYPES)
        raise CorruptCheckpointError(
            f"{where}: tensor {name!r} has dtype {dtype!r}, which mlx_core.convert cannot read "
            f"(supported: {known}); dequantize or cast it with another tool first"
        )
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CorruptCheckpointError(f"{where}: tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CorruptCheckpointError(f"{where}: tensor {name!r} has invalid data_offsets {offsets!r}")
    itemsize = SAFETENSORS_DTYPES[dtype][0].itemsize
    expected = math.prod(shape) * itemsize
    if offsets[1] - offsets[0] != expected:
        raise CorruptCheckpointError(
            f"{where}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes but its shape {shape} and "
            f"dtype {dtype} need {expected}"
        )
    return TensorInfo(
        name=name,
        path=path,
        dtype=dtype,
        shape=tuple(shape),
        start=data_start + offsets[0],
        end=data_start + offsets[1],
    )


def read_tensor(fh: BufferedReader, info: TensorInfo) -> mx.array:
    """Read one tensor described by ``info`` from the open file ``fh`` into a new ``mx.array``."""
    np_dtype, mx_dtype = SAFETENSORS_DTYPES[info.dtype]
    buffer = np.empty(info.nbytes, dtype=np.uint8)
    fh.seek(info.start)
    got = fh.readinto(buffer.data)
    if got != info.nbytes:
        raise CorruptCheckpointError(
            f"{info.path}: reading {info.name!r} returned {got} of {info.nbytes} bytes "
            "(the file changed or is truncated)"
        )
    host = buffer.view(np_dtype).reshape(info.shape)
    if mx_dtype == mx.bfloat16:
        return mx.array(host).view(mx.bfloat16)
    return mx.array(host, dtype=mx_dtype)
