"""Fused projections: q/k/v in one matmul and gate/up in one, weights concatenated along the output axis.

A decode step multiplies one token by every projection; on a GPU each matmul is a kernel launch and a pass
over its weights, so merging ``q_proj``/``k_proj``/``v_proj`` into ``qkv_proj`` and ``gate_proj``/``up_proj``
into ``gate_up_proj`` cuts five launches per layer to two. The outputs are split back with ``mx.split``, so
the model computes the same numbers (each output row only ever sees its own weights).

Quantized layers fuse too: ``mx.quantize`` groups run along the *input* axis, so the packed weights, scales
and biases of each output row are independent of the other rows and concatenate along axis 0 like a plain
weight. A group whose layers differ in type or quantization (e.g. mlx-lm's ``mixed_4_6`` recipes, which give
``v_proj`` more bits) is left unfused; the forward pass handles fused and unfused layers alike.

The fused names (``qkv_proj``, ``gate_up_proj``) are not checkpoint names: fuse after loading, and save the
unfused model. A tensor-parallel model is fused *after* `shard_model`: each rank's column-split q/k/v and
gate/up shards (its own heads and MLP columns; inference layers without collectives) concatenate into a
plain local projection; `shard_model` refuses an already fused model (a fused matrix does not split by heads).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .llama import Model
from .sharding import (
    InferenceAllToShardedLinear,
    InferenceQuantizedAllToShardedLinear,
)

#: (fused name, the projections it replaces, in output order) per submodule kind.
ATTENTION_GROUP = ("qkv_proj", ("q_proj", "k_proj", "v_proj"))
MLP_GROUP = ("gate_up_proj", ("gate_proj", "up_proj"))
_PARAMS = ("weight", "scales", "biases", "bias")


def _quantization(layer: nn.Module) -> tuple[Any, ...]:
    """What must agree for two layers to share one matmul: type, input size, quantization, bias."""
    # A column-split inference shard computes ``x @ W_local.T (+ b_local)`` like a plain layer.
    if type(layer) in (nn.QuantizedLinear, InferenceQuantizedAllToShardedLinear):
        return ("q", layer.group_size, layer.bits, layer.mode, "bias" in layer, layer.weight.shape[1])
    if type(layer) in (nn.Linear, InferenceAllToShardedLinear):
        return ("f", "bias" in layer, layer.weight.shape[1], layer.weight.dtype)
    return ("other", id(layer))  # anything else (training shards, LoRA, ...) is never fused


def fuse_linears(layers: list[nn.Module]) -> nn.Module | None:
    """One Linear (or QuantizedLinear) computing ``concat([l(x) for l in layers], -1)``; None if impossible.

    Every parameter (``weight``, ``scales``, ``biases``, ``bias``) is concatenated along the output axis.
    """
    kinds = {_quantization(layer) for layer in layers}
    if len(kinds) != 1 or next(iter(kinds))[0] == "other":
        return None
    quantized = next(iter(kinds))[0] == "q"
    first = layers[0]
    params = {k: mx.concatenate([layer[k] for layer in layers], axis=0) for k in first if k in _PARAMS}
    out_dims = params["weight"].shape[0]
    fused: nn.Module
    if quantized:
        # The constructor's random weights are lazy and replaced below, so they are never computed.
        fused = nn.QuantizedLinear(
            first.group_size,  # any valid input size: the weights are replaced
            out_dims,
            bias="bias" in first,
            group_size=first.group_size,
            bits=first.bits,
            mode=first.mode,
        )
        for k in list(fused):
            if k in _PARAMS and k not in params:
                del fused[k]
    else:
        fused = nn.Linear(1, out_dims, bias="bias" in first)
    fused.update(params)
    fused.train(first.training)
    return fused


def _fuse_group(module: nn.Module, group: tuple[str, tuple[str, ...]]) -> bool:
    fused_name, names = group
    if fused_name in module or not all(n in module for n in names):
        return False
    fused = fuse_linears([module[n] for n in names])
    if fused is None:
        return False
    for n in names:
        del module[n]
    module[fused_name] = fused
    return True


def fuse_projections(model: Model) -> Model:
    """Fuse q/k/v and gate/up of every layer in place (see the module docstring) and return the model.

    Idempotent; layers that cannot be fused stay as they are. On a tensor-parallel model (after
    `shard_model`) it fuses each rank's local shards.
    """
    if not hasattr(model, "layers"):
        raise TypeError(f"fuse_projections expects a mlx_core.models.Model, got {type(model).__name__}")
    for layer in model.layers:
        _fuse_group(layer.self_attn, ATTENTION_GROUP)
        _fuse_group(layer.mlp, MLP_GROUP)
    return model


def fused_projection_count(model: Any) -> int:
    """How many fused projections (``qkv_proj`` + ``gate_up_proj``) the model holds."""
    return sum(
        (ATTENTION_GROUP[0] in layer.self_attn) + (MLP_GROUP[0] in layer.mlp) for layer in model.layers
    )
