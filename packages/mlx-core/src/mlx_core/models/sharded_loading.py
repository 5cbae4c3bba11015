"""Per-rank loading for tensor parallelism: each rank reads only its slices of the safetensors files.

``load_sharded(path, group)`` builds the model lazily (MLX does not materialise the random initialisation
until evaluated), splits it with `shard_model`, and then fills every parameter with exactly the slice of the
checkpoint tensor that this rank holds. The local shapes of the sharded model say which axis was split
(the one where ``full == N * local``); rank ``r`` reads block ``r`` of that axis. Tensors are read through a
memory map of the file, one at a time, so peak host memory per rank is about ``1/N`` of the model (plus the
replicated embeddings, norms and head) rather than the whole checkpoint.

Headers are read and validated by `mlx_core.convert.read_header`; the slices come from a memory map rather
than ``safe_open(...).get_slice``: the numpy and mlx frameworks of ``safetensors`` (0.8) cannot return
bfloat16 slices, the dtype of most checkpoints.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlx_core.convert import CorruptCheckpointError, TensorInfo, read_header
from mlx_core.convert.safetensors_file import SAFETENSORS_DTYPES

from .fusion import fuse_projections
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


def read_safetensors_index(file: str | Path) -> dict[str, TensorInfo]:
    """Parse and validate one safetensors header (no tensor data is read), as `ModelLoadError` on failure."""
    try:
        return read_header(file).tensors
    except CorruptCheckpointError as err:
        raise ModelLoadError(
            f"cannot load {file}: its safetensors header has inconsistent offsets, sizes or dtypes ({err})"
        ) from err


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
        np_dtype, mx_dtype = SAFETENSORS_DTYPES[info.dtype]
        if info.path not in self._maps:
            self._maps[info.path] = np.memmap(info.path, dtype=np.uint8, mode="r")
        raw = self._maps[info.path][info.start : info.end].view(np_dtype).reshape(info.shape)
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
    fuse: bool = False,
) -> tuple[Model, Any]:
    """Tensor-parallel twin of ``load_model``: ``(model sharded over group, tokenizer)``.

    ``fuse=True`` then fuses each rank's own q/k/v and gate/up shards (`fuse_projections`), so the compiled
    decode step takes the fused kernels on CUDA with the layer's two all-reduces.
    """
    model_path = resolve_model_path(path_or_repo, revision=revision)
    model, config = load_sharded_weights(model_path, group, shard_lm_head=shard_lm_head, dtype=dtype)
    if fuse:
        fuse_projections(model)
        mx.eval(model.parameters())
    return model, load_tokenizer_for(model_path, config)
