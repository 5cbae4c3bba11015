"""Decode attention (one query token) by split-K flash-decoding on CUDA; ``mx.fast`` elsewhere.

At decode time ``Lq = 1``: the whole cost is streaming K and V once. The CUDA path splits the keys of
every (batch, kv head) across many blocks so the GPU is full even at batch 1, reads each K/V row once
for all query heads of its GQA group, and merges the per-split softmax partials in a second small
kernel. For bf16/fp16 with up to 8 query heads per kv head and D = 64 or 128 the key loop runs on tensor
cores (``mma.sync``, 16 keys per step), a few instructions per key instead of a few hundred; as in
FlashAttention, the softmax weights are rounded to that dtype for the weighted sum of values (scores,
maxima, sums and the accumulator stay float32). Off CUDA
(CPU, Metal) or for shapes the kernel does not cover it calls ``mx.fast.scaled_dot_product_attention``,
which is also the reference the GPU tests compare against.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import mlx.core as mx
from mlx_core.kernels._inputs import inputs_read, kernel_reading
from mlx_core.kernels._scalars import kernel_scalars
from mlx_core.kernels._sources import kernel_source
from mlx_core.kernels._validate import optional_counters, require_array, require_eps, require_float
from mlx_core.kernels.backend import resolve_backend
from mlx_core.kernels.matvec import (
    MatvecWeights,
    apply_matvec,
    checked_residual,
    checked_weights,
    matvec_kernel_supports,
    matvec_launch_shape,
)

_WARPS = 4
_MAX_WARPS = 8
_ROWS_IN_FLIGHT = 2  # key rows each warp loads before using any
_SHARED_FLOATS = 8192  # the block merge stages NW * G * D floats (32 KB) in static shared memory; the mma
# loop's new-token slot adds one warp's worth (<= 36 KB, under the 48 KB static limit with the fold's weights)
_TARGET_BLOCKS = 528  # ~4 blocks of 4 warps per SM on a 132-SM H100
_KEYS_PER_SPLIT = 256  # long caches: more, shorter splits even when the blocks already fill the GPU
_LONG_SPLITS = 66
_MIN_KEYS_PER_SPLIT = 32
_MAX_SPLITS = 256
_MMA_TARGET_WARPS = 1056
_SMS = 132  # an H100's (and H200's) streaming multiprocessors
_WIDE_MIN_SPLITS = 16  # mma_launch: 8-warp blocks when every kv head gets at least this many splits
_FOLD_MAX_SPLITS = 24  # fold_num_splits: key splits per kv head when o_proj is folded into the launch
_MAX_REGS = 64  # G * D / 32 floats of accumulator per lane (and G * D * 16 bytes of shared memory)

ValidLength = int | mx.array | None


_PARTIAL_INPUTS = (
    "queries",
    "keys",
    "values",
    "lengths",
    "position",
    "params",
    "k_new",
    "v_new",
    "q_norm",
    "k_norm",
    "inv_freq",
    "counters",
    "o_w",
    "o_scales",
    "o_biases",
    "o_residual",
)
# inputs a launch may leave out (see _inputs), each named by one that every launch passes
_PARTIAL_ALIASES = {
    # the packed path passes its write position (any one-element array, a scalar too) as `position`: a
    # scalar input has no strides parameter, so the source's `lengths_strides` must then name another one
    "lengths": "position",
    "lengths_strides": "queries_strides",
    "position": "lengths",
    "k_new": "queries",
    "k_new_strides": "queries_strides",
    "v_new": "queries",
    "v_new_strides": "queries_strides",
    "q_norm": "queries",
    "k_norm": "queries",
    "inv_freq": "params",
    "counters": "lengths",
    "o_w": "queries",
    "o_scales": "queries",
    "o_biases": "queries",
    "o_residual": "queries",
}


# With the output projection folded in, the partials and the attention output are scratch that no caller
# sees: they share one float32 output `part` (fewer outputs, less host time per launch), laid out as
# part_o [B, Hq, splits, D], part_ml [B, Hq, splits, 2], then `out` [B, Hq * D] in T from a 16-byte boundary.
_SCRATCH_VIEWS = {
    "part_o": "part",
    "part_ml": "part + static_cast<long long>(B) * Hq * splits * DD",
    "out": "reinterpret_cast<T*>(part + (static_cast<long long>(B) * Hq * splits * (DD + 2) + 3) / 4 * 4)",
}


def _scratch_floats(b: int, hq: int, splits: int, d: int, dtype: mx.Dtype) -> int:
    """Floats of `part` under `_SCRATCH_VIEWS`' layout."""
    return -(-(b * hq * splits * (d + 2)) // 4) * 4 + -(-(b * hq * d * dtype.size) // 4)


def _partial_kernel(read: frozenset[str], scratch: bool) -> Any:
    return kernel_reading(
        "mlx_core_decode_attention_partial",
        _PARTIAL_INPUTS,
        read,
        _PARTIAL_ALIASES,
        ("part", "next_pos", "h") if scratch else ("part_o", "part_ml", "next_pos", "out", "h"),
        "decode_attention_partial.cu",
        ("common.cuh", "matvec_block.cuh"),
        ensure_row_contiguous=False,
        views=_SCRATCH_VIEWS if scratch else None,
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


def _full_lengths(batch: int, length: int) -> mx.array:
    # At least 16 bytes (see mlx_core.kernels._scalars, which caches it); the kernel reads `batch` entries.
    return kernel_scalars((length,) * batch, mx.int32)


def num_splits(batch: int, kv_heads: int, keys: int) -> int:
    """How many key splits pass 1 uses: enough blocks to fill the GPU (~4 per SM), one split per ~256
    keys up to 66 for long caches, and >= 32 keys per split (measured on an H100: benchmarks/NOTES.md)."""
    fill = -(-_TARGET_BLOCKS // (batch * kv_heads))
    long = min(_LONG_SPLITS, -(-keys // _KEYS_PER_SPLIT))
    return max(1, min(max(fill, long), -(-keys // _MIN_KEYS_PER_SPLIT), _MAX_SPLITS))


def mma_num_splits(batch: int, kv_heads: int, keys: int, warps: int = _WARPS) -> int:
    """Key splits for the tensor-core loop: about 1056 warps in the grid (8 per SM of an H100, enough to keep
    HBM busy since each warp has a 16-key tile of 8 KB in flight), and at least one tile per warp
    (measured on an H100: benchmarks/NOTES.md); ``warps`` per block."""
    fill = -(-_MMA_TARGET_WARPS // (batch * kv_heads * warps))
    return max(1, min(fill, -(-keys // (16 * warps)), _MAX_SPLITS))


def fold_num_splits(batch: int, kv_heads: int, keys: int, warps: int = _WARPS) -> int:
    """Key splits of the tensor-core loop in a launch that also applies o_proj: `mma_num_splits`, at most
    `_FOLD_MAX_SPLITS`. There the last block per kv head merges and o_proj waits for every merge, so splits
    beyond what the key loop needs cost time. Timeline on an H100 (Llama-3.2-1B bf16 layer, 8 kv heads, 4
    warps, a 4096-row cache; µs per launch at positions 640 / 1500 / 3000, one process): 33 splits 14.3 /
    15.0 / 16.3, 24 splits 13.1 / 13.6 / 14.9, 16 splits 12.8 / 14.1 / 15.4. Across two calls the gain was
    0.4 / 0.9 / 0.1 µs (benchmarks/NOTES.md, fourteenth session)."""
    return min(mma_num_splits(batch, kv_heads, keys, warps), _FOLD_MAX_SPLITS)


def fold_splits_bound(splits: int) -> int:
    """The kernel's FOLD_SPLITS for a launch of ``splits`` key splits: the size of the in-launch merge's
    per-split arrays. 32 covers every launch with o_proj folded in (`_FOLD_MAX_SPLITS`) and the wide
    launch at B = 1 with 8 kv heads (`mma_launch`); more splits take `_MAX_SPLITS`. Two instantiations, not
    one per cache length."""
    return 32 if splits <= 32 else _MAX_SPLITS


def mma_launch(batch: int, kv_heads: int, keys: int) -> tuple[int, int]:
    """Warps per block and key splits of the tensor-core loop without a folded output projection.

    Few kv heads and a long cache (``batch * kv_heads * 16 <= 132``, e.g. one sequence with 8 kv heads, and at
    least two 16-key tiles per warp): one wave of 8-warp blocks, one per SM, so each kv head has few splits
    (16) and a short merge. ncu on an H100 (base clocks; B = 1, 8 kv heads, D = 128, bf16; calls 87 and 88):
    12.2 / 11.9 µs at L = 4k against 13.6 / 13.5 for 4 warps × 33 splits, level at 16k (31.7 / 30.4 against
    30.8 / 31.9) and 98.4 against 101.3 at 64k. At 1k (one tile per warp) 4 warps × 16 splits was 0.4 µs
    faster in both calls, so shorter caches keep it. 8-warp blocks need ~140 registers a thread: an SM holds
    one, and more splits would only add a second wave. Otherwise 4 warps and `mma_num_splits`.
    """
    splits = _SMS // (batch * kv_heads)
    if splits >= _WIDE_MIN_SPLITS and keys >= splits * _MAX_WARPS * 32:
        return _MAX_WARPS, min(splits, _MAX_SPLITS)
    return _WARPS, mma_num_splits(batch, kv_heads, keys)


def kernel_supports(q: mx.array, k: mx.array) -> bool:
    """Whether the CUDA kernel covers these shapes (else the mx.fast path is used)."""
    return _kernel_covers(q.shape[1], k)


def _mma_covers(dtype: mx.Dtype, group: int, d: int) -> bool:
    """Whether the tensor-core key loop applies: 16-bit dtypes, <= 8 query heads per kv head, D 64 or 128."""
    return dtype in (mx.bfloat16, mx.float16) and group <= 8 and d in (64, 128)


def _kernel_covers(n_heads: int, k: mx.array) -> bool:
    d = k.shape[3]
    group = n_heads // k.shape[1]
    return d % 32 == 0 and d <= 1024 and group * (d // 32) <= _MAX_REGS and k.shape[2] >= 1 and k.size < 2**31


@dataclass(frozen=True)
class TokenPrep:
    """How the packed kernel prepares the new token (see `decode_attention_qkv`).

    ``rope``: 0 none, 1 rotate halves (``traditional=False``), 2 interleaved pairs; ``inv_freq`` float32
    ``[D / 2]`` (angle = position × inv_freq); ``input_scale`` multiplies q and k before the rotation.
    """

    q_norm: mx.array | None
    k_norm: mx.array | None
    eps: float
    rope: int
    inv_freq: mx.array | None
    input_scale: float


@dataclass(frozen=True)
class OutputProjection:
    """The attention's output projection, ``residual + W @ attention``, for `decode_attention_qkv` to fold in.

    ``weights`` is a bias-free o_proj (`MatvecWeights`: ``[O, Hq * D]`` in the activation dtype, or
    affine-quantized); ``residual`` is ``[B, 1, O]`` (the block's input). The same computation as
    ``fused_matvec(out, ..., residual=residual)`` with those weights.
    """

    weights: MatvecWeights
    residual: mx.array


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
    packed: tuple[int, TokenPrep] | None = None,
    warps: int | None = None,
    rows_in_flight: int | None = None,
    mma: bool | None = None,
    counters: mx.array | None = None,
) -> mx.array:
    """Launch both CUDA passes (no validation); ``lengths`` is int32 ``[B]``.

    ``append=(k_new, v_new)`` ([B, Hkv, 1, D]): row ``lengths - 1`` is that new token, written into ``k``
    and ``v`` in place by the kernel (see :func:`decode_attention_append`). ``packed=(Hq, prep)``: ``q``
    is the fused projection ``[B, 1, (Hq + 2 Hkv) * D]`` of the new token, prepared by the kernel and
    appended likewise, ``lengths`` is the write position (one element, any shape), and the result is
    ``[B, 1, Hq * D]`` (see :func:`decode_attention_qkv`). ``splits``, ``warps`` (per block) and
    ``rows_in_flight`` (key rows each warp of the SIMT loop loads before using any) override the launch
    shape (benchmarks sweep them).
    ``mma=False`` keeps the SIMT key loop where the tensor-core loop would apply (bf16/fp16, <= 8 query
    heads per kv head, D 64 or 128; on GPUs before sm_80 the SIMT loop is compiled in either way).
    ``counters`` (validated, zeroed int32, >= B * Hkv entries) merges the splits in the same launch.
    """
    shape = _LaunchOverrides(splits, warps, rows_in_flight, mma)
    out, _ = _launch(
        q,
        k,
        v,
        scale,
        lengths,
        shape=shape,
        init_value=init_value,
        append=append,
        packed=packed,
        counters=counters,
    )
    return out


class _LaunchOverrides(NamedTuple):
    """Launch-shape overrides of `decode_attention_cuda` (``None``: the tuned default; benchmarks sweep
    them)."""

    splits: int | None = None
    warps: int | None = None
    rows_in_flight: int | None = None
    mma: bool | None = None


_DEFAULT_LAUNCH = _LaunchOverrides()


def _launch(
    q: mx.array,
    k: mx.array,
    v: mx.array,
    scale: float,
    lengths: mx.array,
    *,
    shape: _LaunchOverrides = _DEFAULT_LAUNCH,
    init_value: float | None = None,
    append: tuple[mx.array, mx.array] | None = None,
    packed: tuple[int, TokenPrep] | None = None,
    counters: mx.array | None = None,
    oproj: OutputProjection | None = None,
) -> tuple[mx.array, mx.array]:
    """Both passes; returns the output and (meaningful when packed) the int32 ``[4]`` position + 1.

    With ``counters`` (int32, >= B * Hkv entries, zero) pass 1's last block per kv head merges the splits
    (one launch instead of two) and leaves the counters zero; ``init_value`` is then not used. With
    ``oproj`` too (validated, covered by the matvec kernel; counters >= B * Hkv + 3) the same launch
    applies the output projection and the output is ``[B, 1, O]``.
    """
    b, d = q.shape[0], k.shape[3]
    hkv, lk = k.shape[1], k.shape[2]
    hq = packed[0] if packed is not None else q.shape[1]
    mma = shape.mma is not False and _mma_covers(q.dtype, hq // hkv, d)
    fold_proj = oproj if counters is not None else None
    # With the output projection the launch takes the matvec kernel's shape for it (the attention's time
    # hardly depends on its warps per block or its splits: benchmarks/NOTES.md, ninth session).
    o_weights = fold_proj.weights if fold_proj is not None else None
    o_out = o_weights.weight.shape[0] if o_weights is not None else 0
    o_warps, o_rows = matvec_launch_shape(o_out, o_weights.bits) if o_weights is not None else (_WARPS, 1)
    # <= 8 warps: a block of <= 256 threads launches whatever registers NVRTC gives the kernel (a 512-thread
    # block needing > 128 registers per thread fails to launch, and MLX does not report it).
    # Default shape: o_proj's when it is folded in, else the tensor-core loop's own (`mma_launch`).
    tuned = mma and fold_proj is None and shape.warps is None and shape.splits is None
    default_warps, default_splits = mma_launch(b, hkv, lk) if tuned else (o_warps, None)
    warps = max(1, min(shape.warps or default_warps, _MAX_WARPS, _SHARED_FLOATS // ((hq // hkv) * d)))
    if warps != default_warps:  # capped by shared memory: the splits follow the warps
        default_splits = None
    splits = (
        shape.splits
        or default_splits
        or (
            (fold_num_splits if fold_proj is not None else mma_num_splits)(b, hkv, lk, warps)
            if mma
            else num_splits(b, hkv, lk)
        )
    )
    rows_in_flight = max(1, shape.rows_in_flight or _ROWS_IN_FLIGHT)  # < 1 would never advance the key loop
    prep = packed[1] if packed is not None else None
    params = kernel_scalars(
        (float(scale), prep.eps, prep.input_scale) if prep is not None else (float(scale),)
    )
    o_blocks = -(-o_out // (warps * o_rows))
    o_quant = (
        (o_weights.scales, o_weights.biases) if o_weights is not None and o_weights.bits else (None, None)
    )
    read, inputs = inputs_read(
        _PARTIAL_INPUTS,
        {  # None: not read by this launch's template settings, so not passed
            "queries": q,
            "keys": k,
            "values": v,
            "lengths": lengths if packed is None else None,
            "position": lengths if packed is not None else None,
            "params": params,
            "k_new": append[0] if append is not None else None,
            "v_new": append[1] if append is not None else None,
            "q_norm": prep.q_norm if prep is not None else None,
            "k_norm": prep.k_norm if prep is not None else None,
            "inv_freq": prep.inv_freq if prep is not None and prep.rope != 0 else None,
            "counters": counters,
            "o_w": o_weights.weight if o_weights is not None else None,
            "o_scales": o_quant[0],
            "o_biases": o_quant[1],
            "o_residual": fold_proj.residual if fold_proj is not None else None,
        },
    )
    scratch = fold_proj is not None
    outputs = _partial_kernel(read, scratch)(
        inputs=inputs,
        template=[
            ("T", q.dtype),
            ("G", hq // hkv),
            ("EPL", d // 32),
            ("NW", warps),
            ("RIF", rows_in_flight),
            ("APPEND", append is not None),
            ("PACKED", packed is not None),
            ("QK_NORM", prep is not None and prep.q_norm is not None),
            ("ROPE", prep.rope if prep is not None else 0),
            ("FOLD", counters is not None),
            ("MMA", mma),
            ("OPROJ", fold_proj is not None),
            ("O_IN", hq * d),
            ("O_OUT", o_out),
            ("O_NB", b),
            ("O_QB", (o_weights.bits or 0) if o_weights is not None else 0),
            ("O_GS", o_weights.group_size if o_weights is not None else 64),
            ("O_RPW", o_rows),
            ("FOLD_SPLITS", fold_splits_bound(splits)),
        ],
        grid=((b * hkv * splits + o_blocks) * warps * 32, 1, 1),
        threadgroup=(warps * 32, 1, 1),
        # next_pos (and the unwritten out / h) >= 16 bytes: see _scalars
        output_shapes=[(_scratch_floats(b, hq, splits, d, q.dtype),), (4,), (b, 1, o_out)]
        if scratch
        else [
            (b, hq, splits, d),
            (b, hq, splits, 2),
            (4,),
            (b, 1, hq * d) if counters is not None else (16 // q.dtype.size,),
            (16 // q.dtype.size,),
        ],
        output_dtypes=[mx.float32, mx.int32, q.dtype]
        if scratch
        else [mx.float32, mx.float32, mx.int32, q.dtype, q.dtype],
    )
    if scratch:
        _, next_pos, projected = outputs
        return projected, next_pos
    part_o, part_ml, next_pos, folded, _ = outputs
    if counters is not None:
        return (folded if packed is not None else folded.reshape(b, hq, 1, d)), next_pos
    threads = max(d, 32)  # per split group; groups of threads share a row's splits
    groups = max(1, min(8, 512 // threads))
    (out,) = _combine_kernel()(
        inputs=[part_o, part_ml],
        template=[("T", q.dtype), ("MAX_SPLITS", _MAX_SPLITS), ("SG", groups)],
        grid=(b * hq * groups * threads, 1, 1),
        threadgroup=(groups * threads, 1, 1),
        output_shapes=[(b, 1, hq * d) if packed is not None else (b, hq, 1, d)],
        output_dtypes=[q.dtype],
        init_value=init_value,
    )
    return out, next_pos


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


def _checked_counters(counters: Any, batch: int, kv_heads: int) -> mx.array | None:
    """``counters`` validated: ``None`` or an int32 ``[N]`` array with ``N >= batch * kv_heads``."""
    n = batch * kv_heads
    return optional_counters(counters, n, f"a zeroed int32 [N] array with N >= B * Hkv = {n}")


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
    counters: mx.array | None = None,
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
        counters: optional evaluated, zeroed int32 ``[N]`` array, ``N >= B * Hkv``, that the caller owns
            (e.g. `StaticKVCache.kernel_counters`). On CUDA the kernel's last block per kv head then merges
            the splits: one launch instead of two; the kernel leaves it zero. Launches that may run
            concurrently must not share it (one per cache is safe: a cache's steps depend on each other).
        backend: ``None``/``"auto"``, ``"fallback"`` (mx.fast), ``"cuda"``.

    Returns:
        ``[B, Hq, 1, D]`` in ``q``'s dtype.
    """
    q, k, v = _checked(q, k, v, scale)
    lengths = _lengths_array(valid_length, q.shape[0], k.shape[2])
    counters = _checked_counters(counters, q.shape[0], k.shape[1])
    impl = resolve_backend(backend, q.dtype)
    if impl == "cuda" and kernel_supports(q, k):
        if lengths is None:
            lengths = _full_lengths(q.shape[0], k.shape[2])
        return decode_attention_cuda(q, k, v, float(scale), lengths, counters=counters)
    return _fallback(q, k, v, float(scale), valid_length, lengths)


def _position_array(position: Any, capacity: int) -> mx.array:
    """``position`` (the cache row the new token goes to) as an int32 array, validated.

    An int must lie in ``[0, capacity)``. An array is read on the device and cannot be checked without a
    host sync: the caller guarantees the range (`StaticKVCache` checks its capacity in eager mode; a compiled
    loop stops at `room`). On CUDA an out-of-range array position is clamped to the last row.
    """
    if isinstance(position, bool) or not isinstance(position, (int, mx.array)):
        raise TypeError(f"position must be an int or an integer mx.array, got {type(position).__name__}.")
    if isinstance(position, int):
        if not 0 <= position < capacity:
            raise ValueError(f"position={position} is outside the cache's {capacity} rows [0, {capacity}).")
        return mx.array(position, dtype=mx.int32)
    if not mx.issubdtype(position.dtype, mx.integer):
        raise TypeError(f"position has dtype {position.dtype}; use an integer array.")
    if position.size != 1:
        raise ValueError(f"position must be an int or a one-element int array, got shape {position.shape}.")
    return position.astype(mx.int32)


def decode_attention_append(
    q: mx.array,
    k_cache: mx.array,
    v_cache: mx.array,
    k_new: mx.array,
    v_new: mx.array,
    position: int | mx.array,
    scale: float,
    *,
    counters: mx.array | None = None,
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
    device, so a compiled step keeps fixed shapes). ``counters``: as for :func:`decode_attention` (one
    launch instead of two on CUDA).
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
    pos = _position_array(position, k_cache.shape[2])
    lengths = mx.broadcast_to(pos.reshape(-1) + 1, (q.shape[0],))
    counters = _checked_counters(counters, q.shape[0], k_cache.shape[1])
    impl = resolve_backend(backend, q.dtype)
    if impl == "cuda" and kernel_supports(q, k_cache):
        out = decode_attention_cuda(
            q, k_cache, v_cache, float(scale), lengths, append=(k_new, v_new), counters=counters
        )
        return out, k_cache, v_cache
    start = pos.reshape(1)
    k_cache = mx.slice_update(k_cache, k_new, start, axes=(2,))
    v_cache = mx.slice_update(v_cache, v_new, start, axes=(2,))
    out = decode_attention(q, k_cache, v_cache, scale, pos + 1, backend=backend)
    return out, k_cache, v_cache


def _rope_mode(inv_freq: mx.array | None, traditional: bool, head_dim: int) -> int:
    """The kernel's ROPE template value; ValueError for a table that does not match ``head_dim``."""
    if inv_freq is None:
        return 0
    inv_freq = require_array("rope_inv_freq", inv_freq)
    if inv_freq.shape != (head_dim // 2,) or inv_freq.dtype != mx.float32:
        raise ValueError(
            f"rope_inv_freq must be float32 [{head_dim // 2}] (head_dim / 2), got {tuple(inv_freq.shape)} "
            f"{inv_freq.dtype}."
        )
    return 2 if traditional else 1


def decode_attention_qkv(
    qkv: mx.array,
    k_cache: mx.array,
    v_cache: mx.array,
    position: int | mx.array,
    scale: float,
    *,
    n_heads: int,
    q_norm: mx.array | None = None,
    k_norm: mx.array | None = None,
    eps: float = 1e-6,
    rope_inv_freq: mx.array | None = None,
    rope_traditional: bool = False,
    rope_input_scale: float = 1.0,
    counters: mx.array | None = None,
    output_projection: OutputProjection | None = None,
    backend: str | None = None,
) -> tuple[mx.array, mx.array, mx.array, mx.array]:
    """Decode attention straight from a fused q/k/v projection: prepare, append and attend in one kernel.

    ``qkv`` is ``[B, 1, (n_heads + 2 Hkv) * D]`` (a ``qkv_proj`` output: queries, keys, values of one
    token). Per head, queries and keys get RMSNorm (``q_norm``/``k_norm`` ``[D]``, Qwen3's q/k-norm)
    and RoPE at ``position`` (angle ``position * rope_inv_freq[j]``, after multiplying by
    ``rope_input_scale``; ``rope_traditional`` rotates interleaved pairs instead of halves); the key and
    value are appended at row ``position`` of the fixed-size caches ``[B, Hkv, S, D]`` and the query
    attends over rows ``[0, position]``. Returns ``(out [B, 1, n_heads * D], k_cache, v_cache,
    position + 1)``: ``out`` in the layout ``o_proj`` takes, and the cache's next position as an int32
    array shaped like ``position`` (on CUDA the kernel writes it, saving a launch per layer).

    On CUDA it is one split-K kernel plus the merge, and the caches are updated *in place* (same ownership
    rule as :func:`decode_attention_append`). ``counters`` (optional: an evaluated, zeroed int32 ``[N]``
    array with ``N >= B * Hkv`` that the caller owns, e.g. `StaticKVCache.kernel_counters`) lets the
    kernel's last block per kv head do the merge, saving the second launch; the kernel leaves it zero.
    Launches that may run concurrently must not share it (one per cache is safe).
    ``output_projection`` (an `OutputProjection`) applies the attention's output projection and residual
    add: the first result is then ``residual + W_o @ out`` ``[B, 1, O]``. With ``counters`` of at least
    ``B * Hkv + 3`` entries the CUDA kernel does it in the same launch (its last blocks wait for the
    merged heads), saving a launch per layer; otherwise `fused_matvec` runs after it. Elsewhere it is the
    same computation as MLX ops (``mx.fast.rms_norm``, ``mx.fast.rope``, ``mx.slice_update``,
    ``mx.fast`` attention).
    """
    qkv = require_array("qkv", qkv)
    k_cache = require_array("k_cache", k_cache)
    v_cache = require_array("v_cache", v_cache)
    require_float("qkv", qkv)
    if k_cache.ndim != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(
            f"k_cache and v_cache must both be [B, Hkv, S, D], got {tuple(k_cache.shape)} and "
            f"{tuple(v_cache.shape)}."
        )
    b, hkv, _, d = k_cache.shape
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads <= 0 or n_heads % hkv:
        raise ValueError(
            f"n_heads must be a positive multiple of the cache's {hkv} kv heads, got {n_heads!r}."
        )
    width = (n_heads + 2 * hkv) * d
    if qkv.shape != (b, 1, width):
        raise ValueError(
            f"qkv must be [B, 1, (n_heads + 2 * Hkv) * D] = {(b, 1, width)} for this cache, got "
            f"{tuple(qkv.shape)}."
        )
    if not qkv.dtype == k_cache.dtype == v_cache.dtype:
        raise TypeError(f"qkv and the caches must share a dtype, got {qkv.dtype} and {k_cache.dtype}.")
    if (q_norm is None) != (k_norm is None):
        raise ValueError("pass both q_norm and k_norm, or neither.")
    for name, w in (("q_norm", q_norm), ("k_norm", k_norm)):
        if w is not None and (require_array(name, w).shape != (d,) or w.dtype != qkv.dtype):
            raise ValueError(f"{name} must be [{d}] in {qkv.dtype}, got {tuple(w.shape)} {w.dtype}.")
    eps = require_eps(eps)
    rope = _rope_mode(rope_inv_freq, rope_traditional, d)
    pos = _position_array(position, k_cache.shape[2])
    counters = _checked_counters(counters, b, hkv)
    proj = _checked_projection(output_projection, b, n_heads * d, qkv.dtype)
    impl = resolve_backend(backend, qkv.dtype)
    if impl == "cuda" and _kernel_covers(n_heads, k_cache) and (rope != 2 or (d // 32) % 2 == 0):
        prep = TokenPrep(q_norm, k_norm, eps, rope, rope_inv_freq, float(rope_input_scale))
        fold_proj = (
            proj if proj is not None and _projection_folds(proj, counters, b, hkv, n_heads * d) else None
        )
        out, next_pos = _launch(
            qkv,
            k_cache,
            v_cache,
            float(scale),
            pos,  # one element, read as lengths[0]: no reshape primitive per layer
            packed=(n_heads, prep),
            counters=counters,
            oproj=fold_proj,
        )
        if proj is not None and fold_proj is None:
            out = _project(out, proj)
        return out, k_cache, v_cache, next_pos[:1].reshape(pos.shape)
    q, k, v = mx.split(qkv, [n_heads * d, (n_heads + hkv) * d], axis=-1)
    q = q.reshape(b, 1, n_heads, d)
    k = k.reshape(b, 1, hkv, d)
    if q_norm is not None and k_norm is not None:
        q, k = mx.fast.rms_norm(q, q_norm, eps), mx.fast.rms_norm(k, k_norm, eps)
    q, k = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3)
    v = v.reshape(b, 1, hkv, d).transpose(0, 2, 1, 3)
    if rope_inv_freq is not None:
        if rope_input_scale != 1.0:
            q, k = q * rope_input_scale, k * rope_input_scale
        freqs = 1.0 / rope_inv_freq
        q, k = (
            mx.fast.rope(a, d, traditional=rope_traditional, base=None, scale=1.0, offset=pos, freqs=freqs)
            for a in (q, k)
        )
    out, k_cache, v_cache = decode_attention_append(q, k_cache, v_cache, k, v, pos, scale, backend="fallback")
    out = out.transpose(0, 2, 1, 3).reshape(b, 1, n_heads * d)
    if proj is not None:
        out = _project(out, proj, backend="fallback")
    return out, k_cache, v_cache, pos + 1


def _checked_projection(proj: Any, batch: int, in_features: int, dtype: mx.Dtype) -> OutputProjection | None:
    """Validate an `OutputProjection` against the attention output ``[B, 1, in_features]``."""
    if proj is None:
        return None
    if not isinstance(proj, OutputProjection):
        raise TypeError(f"output_projection must be an OutputProjection, got {type(proj).__name__}.")
    w = proj.weights
    if not isinstance(w, MatvecWeights):
        raise TypeError(f"output_projection.weights must be MatvecWeights, got {type(w).__name__}.")
    checked_weights(
        w.weight, w.scales, w.biases, w.bits, w.group_size, in_features, dtype, "the attention output"
    )
    checked_residual(proj.residual, (batch, 1, w.weight.shape[0]), dtype)
    return proj


def _projection_folds(
    proj: OutputProjection, counters: mx.array | None, batch: int, kv_heads: int, in_features: int
) -> bool:
    """Whether the CUDA kernel can apply ``proj`` itself: counters for the fold and the launch's work tickets,
    and shapes the matvec kernel covers."""
    return (
        counters is not None
        and counters.size >= batch * kv_heads + 3
        and matvec_kernel_supports(
            batch, in_features, proj.residual.dtype, proj.weights.bits, proj.weights.group_size
        )
    )


def _project(out: mx.array, proj: OutputProjection, backend: str | None = None) -> mx.array:
    """``residual + W_o @ out`` as a launch of its own (``proj`` validated by `_checked_projection`)."""
    return apply_matvec(out, proj.weights, residual=proj.residual, backend=backend)
