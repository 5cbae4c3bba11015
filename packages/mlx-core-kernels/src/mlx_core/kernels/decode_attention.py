"""Decode attention (one query token) by split-K flash-decoding on CUDA; ``mx.fast`` elsewhere.

At decode time ``Lq = 1``: the whole cost is streaming K and V once. The CUDA path splits the keys of
every (batch, kv head) across many blocks so the GPU is full even at batch 1, reads each K/V row once
for all query heads of its GQA group, and merges the per-split softmax partials in a second small
kernel. Off CUDA (CPU, Metal) or for shapes the kernel does not cover it calls
``mx.fast.scaled_dot_product_attention``, which is also the reference the GPU tests compare against.
"""

from __future__ import annotations

import functools
from typing import Any

import mlx.core as mx
from mlx_core.kernels._sources import kernel_source
from mlx_core.kernels._validate import require_array, require_float
from mlx_core.kernels.backend import resolve_backend

_WARPS = 4
_TARGET_BLOCKS = 264  # ~2 blocks per SM on a 132-SM H100; more splits only add merge work
_MIN_KEYS_PER_SPLIT = 32
_MAX_SPLITS = 256
_MAX_REGS = 64  # G * D / 32 floats of accumulator per lane (and G * D * 16 bytes of shared memory)

ValidLength = int | mx.array | None


@functools.cache
def _partial_kernel() -> Any:
    return mx.fast.cuda_kernel(
        name="mlx_core_decode_attention_partial",
        input_names=["queries", "keys", "values", "lengths", "softmax_scale", "k_new", "v_new"],
        output_names=["part_o", "part_ml"],
        source=kernel_source("decode_attention_partial.cu"),
        header=kernel_source("common.cuh"),
        ensure_row_contiguous=False,
    )


@functools.cache
def _combine_kernel() -> Any:
    return mx.fast.cuda_kernel(
        name="mlx_core_decode_attention_combine",
        input_names=["part_o", "part_ml"],
        output_names=["out"],
        source=kernel_source("decode_attention_combine.cu"),
        header=kernel_source("common.cuh"),
        ensure_row_contiguous=True,
    )


@functools.cache
def _scale_array(scale: float) -> mx.array:
    return mx.array([scale], dtype=mx.float32)


@functools.cache
def _full_lengths(batch: int, length: int) -> mx.array:
    return mx.full((batch,), length, dtype=mx.int32)


def num_splits(batch: int, kv_heads: int, keys: int) -> int:
    """How many key splits pass 1 uses: enough blocks to fill the GPU, >= 64 keys per split."""
    want = -(-_TARGET_BLOCKS // (batch * kv_heads))
    return max(1, min(want, -(-keys // _MIN_KEYS_PER_SPLIT), _MAX_SPLITS))


def kernel_supports(q: mx.array, k: mx.array) -> bool:
    """Whether the CUDA kernel covers these shapes (else the mx.fast path is used)."""
    _, hq, _, d = q.shape
    group = hq // k.shape[1]
    return d % 32 == 0 and d <= 1024 and group * (d // 32) <= _MAX_REGS and k.shape[2] >= 1 and k.size < 2**31


def decode_attention_cuda(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    scale: float,
    lengths: mx.array,
    *,
    splits: int | None = None,
    init_value: float | None = None,
    append: tuple[mx.array, mx.array] | None = None,
) -> mx.array:
    """Launch both CUDA passes (no validation); ``lengths`` is int32 ``[B]``.

    ``append=(k_new, v_new)`` ([B, Hkv, 1, D]): row ``lengths - 1`` is that new token, written into ``k``
    and ``v`` in place by the kernel (see :func:`decode_attention_append`).
    """
    b, hq, _, d = q.shape
    hkv, lk = k.shape[1], k.shape[2]
    splits = splits or num_splits(b, hkv, lk)
    k_new, v_new = append if append is not None else (q, q)  # unread placeholders without APPEND
    part_o, part_ml = _partial_kernel()(
        inputs=[q, k, v, lengths, _scale_array(float(scale)), k_new, v_new],
        template=[
            ("T", q.dtype),
            ("G", hq // hkv),
            ("EPL", d // 32),
            ("NW", _WARPS),
            ("APPEND", append is not None),
        ],
        grid=(b * hkv * splits * _WARPS * 32, 1, 1),
        threadgroup=(_WARPS * 32, 1, 1),
        output_shapes=[(b, hq, splits, d), (b, hq, splits, 2)],
        output_dtypes=[mx.float32, mx.float32],
    )
    (out,) = _combine_kernel()(
        inputs=[part_o, part_ml],
        template=[("T", q.dtype), ("MAX_SPLITS", _MAX_SPLITS)],
        grid=(b * hq * max(d, 32), 1, 1),
        threadgroup=(max(d, 32), 1, 1),
        output_shapes=[(b, hq, 1, d)],
        output_dtypes=[q.dtype],
        init_value=init_value,
    )
    return out


def _lengths_array(valid_length: ValidLength, batch: int, keys: int) -> mx.array | None:
    """``valid_length`` as int32 ``[B]`` (``None`` when every key is valid), validated."""
    if valid_length is None:
        return None
    if isinstance(valid_length, bool) or not isinstance(valid_length, (int, mx.array)):
        raise TypeError(
            f"valid_length must be None, an int or an integer mx.array, got {type(valid_length).__name__}."
        )
    if isinstance(valid_length, int):
        if not 1 <= valid_length <= keys:
            raise ValueError(f"valid_length={valid_length} must be in [1, {keys}] (the keys' length axis).")
        return _full_lengths(batch, valid_length)
    if not mx.issubdtype(valid_length.dtype, mx.integer):
        raise TypeError(f"valid_length has dtype {valid_length.dtype}; use an integer array.")
    if valid_length.ndim > 1 or (valid_length.ndim == 1 and valid_length.shape[0] not in (1, batch)):
        raise ValueError(
            f"valid_length must be a scalar or [B] = [{batch}], got shape {tuple(valid_length.shape)}."
        )
    return mx.broadcast_to(valid_length.astype(mx.int32).reshape(-1), (batch,))


def _fallback(
    q: mx.array, k: mx.array, v: mx.array, scale: float, valid_length: ValidLength, lengths: mx.array | None
) -> mx.array:
    if lengths is None:
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
    if isinstance(valid_length, int):
        return mx.fast.scaled_dot_product_attention(
            q, k[:, :, :valid_length], v[:, :, :valid_length], scale=scale
        )
    mask = mx.arange(k.shape[2])[None, :] < lengths[:, None]
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask[:, None, None, :])


def _checked(q: Any, k: Any, v: Any, scale: Any) -> tuple[mx.array, mx.array, mx.array]:
    """Validate decode-attention operands (types, ranks, shapes, dtypes); return them as arrays."""
    q = require_array("q", q)
    k = require_array("k", k)
    v = require_array("v", v)
    for name, a in (("q", q), ("k", k), ("v", v)):
        require_float(name, a)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a Python float, got {type(scale).__name__}.")
    if q.ndim != 4 or q.shape[2] != 1:
        raise ValueError(f"q must be [B, Hq, 1, D] (one query token), got shape {tuple(q.shape)}.")
    if k.ndim != 4 or k.shape != v.shape:
        raise ValueError(
            f"k and v must both be [B, Hkv, Lk, D] with equal shapes, "
            f"got {tuple(k.shape)} and {tuple(v.shape)}."
        )
    if k.shape[0] != q.shape[0] or k.shape[3] != q.shape[3]:
        raise ValueError(f"batch or head dim differ: q {tuple(q.shape)} vs k {tuple(k.shape)}.")
    if k.shape[1] == 0 or q.shape[1] % k.shape[1] != 0:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of kv heads ({k.shape[1]}).")
    if k.shape[2] == 0:
        raise ValueError("k and v have no keys (Lk = 0).")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}.")
    return q, k, v


def decode_attention(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    scale: float,
    valid_length: ValidLength = None,
    *,
    backend: str | None = None,
) -> mx.array:
    """Softmax attention of one query token over a KV cache, GQA-aware.

    Args:
        q: queries ``[B, Hq, 1, D]``.
        k, v: keys and values ``[B, Hkv, Lk, D]`` with ``Hq % Hkv == 0``; any strides (a view of a
            larger pre-allocated cache is read in place on CUDA).
        scale: multiplier of ``q @ k.T`` (usually ``D ** -0.5``).
        valid_length: attend to the first ``valid_length`` keys only: ``None`` (all ``Lk``), an int,
            or an integer ``mx.array`` scalar / ``[B]`` (per batch entry, read on the device so a
            compiled decode step keeps fixed shapes).
        backend: ``None``/``"auto"``, ``"fallback"`` (mx.fast), ``"cuda"``.

    Returns:
        ``[B, Hq, 1, D]`` in ``q``'s dtype.
    """
    q, k, v = _checked(q, k, v, scale)
    lengths = _lengths_array(valid_length, q.shape[0], k.shape[2])
    impl = resolve_backend(backend, q.dtype)
    if impl == "cuda" and kernel_supports(q, k):
        if lengths is None:
            lengths = _full_lengths(q.shape[0], k.shape[2])
        return decode_attention_cuda(q, k, v, float(scale), lengths)
    return _fallback(q, k, v, float(scale), valid_length, lengths)


def decode_attention_append(
    q: mx.array,
    k_cache: mx.array,
    v_cache: mx.array,
    k_new: mx.array,
    v_new: mx.array,
    position: int | mx.array,
    scale: float,
    *,
    backend: str | None = None,
) -> tuple[mx.array, mx.array, mx.array]:
    """Append one token's key/value at row ``position`` of fixed-size caches and attend over rows
    ``[0, position]``: ``(out [B, Hq, 1, D], k_cache, v_cache)`` with the caches holding the new row.

    On CUDA the new row is written *in place* by the attention kernel itself, so a decode step neither
    copies the cache buffers (``mx.slice_update`` copies a whole buffer whenever MLX cannot donate it,
    e.g. while an earlier step that reads it is still in flight) nor launches separate write kernels;
    the returned caches are the same arrays. The caller must own ``k_cache``/``v_cache``: evaluated,
    row-strided buffers that nothing else reads as a snapshot (a `StaticKVCache`'s buffers). Elsewhere
    (CPU, Metal, shapes the kernel does not cover) it is ``mx.slice_update`` + :func:`decode_attention`
    and the returned caches are new arrays. ``position`` is an int or an int32 scalar array (on the
    device, so a compiled step keeps fixed shapes).
    """
    q, k_cache, v_cache = _checked(q, k_cache, v_cache, scale)
    k_new = require_array("k_new", k_new)
    v_new = require_array("v_new", v_new)
    if k_new.ndim != 4 or k_new.shape[2] != 1 or k_new.shape != v_new.shape:
        raise ValueError(
            f"k_new and v_new must both be [B, Hkv, 1, D], got {tuple(k_new.shape)} and {tuple(v_new.shape)}."
        )
    if k_new.shape[:2] != k_cache.shape[:2] or k_new.shape[3] != k_cache.shape[3]:
        raise ValueError(f"k_new {tuple(k_new.shape)} does not match the cache {tuple(k_cache.shape)}.")
    if k_new.dtype != k_cache.dtype or v_new.dtype != v_cache.dtype:
        raise TypeError(f"new keys/values ({k_new.dtype}) must have the cache dtype ({k_cache.dtype}).")
    pos = mx.array(position, dtype=mx.int32) if isinstance(position, int) else position.astype(mx.int32)
    lengths = mx.broadcast_to(pos.reshape(-1) + 1, (q.shape[0],))
    impl = resolve_backend(backend, q.dtype)
    if impl == "cuda" and kernel_supports(q, k_cache):
        out = decode_attention_cuda(q, k_cache, v_cache, float(scale), lengths, append=(k_new, v_new))
        return out, k_cache, v_cache
    start = pos.reshape(1)
    k_cache = mx.slice_update(k_cache, k_new, start, axes=(2,))
    v_cache = mx.slice_update(v_cache, v_new, start, axes=(2,))
    out = decode_attention(q, k_cache, v_cache, scale, pos + 1, backend=backend)
    return out, k_cache, v_cache
