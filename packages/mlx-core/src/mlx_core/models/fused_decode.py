"""Fused decode path of the Llama family: three kernels per layer instead of about twenty.

A decode step (one token) of a small model is bound by the number of kernels, not by the bytes they
read: on an H100 each kernel costs ~5 µs of launch and ramp-up, and an unfused Llama-family block launches
about twenty (two RMSNorms, five matvecs, q/k-norm, two RoPEs, attention and its merge, SwiGLU, two adds).
With q/k/v and gate/up fused (`mlx_core.models.fusion.fuse_projections`) a block here is:

1. ``qkv = W_qkv @ rms_norm(x)``                                   (`fused_matvec`, norm prologue)
2. q/k-norm + RoPE + append to the cache + split-K attention,     (`decode_attention_qkv`, one kernel
   then ``h = x + W_o @ attn``                                     whose last block per kv head merges the
                                                                   splits, with the cache's
                                                                   `kernel_counters`, and whose last blocks
                                                                   apply o_proj (dense or quantized) once
                                                                   every head is merged)
3. ``h + W_down @ (silu(gate) * up)`` of ``W_gate_up @ rms_norm(h)`` (`fused_mlp`: one kernel, whose down
                                                                   blocks wait for the gate/up blocks,
                                                                   with the same counters)

and the final norm rides on the output projection. The path is taken for one-token steps over a
`StaticKVCache` inside `StaticKVCache.deferred_append` (the compiled decode step of `mlx_core.generate`),
whose buffers the kernel may append to in place. Every other call, layer or configuration (no fused
projections, biases, sliding windows, ropes whose angles are not position-linear) runs the ordinary code.
A tensor-parallel model (`shard_model`, then `fuse_projections`) takes it too: each rank runs the kernels
on its own heads and MLP columns, with the layer's two all-reduces after o_proj and down_proj (both then
kernels of their own: five per layer).

`fused_decode` chooses when: ``"auto"`` (default) only where the fused kernels run natively (CUDA),
``"always"`` also where they fall back to MLX ops (to test the plumbing on the CPU), ``"never"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.layers.distributed import QuantizedShardedToAllLinear, ShardedToAllLinear
from mlx_core.attn import RotationTable, rotation_table
from mlx_core.kernels import (
    MatvecWeights,
    OutputProjection,
    backend,
    decode_attention_qkv,
    fused_matvec,
    fused_mlp,
)

__all__ = [
    "FUSED_DECODE_MODES",
    "LinearWeights",
    "decode_block",
    "fused_decode",
    "head_weights",
    "linear_weights",
]

FUSED_DECODE_MODES = ("auto", "always", "never")
_mode = "auto"

#: Whether the attention kernel also applies o_proj + residual (one launch fewer per layer); read when a
#: step is traced. Off, o_proj is a `fused_matvec` launch of its own. On an H100 the folded launch saved
#: ~0.9 µs per layer with bf16 weights and ~1 µs per layer with 4-bit ones once the launch took the
#: matvec's shape (benchmarks/NOTES.md, tenth and eleventh sessions).
FOLD_O_PROJ = True
#: Whether gate/up and down run in one launch (`fused_mlp` with the cache's counters); read when a step is
#: traced. Off, they are two `fused_matvec` launches.
FOLD_MLP = True


@contextmanager
def fused_decode(mode: str) -> Iterator[None]:
    """Within the block, take the fused decode path ``mode`` says (see the module docstring)."""
    global _mode
    if mode not in FUSED_DECODE_MODES:
        raise ValueError(f"fused decode mode {mode!r} is not one of {', '.join(FUSED_DECODE_MODES)}.")
    previous, _mode = _mode, mode
    try:
        yield
    finally:
        _mode = previous


def _enabled(dtype: mx.Dtype) -> bool:
    return _mode == "always" or (_mode == "auto" and backend(dtype) == "cuda")


class LinearWeights(MatvecWeights):
    """The arrays of a bias-free projection as `fused_matvec` takes them (dense or affine-quantized)."""

    def __call__(self, x: mx.array, **epilogue: Any) -> mx.array:
        return fused_matvec(
            x,
            self.weight,
            self.scales,
            self.biases,
            bits=self.bits,
            group_size=self.group_size,
            **epilogue,
        )


def linear_weights(module: Any) -> LinearWeights | None:
    """`LinearWeights` of a bias-free ``Linear``/``QuantizedLinear`` (or an embedding used as the output
    projection, or the local shard of a row-split ``ShardedToAllLinear``); ``None`` for anything else
    (biases, other quantization modes, LoRA).
    """
    kind = type(module)
    if kind in (nn.Linear, nn.Embedding, ShardedToAllLinear) and "bias" not in module:
        return LinearWeights(module.weight)
    if (
        kind in (nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedShardedToAllLinear)
        and "bias" not in module
        and getattr(module, "mode", "affine") == "affine"
        and module.get("biases") is not None
    ):
        return LinearWeights(module.weight, module.scales, module.biases, module.bits, module.group_size)
    return None


@dataclass(frozen=True)
class _BlockWeights:
    qkv: LinearWeights
    o: LinearWeights
    gate_up: LinearWeights
    down: LinearWeights
    rotation: RotationTable
    group: Any = None  # tensor parallel: o_proj and down_proj are row-split, their outputs all-summed


def _row_split_group(module: Any) -> Any:
    """The ``mx.distributed`` group of a row-split (sharded-to-all) projection, else ``None``."""
    return module.group if type(module) in (ShardedToAllLinear, QuantizedShardedToAllLinear) else None


def _block_weights(block: Any) -> _BlockWeights | None:
    attn, mlp = block.self_attn, block.mlp
    if "qkv_proj" not in attn or "gate_up_proj" not in mlp:
        return None
    parts = [linear_weights(m) for m in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj)]
    rotation = rotation_table(attn.rope, attn.head_dim)
    if rotation is None or any(p is None for p in parts):
        return None
    qkv, o, gate_up, down = parts
    assert qkv is not None and o is not None and gate_up is not None and down is not None
    if len({p.dtype for p in (qkv, o, gate_up, down)}) != 1:
        return None
    group = _row_split_group(attn.o_proj)
    if group is not _row_split_group(mlp.down_proj):
        return None
    return _BlockWeights(qkv, o, gate_up, down, rotation, group)


def decode_block(block: Any, x: mx.array, mask: Any, cache: Any) -> mx.array | None:
    """One decoder block for one token through the fused kernels, or ``None`` if the path does not apply
    (then the caller runs the ordinary code; nothing has been changed).
    """
    if (
        _mode == "never"
        or x.ndim != 3
        or x.shape[1] != 1
        or not getattr(cache, "defers_append", False)
        or cache.keys is None
        or cache.pending_append is not None
        or cache.valid_length(mask) is None
        or not _enabled(x.dtype)
    ):
        return None
    weights = _block_weights(block)
    if weights is None or weights.qkv.dtype != x.dtype or cache.keys.dtype != x.dtype:
        return None
    attn = block.self_attn
    norm_in, norm_post = block.input_layernorm, block.post_attention_layernorm
    qkv = weights.qkv(x, norm_weight=norm_in.weight, eps=norm_in.eps)
    # tensor parallel: o_proj's output is all-summed before the residual add, so it stays apart
    fold_o = FOLD_O_PROJ and weights.group is None
    q_norm = attn.q_norm if "q_norm" in attn else None
    k_norm = attn.k_norm if "k_norm" in attn else None
    out, keys, values, next_position = decode_attention_qkv(
        qkv,
        cache.keys,
        cache.values,
        cache.position,
        attn.scale,
        n_heads=attn.n_heads,
        q_norm=None if q_norm is None else q_norm.weight,
        k_norm=None if k_norm is None else k_norm.weight,
        eps=q_norm.eps if q_norm is not None else 1e-6,
        rope_inv_freq=weights.rotation.inv_freq,
        rope_traditional=weights.rotation.traditional,
        rope_input_scale=weights.rotation.input_scale,
        # + 3: the work tickets of a launch that also applies o_proj (see decode_attention_qkv)
        counters=cache.kernel_counters(cache.keys.shape[0] * cache.keys.shape[1] + 3),
        output_projection=OutputProjection(weights.o, residual=x) if fold_o else None,
    )
    cache.store_appended(keys, values, next_position)
    if weights.group is not None:  # tensor parallel: the same two all-reduces as the layer code
        h = x + mx.distributed.all_sum(weights.o(out), group=weights.group)
        act = weights.gate_up(h, norm_weight=norm_post.weight, eps=norm_post.eps, swiglu=True)
        return h + mx.distributed.all_sum(weights.down(act), group=weights.group)
    h = out if fold_o else weights.o(out, residual=x)  # x + W_o @ attention
    return fused_mlp(
        h,
        weights.gate_up,
        weights.down,
        norm_weight=norm_post.weight,
        eps=norm_post.eps,
        # the attention launch above has left the counters zero; launches of one layer run in turn
        counters=cache.kernel_counters(3) if FOLD_MLP else None,
    )


def head_weights(model: Any, length: int) -> LinearWeights | None:
    """The output projection for a one-token step with the final RMSNorm folded in, or ``None``."""
    if length != 1 or _mode == "never":
        return None
    inner = model.model
    head = inner.embed_tokens if model.args.tie_word_embeddings else model.lm_head
    weights = linear_weights(head)
    if weights is None or type(inner.norm) is not nn.RMSNorm or not _enabled(weights.dtype):
        return None
    return weights
