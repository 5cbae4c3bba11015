"""Per-rank loading for tensor parallelism: each rank reads only its slices of the safetensors files.

``load_sharded(path, group)`` builds the model lazily (MLX does not materialise the random initialisation
until evaluated), splits it with `shard_model`, and then fills every parameter with exactly the slice of the
checkpoint tensor that this rank holds. The local shapes of the sharded model say which axis was split
(the one where ``full == N * local``); rank ``r`` reads block ``r`` of that axis. Tensors are read through a
memory map of the file, one at a time, so peak host memory per rank is about ``1/N`` of the model (plus the
replicated embeddings, norms and head) rather than the whole checkpoint.

The safetensors header is parsed here rather than through ``safe_open(...).get_slice``: the numpy and mlx
frameworks of ``safetensors`` (0.8) cannot return bfloat16 slices, the dtype of most checkpoints.
"""

from __future__ import annotations

import glob
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from .llama import Model
from .loading import (
    ModelLoadError,
    load_config,
    load_tokenizer_for,
    model_from_config,
    quantize_like_checkpoint,
    resolve_model_path,
)
from .sharding import shard_model

#: safetensors dtype -> (numpy storage dtype, MLX dtype viewed from it).
_DTYPES: dict[str, tuple[Any, mx.Dtype]] = {
    "F64": (np.float64, mx.float64),
    "F32": (np.float32, mx.float32),
    "F16": (np.float16, mx.float16),
    "BF16": (np.uint16, mx.bfloat16),
    "I64": (np.int64, mx.int64),
    "I32": (np.int32, mx.int32),
    "I16": (np.int16, mx.int16),
    "I8": (np.int8, mx.int8),
    "U64": (np.uint64, mx.uint64),
    "U32": (np.uint32, mx.uint32),
    "U16": (np.uint16, mx.uint16),
    "U8": (np.uint8, mx.uint8),
    "BOOL": (np.bool_, mx.bool_),
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies: file, dtype tag, shape and absolute byte range."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def read_safetensors_index(file: str | Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors header (no tensor data is read)."""
    file = Path(file)
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ModelLoadError(f"{file} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", prefix)
        if n > min(_MAX_HEADER, size - 8):
            raise ModelLoadError(f"{file}: header length {n} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelLoadError(f"{file}: the safetensors header is not valid JSON ({err})") from err
    base = 8 + n
    index: dict[str, TensorInfo] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (lo, hi) = meta["dtype"], tuple(meta["shape"]), meta["data_offsets"]
        if dtype not in _DTYPES:
            raise ModelLoadError(f"{file}: tensor {name} has unsupported dtype {dtype}")
        expect = int(np.prod(shape, dtype=np.int64)) * np.dtype(_DTYPES[dtype][0]).itemsize
        if not (0 <= lo <= hi and base + hi <= size and hi - lo == expect):
            raise ModelLoadError(f"{file}: tensor {name} has inconsistent offsets {lo}..{hi} for {shape}")
        index[name] = TensorInfo(file, dtype, shape, base + lo, base + hi)
    return index


@dataclass
class ShardedCheckpoint:
    """All tensors of a directory of safetensors files, read slice by slice through a memory map.

    ``bytes_read`` counts the bytes copied out of the files, so tests (and users) can check that a rank
    touched only its share.
    """

    tensors: dict[str, TensorInfo]
    bytes_read: int = 0
    _maps: dict[Path, np.memmap] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, model_path: str | Path) -> ShardedCheckpoint:
        files = sorted(glob.glob(str(Path(model_path) / "*.safetensors")))
        if not files:
            raise ModelLoadError(f"no *.safetensors files in {model_path}")
        tensors: dict[str, TensorInfo] = {}
        for file in files:
            tensors.update(read_safetensors_index(file))
        return cls(tensors)

    def read(self, name: str, axis: int | None = None, rank: int = 0, parts: int = 1) -> mx.array:
        """Tensor ``name``, or block ``rank`` of ``parts`` equal blocks along ``axis``."""
        info = self.tensors[name]
        np_dtype, mx_dtype = _DTYPES[info.dtype]
        if info.file not in self._maps:
            self._maps[info.file] = np.memmap(info.file, dtype=np.uint8, mode="r")
        raw = self._maps[info.file][info.start : info.end].view(np_dtype).reshape(info.shape)
        if axis is not None and parts > 1:
            size = info.shape[axis] // parts
            index = [slice(None)] * len(info.shape)
            index[axis] = slice(rank * size, (rank + 1) * size)
            raw = raw[tuple(index)]
        local = np.ascontiguousarray(raw)
        self.bytes_read += local.nbytes
        out = mx.array(local)
        return out.view(mx_dtype) if out.dtype != mx_dtype else out

    def close(self) -> None:
        """Drop the memory maps (the arrays already read stay valid: they were copied)."""
        self._maps.clear()


def _split_axis(name: str, full: tuple[int, ...], local: tuple[int, ...], parts: int) -> int | None:
    """The axis a rank's parameter was split along (None: replicated); error if shapes do not fit."""
    if full == local:
        return None
    diff = [i for i, (a, b) in enumerate(zip(full, local, strict=False)) if a != b]
    if len(full) != len(local) or len(diff) != 1 or full[diff[0]] != local[diff[0]] * parts:
        raise ModelLoadError(
            f"checkpoint tensor {name} has shape {full}, which does not split into this rank's {local} "
            f"over {parts} ranks; does the checkpoint match its config.json?"
        )
    return diff[0]


def load_sharded_weights(
    model_path: str | Path,
    group: mx.distributed.Group,
    *,
    shard_lm_head: bool = False,
    dtype: mx.Dtype | None = None,
    checkpoint: ShardedCheckpoint | None = None,
) -> tuple[Model, dict[str, Any]]:
    """Build, shard and fill the model with this rank's slices; returns ``(model, config)``.

    ``checkpoint`` may be passed in to inspect ``bytes_read`` afterwards.
    """
    model_path = Path(model_path)
    config = load_config(model_path)
    ckpt = checkpoint if checkpoint is not None else ShardedCheckpoint.open(model_path)
    if "tie_word_embeddings" not in config:  # older configs: tied exactly when there is no lm_head
        config["tie_word_embeddings"] = "lm_head.weight" not in ckpt.tensors
    model = model_from_config(config)  # lazy: the random initialisation is never evaluated
    names = model.sanitize(dict.fromkeys(ckpt.tensors))  # sanitize only renames/drops keys
    quantization = config.get("quantization")
    if quantization is not None:
        quantize_like_checkpoint(model, quantization, names)
    shard_model(model, group, shard_lm_head=shard_lm_head)

    local = dict(tree_flatten(model.parameters()))
    missing = sorted(set(local) - set(names))
    extra = sorted(set(names) - set(local))
    if missing or extra:
        raise ModelLoadError(
            f"weights in {model_path} do not fit its config.json: "
            f"missing {missing[:5]}, unexpected {extra[:5]}"
        )
    n, rank = group.size(), group.rank()
    weights: list[tuple[str, mx.array]] = []
    for name, param in local.items():
        axis = _split_axis(name, ckpt.tensors[name].shape, tuple(param.shape), n)
        value = ckpt.read(name, axis, rank, n)
        if dtype is not None and mx.issubdtype(value.dtype, mx.floating) and not name.endswith(".scales"):
            value = value.astype(dtype)
        mx.eval(value)  # one tensor at a time: the peak stays near the local share
        weights.append((name, value))
    ckpt.close()
    model.load_weights(weights, strict=True)
    model.eval()
    return model, config


def load_sharded(
    path_or_repo: str | Path,
    group: mx.distributed.Group,
    *,
    revision: str | None = None,
    shard_lm_head: bool = False,
    dtype: mx.Dtype | None = None,
) -> tuple[Model, Any]:
    """Tensor-parallel twin of ``load_model``: ``(model sharded over group, tokenizer)``."""
    model_path = resolve_model_path(path_or_repo, revision=revision)
    model, config = load_sharded_weights(model_path, group, shard_lm_head=shard_lm_head, dtype=dtype)
    return model, load_tokenizer_for(model_path, config)
