"""Scaled dot-product attention over plain or quantized KV caches.

Queries ``[B, n_heads, Lq, D]`` attend keys/values ``[B, n_kv_heads, Lk, D]`` (GQA/MQA when
``n_heads`` is a multiple of ``n_kv_heads``). Plain keys go to ``mx.fast.scaled_dot_product_attention``
untouched (no extra ops, so no overhead beyond a few shape checks); a cache with ``bits`` (quantized KV, as
in mlx-lm) hands ``(packed, scales, biases)`` triples that are attended with ``mx.quantized_matmul`` without
dequantizing the cache. Both paths take all three mask kinds and attention sinks.

Decode steps (``Lq = 1``) on CUDA can go to ``mlx_core.kernels.decode_attention`` (split-K
flash-decoding, each K/V head read once per GQA group), which reads only the keys a mask lets through when
that mask is the prefix mask of a `StaticKVCache` (its ``valid_length``). Measured on an H100 (MLX 0.32.4):
against *unmasked* ``mx.fast`` at equal key length the kernel ran at 0.3-0.5x, but inside a compiled decode
loop over StaticKVCache buffers (where ``mx.fast`` gets an explicit mask) it made whole-model decode
1.05-1.6x faster. So the default (``"auto"``) uses it only for StaticKVCache prefix masks;
``use_decode_kernel(True)`` also routes unmasked/causal decode steps to it, ``False`` never.
``MLX_CORE_ATTN_DECODE_KERNEL`` = ``auto`` | ``1`` | ``0`` sets the initial mode. Everything else (CPU,
Metal, other masks, sinks) uses ``mx.fast``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import mlx.core as mx
from mlx_core.attn.errors import AttentionShapeError
from mlx_core.attn.mask import AttentionMask, mask_to_array
from mlx_core.kernels import backend, decode_attention, decode_attention_append

__all__ = ["quantized_scaled_dot_product_attention", "scaled_dot_product_attention", "use_decode_kernel"]

DECODE_KERNEL_ENV_VAR = "MLX_CORE_ATTN_DECODE_KERNEL"
_MODES = {"auto": None, "1": True, "0": False}


def _mode_from_env() -> bool | None:
    value = os.environ.get(DECODE_KERNEL_ENV_VAR, "auto").strip().lower()
    if value not in _MODES:
        raise ValueError(f"{DECODE_KERNEL_ENV_VAR}={value!r} is not one of auto, 1, 0.")
    return _MODES[value]


_decode_kernel_mode: bool | None = _mode_from_env()


def use_decode_kernel(enabled: bool | None) -> None:
    """CUDA decode steps: ``None`` (auto: StaticKVCache prefix masks only), ``True`` (every eligible
    mask, including none/causal) or ``False`` (always ``mx.fast``)."""
    global _decode_kernel_mode
    _decode_kernel_mode = None if enabled is None else bool(enabled)


QuantizedArray = tuple[mx.array, mx.array, mx.array]
_KERNEL_DTYPES = (mx.bfloat16, mx.float16)


def _check(
    q_shape: Sequence[int],
    k_shape: Sequence[int],
    v_shape: Sequence[int],
    k_dim: int,
    mask: AttentionMask,
    sinks: mx.array | None,
) -> None:
    """Raise :class:`AttentionShapeError` for shapes MLX would reject (or silently misread)."""
    if len(q_shape) != 4 or len(k_shape) != 4 or len(v_shape) != 4:
        raise AttentionShapeError(
            f"attention expects 4-D [B, heads, L, D] queries, keys and values; got shapes "
            f"{tuple(q_shape)}, {tuple(k_shape)}, {tuple(v_shape)}."
        )
    b, n_heads, q_len, d = q_shape
    kb, n_kv, k_len, _ = k_shape
    if kb != b or v_shape[0] != b:
        raise AttentionShapeError(
            f"batch sizes differ: queries {b}, keys {kb}, values {v_shape[0]}; pass matching [B, ...] arrays."
        )
    if v_shape[1] != n_kv or v_shape[2] != k_len:
        raise AttentionShapeError(
            f"keys [B, {n_kv}, {k_len}, ...] and values [B, {v_shape[1]}, {v_shape[2]}, ...] must share "
            "heads and length."
        )
    if n_kv == 0 or n_heads % n_kv:
        raise AttentionShapeError(
            f"query heads ({n_heads}) must be a multiple of key/value heads ({n_kv}) "
            "for grouped-query attention."
        )
    if k_dim != d:
        raise AttentionShapeError(f"query head dim ({d}) differs from key head dim ({k_dim}).")
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"the only string mask is 'causal', got {mask!r}.")
        if q_len > k_len:
            raise AttentionShapeError(f"'causal' mask needs Lq <= Lk, got Lq={q_len}, Lk={k_len}.")
    elif mask is not None:
        if not isinstance(mask, mx.array):
            raise TypeError(f"mask must be None, 'causal' or an mx.array, got {type(mask).__name__}.")
        full = (b, n_heads, q_len, k_len)
        if mask.ndim > 4 or any(m not in (1, f) for m, f in zip(mask.shape[::-1], full[::-1], strict=False)):
            raise AttentionShapeError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to [B, H, Lq, Lk] = {full}."
            )
    if sinks is not None and tuple(sinks.shape) != (n_heads,):
        raise AttentionShapeError(f"sinks must have shape [n_heads] = ({n_heads},), got {tuple(sinks.shape)}")


def scaled_dot_product_attention(
    queries: mx.array,
    keys: mx.array | QuantizedArray,
    values: mx.array | QuantizedArray,
    *,
    scale: float,
    mask: AttentionMask = None,
    cache: Any = None,
    sinks: mx.array | None = None,
) -> mx.array:
    """``softmax(scale * Q Kᵀ + mask [, sinks]) V`` → ``[B, n_heads, Lq, Dv]``; mlx-lm's call pattern.

    When ``cache`` has ``bits`` (a quantized KV cache) ``keys``/``values`` are ``(packed, scales, biases)``
    from ``mx.quantize`` and the cache's ``group_size``/``bits`` are used. ``sinks`` (``[n_heads]``) are
    per-head logits that join the softmax denominator only.
    """
    if cache is not None and hasattr(cache, "bits"):
        if not isinstance(keys, (tuple, list)) or not isinstance(values, (tuple, list)):
            raise TypeError(
                "the cache is quantized (has `bits`), so keys and values must be (packed, scales, biases) "
                "tuples as returned by its update_and_fetch."
            )
        return quantized_scaled_dot_product_attention(
            queries,
            keys,
            values,
            scale=scale,
            mask=mask,
            sinks=sinks,
            group_size=cache.group_size,
            bits=cache.bits,
        )
    if isinstance(keys, (tuple, list)) or isinstance(values, (tuple, list)):
        raise TypeError(
            "keys/values are quantized tuples but no quantized cache was given; pass cache= the "
            "QuantizedKVCache that produced them (it supplies group_size and bits)."
        )
    if getattr(cache, "pending_append", None) is not None:
        out = _append_and_attend(queries, keys, values, scale, mask, cache, sinks)
        if out is not None:
            return out
        keys, values = cast(tuple[mx.array, mx.array], cache.apply_pending_append())
    _check(queries.shape, keys.shape, values.shape, keys.shape[-1], mask, sinks)
    if (
        _decode_kernel_mode is not False
        and queries.shape[2] == 1
        and sinks is None
        and queries.dtype in _KERNEL_DTYPES
        and backend(queries.dtype) == "cuda"
    ):
        use, valid_length = _decode_kernel_length(keys, values, mask, cache)
        if use:
            counters = _kernel_counters(cache, queries.shape[0] * keys.shape[1])
            return decode_attention(queries, keys, values, float(scale), valid_length, counters=counters)
    if sinks is not None and sinks.dtype != queries.dtype:
        sinks = sinks.astype(queries.dtype)  # mx.fast requires sinks that promote to the output dtype
    return mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask, sinks=sinks)


def _append_and_attend(
    queries: mx.array,
    keys: mx.array,
    values: mx.array,
    scale: float,
    mask: AttentionMask,
    cache: Any,
    sinks: mx.array | None,
) -> mx.array | None:
    """A `StaticKVCache` deferred its one-token write (``pending_append``): write and attend in one go.

    Returns ``None`` (the caller then writes the row the ordinary way) unless this is plain decode
    attention over the cache's prefix: one query, no sinks, one dtype, the cache's own mask.
    """
    new_keys, new_values, position = cache.pending_append
    if (
        _decode_kernel_mode is False
        or queries.shape[2] != 1
        or sinks is not None
        or not queries.dtype == keys.dtype == values.dtype
        or keys.shape != values.shape
        or mask is None
        or isinstance(mask, str)
        or cache.valid_length(mask) is None
    ):
        return None
    _check(queries.shape, keys.shape, values.shape, keys.shape[-1], None, None)
    counters = _kernel_counters(cache, queries.shape[0] * keys.shape[1])
    out, keys, values = decode_attention_append(
        queries, keys, values, new_keys, new_values, position, float(scale), counters=counters
    )
    cache.complete_append(keys, values)
    return out


def _kernel_counters(cache: Any, n: int) -> mx.array | None:
    """The cache's own zeroed counters (`StaticKVCache.kernel_counters`), with which the decode kernel merges
    its splits in the same launch; ``None`` (two launches) for caches without them."""
    kernel_counters = getattr(cache, "kernel_counters", None)
    return kernel_counters(n) if callable(kernel_counters) else None


def _decode_kernel_length(
    keys: mx.array, values: mx.array, mask: AttentionMask, cache: Any
) -> tuple[bool, mx.array | None]:
    """Whether one decode query can use the CUDA kernel, and the keys it sees (``None``: all of them)."""
    if keys.shape != values.shape or keys.dtype != values.dtype:
        return False, None
    if mask is None or isinstance(mask, str):
        return _decode_kernel_mode is True, None
    valid_length = getattr(cache, "valid_length", None)
    if not callable(valid_length):
        return False, None
    length = valid_length(mask)
    return length is not None, length


def _group_heads(x: mx.array, n_kv: int, n_rep: int) -> mx.array:
    """``[b, n_heads or 1, ...] → [b, n_kv or 1, n_rep or 1, ...]`` so it lines up with grouped scores."""
    if x.shape[1] == 1:
        return mx.expand_dims(x, 2)
    return x.reshape(x.shape[0], n_kv, n_rep, *x.shape[2:])


def quantized_scaled_dot_product_attention(
    queries: mx.array,
    q_keys: QuantizedArray,
    q_values: QuantizedArray,
    *,
    scale: float,
    mask: AttentionMask = None,
    sinks: mx.array | None = None,
    group_size: int = 64,
    bits: int = 8,
) -> mx.array:
    """Attention on affine-quantized ``(packed, scales, biases)`` keys/values via ``mx.quantized_matmul``.

    Equivalent to dequantizing then attending, without materialising the dequantized cache.
    """
    if len(q_keys) != 3 or len(q_values) != 3:
        raise TypeError("quantized keys/values must be (packed, scales, biases) triples from mx.quantize.")
    k_packed, k_scales, _ = q_keys
    v_packed, v_scales, _ = q_values
    if k_packed.ndim != 4 or k_scales.ndim != 4 or v_scales.ndim != 4:
        raise AttentionShapeError(
            "quantized keys/values must be 4-D [B, n_kv_heads, L, ...]; "
            f"got packed keys {tuple(k_packed.shape)}."
        )
    v_shape = (*v_packed.shape[:3], v_scales.shape[-1] * group_size)
    _check(queries.shape, k_packed.shape, v_shape, k_scales.shape[-1] * group_size, mask, sinks)

    b, n_heads, q_len, d = queries.shape
    n_kv, k_len = k_packed.shape[1], k_packed.shape[2]
    n_rep = n_heads // n_kv
    # GQA: fold each group's heads into the row axis ([B, n_kv, n_rep * Lq, D]) so every matmul has the
    # cache's own batch shape. (Broadcasting the cache over an extra n_rep axis gave wrong heads beyond the
    # first group on MLX 0.32.4's CUDA backend.)
    q = (queries * scale).reshape(b, n_kv, n_rep * q_len, d)
    scores = mx.quantized_matmul(q, *q_keys, transpose=True, group_size=group_size, bits=bits)
    if n_rep > 1:
        scores = scores.reshape(b, n_kv, n_rep, q_len, k_len)

    mask = mask_to_array(mask, q_len, k_len)
    if mask is not None:
        if n_rep > 1:
            mask = _group_heads(mask.reshape((1,) * (4 - mask.ndim) + tuple(mask.shape)), n_kv, n_rep)
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.finfo(scores.dtype).min)
        else:
            scores = scores + mask.astype(scores.dtype)

    if sinks is not None:
        sink_shape = (n_kv, n_rep, 1, 1) if n_rep > 1 else (n_heads, 1, 1)
        sink_col = mx.broadcast_to(sinks.astype(scores.dtype).reshape(sink_shape), (*scores.shape[:-1], 1))
        scores = mx.softmax(mx.concatenate([sink_col, scores], axis=-1), axis=-1, precise=True)[..., 1:]
    else:
        scores = mx.softmax(scores, axis=-1, precise=True)
    scores = scores.reshape(b, n_kv, n_rep * q_len, k_len)
    out = mx.quantized_matmul(scores, *q_values, transpose=False, group_size=group_size, bits=bits)
    return out.reshape(b, n_heads, q_len, out.shape[-1])
