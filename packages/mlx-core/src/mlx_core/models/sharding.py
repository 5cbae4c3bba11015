"""Tensor parallelism for the Llama family: split heads and MLP columns/rows over an ``mx.distributed`` group.

Megatron-style layout with MLX's own distributed layers (``mlx.nn.layers.distributed``):

- attention: ``q/k/v_proj`` all-to-sharded (each rank computes its ``H/N`` query and ``KV/N`` key/value heads,
  so its KV cache holds only those), ``o_proj`` sharded-to-all (the layer's one all-reduce);
- MLP: ``gate/up_proj`` all-to-sharded, ``down_proj`` sharded-to-all (the layer's second all-reduce);
- norms, embeddings and (by default) ``lm_head`` replicated. ``shard_lm_head=True`` splits an untied
  ``lm_head`` over the vocabulary and gathers the logits (one more collective per step, ``V/N`` weights read).

Every rank ends each layer with the same hidden state, so ``Generate`` runs unchanged: with identical seeds
all ranks sample the same token. Quantized layers are split with MLX's quantized twins.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.layers.distributed import AllToShardedLinear, QuantizedAllToShardedLinear, shard_linear

from .llama import Model, ModelArgs

#: Backends ``mx.distributed.init`` knows, in the order it tries them for ``backend="any"``.
BACKENDS = ("any", "ring", "jaccl", "nccl", "mpi")

#: Environment each backend needs before ``mx.distributed.init`` (the rank comes from MLX_RANK, or MPI).
_BACKEND_ENV = {
    "ring": ("MLX_RANK", "MLX_HOSTFILE"),
    "jaccl": ("MLX_RANK", "MLX_IBV_DEVICES", "MLX_JACCL_COORDINATOR"),
    "nccl": ("MLX_RANK", "MLX_WORLD_SIZE", "NCCL_HOST_IP", "NCCL_PORT"),
}


class ShardingError(ValueError):
    """A model cannot be split over this group (shapes, world size or distributed backend)."""


def distributed_group(backend: str = "any", *, expected_size: int | None = None) -> mx.distributed.Group:
    """``mx.distributed.init(strict=True, backend=...)`` with errors that say which variable is missing.

    ``expected_size`` guards against a launcher that started a different number of processes than the
    caller planned for (mismatched world sizes).
    """
    if backend not in BACKENDS:
        raise ShardingError(f"unknown distributed backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if not mx.distributed.is_available(backend):
        hint = {
            "nccl": "NCCL needs MLX's CUDA build (pip install 'mlx[cuda13]') and a CUDA device",
            "jaccl": "JACCL needs macOS with RDMA over Thunderbolt enabled",
            "mpi": "MPI needs libmpi on the library path",
        }.get(backend, "this MLX build has no distributed backend")
        raise ShardingError(f"distributed backend {backend!r} is unavailable: {hint}")
    missing = [v for v in _BACKEND_ENV.get(backend, ()) if v not in os.environ]
    if missing:
        raise ShardingError(
            f"backend {backend!r} needs {', '.join(missing)} in the environment; start each rank with "
            "`mlx.launch` or set them per process (see mlx_core.models.sharding's docs)"
        )
    try:
        group = mx.distributed.init(strict=True, backend=backend)
    except RuntimeError as err:
        raise ShardingError(f"could not start the {backend!r} distributed backend: {err}") from err
    if expected_size is not None and group.size() != expected_size:
        raise ShardingError(
            f"world size mismatch: the launcher started {group.size()} processes but {expected_size} were "
            "expected; start exactly one process per device"
        )
    return group


def check_shardable(args: ModelArgs, world_size: int, *, shard_lm_head: bool = False) -> None:
    """Raise `ShardingError` unless every split dimension divides evenly by ``world_size``."""
    if world_size < 1:
        raise ShardingError(f"world size must be >= 1, got {world_size}")
    checks = [
        ("num_attention_heads", args.num_attention_heads),
        ("num_key_value_heads", args.num_key_value_heads or args.num_attention_heads),
        ("intermediate_size", args.intermediate_size),
    ]
    if shard_lm_head:
        checks.append(("vocab_size", args.vocab_size))
    for name, value in checks:
        if value % world_size:
            raise ShardingError(
                f"{name} ({value}) is not divisible by the group size ({world_size}); "
                f"run on a number of devices that divides {value}"
            )


class InferenceAllToShardedLinear(AllToShardedLinear):
    """MLX's `AllToShardedLinear` without the gradient all-reduce hook (a custom function node per call).

    The forward result is identical; only ``mx.grad`` through the replicated input would miss the sum
    across ranks, so `shard_model` uses it unless ``for_training=True``.
    """

    def __call__(self, x: mx.array) -> mx.array:
        if "bias" in self:
            return mx.addmm(self["bias"], x, self["weight"].T)
        return x @ self["weight"].T


class InferenceQuantizedAllToShardedLinear(QuantizedAllToShardedLinear):
    """Quantized twin of `InferenceAllToShardedLinear`."""

    def __call__(self, x: mx.array) -> mx.array:
        x = mx.quantized_matmul(
            x,
            self["weight"],
            scales=self["scales"],
            biases=self.get("biases"),
            transpose=True,
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
        )
        return x + self["bias"] if "bias" in self else x


def _all_to_sharded(linear: nn.Module, group: mx.distributed.Group, for_training: bool) -> nn.Module:
    if for_training:
        return shard_linear(linear, "all-to-sharded", group=group)
    if isinstance(linear, nn.Linear):
        return InferenceAllToShardedLinear.from_linear(linear, group=group)
    if isinstance(linear, nn.QuantizedLinear):
        return InferenceQuantizedAllToShardedLinear.from_quantized_linear(linear, group=group)
    raise ShardingError(f"cannot shard a {type(linear).__name__}; expected nn.Linear or nn.QuantizedLinear")


class VocabShardedHead(InferenceAllToShardedLinear):
    """``lm_head`` split over the vocabulary: each rank computes ``V/N`` logits, then one all-gather.

    h [B, L, hidden] -> logits [B, L, V], identical on every rank. Its parameters keep the checkpoint's
    names (``lm_head.weight``); the gather concatenates along axis 0, so the vocabulary axis goes there.
    """

    def __call__(self, x: mx.array) -> mx.array:
        local = super().__call__(x)  # [B, L, V/N]
        gathered = mx.distributed.all_gather(mx.moveaxis(local, -1, 0), group=self.group)  # [V, B, L]
        return mx.moveaxis(gathered, 0, -1)


def shard_model(
    model: Model,
    group: mx.distributed.Group | None = None,
    *,
    shard_lm_head: bool = False,
    for_training: bool = False,
) -> Model:
    """Split ``model`` in place over ``group`` (default: ``mx.distributed.init()``) and return it.

    After this call each rank holds ``1/N`` of every attention and MLP matrix; the forward pass performs
    exactly two all-reduces per layer (after ``o_proj`` and after ``down_proj``). Call it on a freshly
    loaded (or lazily loaded) model before making caches: the caches take their head count from the
    projections, so they hold only this rank's KV heads. ``for_training=True`` keeps MLX's gradient
    all-reduce hook on the column-split layers (needed only to differentiate through the sharded model).
    """
    group = group if group is not None else mx.distributed.init()
    n = group.size()
    if not hasattr(model, "args") or not hasattr(model, "layers"):
        raise ShardingError(f"shard_model expects a mlx_core.models.Model, got {type(model).__name__}")
    if getattr(model, "_tensor_parallel_size", 1) != 1:
        raise ShardingError(f"model is already sharded over {model._tensor_parallel_size} ranks")
    if any("qkv_proj" in layer.self_attn or "gate_up_proj" in layer.mlp for layer in model.layers):
        raise ShardingError(
            "shard_model cannot split a model with fused projections (fuse_projections / fuse=True); "
            "load it unfused to run it tensor-parallel"
        )
    tied = bool(model.args.tie_word_embeddings)
    if shard_lm_head and (tied or not isinstance(getattr(model, "lm_head", None), nn.Linear)):
        raise ShardingError(
            "shard_lm_head=True needs an untied, unquantized lm_head; keep it replicated for this model"
        )
    check_shardable(model.args, n, shard_lm_head=shard_lm_head)
    if n == 1:
        return model

    for layer in model.layers:
        # Typed Any: sharding swaps the nn.Linear / nn.QuantizedLinear projections for distributed layers,
        # which the llama modules' attribute types do not cover.
        attn: Any = layer.self_attn
        attn.q_proj = _all_to_sharded(attn.q_proj, group, for_training)
        attn.k_proj = _all_to_sharded(attn.k_proj, group, for_training)
        attn.v_proj = _all_to_sharded(attn.v_proj, group, for_training)
        attn.o_proj = shard_linear(attn.o_proj, "sharded-to-all", group=group)
        attn.n_heads //= n
        attn.n_kv_heads //= n
        mlp: Any = layer.mlp
        mlp.gate_proj = _all_to_sharded(mlp.gate_proj, group, for_training)
        mlp.up_proj = _all_to_sharded(mlp.up_proj, group, for_training)
        mlp.down_proj = shard_linear(mlp.down_proj, "sharded-to-all", group=group)
    if shard_lm_head:
        model.lm_head = VocabShardedHead.from_linear(model.lm_head, group=group)
    model._tensor_parallel_size = n
    return model


def tensor_parallel_size(model: Any) -> int:
    """How many ranks ``model`` is split over (1 when it was never sharded)."""
    return int(getattr(model, "_tensor_parallel_size", 1))


def collectives_per_step(model: Any) -> int:
    """All-reduce/all-gather calls one forward pass performs (for docs and tests): 2 per layer + head."""
    if tensor_parallel_size(model) == 1:
        return 0
    head = 1 if isinstance(getattr(model, "lm_head", None), VocabShardedHead) else 0
    return 2 * len(model.layers) + head


def leave_group(group: Any) -> NoReturn:
    """Wait for every rank, flush output, then exit the process at once (status 0).

    MLX 0.32's ring backend has no orderly shutdown: a rank whose peer exits first may fail its last
    collectives ("connection to a peer was lost") or crash in its socket threads' destructors (seen here
    as SIGSEGV at exit, about 1 run in 10). A barrier, then ``os._exit``, avoids both.
    """
    mx.eval(mx.distributed.all_sum(mx.array(1.0), group=group))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
