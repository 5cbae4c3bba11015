"""Fused LayerNorm-modulate, ``(1 + scale) * LayerNorm(x) + shift`` (adaLN of DiT-style models).

LayerNorm has no affine parameters and runs over the last axis; statistics are float32 and
numerically stable (two-pass / Welford-Chan merging, never ``E[x²] − mean²`` in low precision).
``shift``/``scale`` may be shared ``[D]``, per sample ``[B, D]`` / ``[B, 1, D]``, or per token
``[B, S, D]``; a 2-D ``x`` is ``[S, D]``.
"""

from __future__ import annotations

import functools
from typing import Any

import mlx.core as mx
from mlx_core.kernels._scalars import kernel_scalars
from mlx_core.kernels._sources import kernel_source
from mlx_core.kernels._validate import require_array, require_eps, require_float
from mlx_core.kernels.backend import resolve_backend

_MAX_ROWS = (2**31 - 1) // 32  # one warp (32 threads) per row on a 32-bit grid
_THREADS = 128  # four warps per block


def _modulate_ops(x: mx.array, shift: mx.array, scale: mx.array, eps: float) -> mx.array:
    xf = x.astype(mx.float32)
    xc = xf - mx.mean(xf, axis=-1, keepdims=True)
    var = mx.mean(xc * xc, axis=-1, keepdims=True)
    y = xc / mx.sqrt(var + eps)
    return (y * (1.0 + scale.astype(mx.float32)) + shift.astype(mx.float32)).astype(x.dtype)


modulate_fallback = mx.compile(_modulate_ops)
"""The pure-MLX path (compiled) on 3-D ``x`` and 3-D conditioning; used on the CPU or when forced."""


@functools.cache
def _cuda_kernel() -> Any:
    return mx.fast.cuda_kernel(
        name="mlx_core_modulate",
        input_names=["x", "shift", "scale", "eps"],
        output_names=["out"],
        source=kernel_source("modulate.cu"),
        header=kernel_source("common.cuh"),
        ensure_row_contiguous=True,
    )


@functools.cache
def _metal_kernel() -> Any:
    return mx.fast.metal_kernel(
        name="mlx_core_modulate",
        input_names=["x", "shift", "scale", "eps"],
        output_names=["out"],
        source=kernel_source("modulate.metal"),
        ensure_row_contiguous=True,
    )


def _condition(name: str, c: mx.array, batch: int, seq: int, dim: int, x_ndim: int) -> mx.array:
    """``c`` as ``[Bc, Sc, D]`` with Bc in {1, B} and Sc in {1, S}, or ValueError."""
    forms = "[D], [B, D], [B, 1, D] or [B, S, D]" if x_ndim == 3 else "[D] or [S, D]"
    expected = f"x has shape {[batch, seq, dim] if x_ndim == 3 else [seq, dim]}; {name} must be {forms}"
    if c.ndim == 1:
        c3 = c.reshape(1, 1, c.shape[0])
    elif c.ndim == 2:
        # [B, D] is per sample for 3-D x (DiT convention), [S, D] is per token for 2-D x.
        c3 = c[:, None, :] if x_ndim == 3 else c[None]
    elif c.ndim == 3:
        c3 = c
    else:
        raise ValueError(f"{name} has shape {tuple(c.shape)}: {expected}.")
    cb, cs, cd = c3.shape
    if cb not in (1, batch) or cs not in (1, seq) or cd not in (1, dim):
        raise ValueError(f"{name} has shape {tuple(c.shape)}, not broadcastable: {expected}.")
    if cd != dim:
        c3 = mx.broadcast_to(c3, (cb, cs, dim))
    return c3


def modulate_cuda(
    x: mx.array, shift: mx.array, scale: mx.array, eps: float, *, init_value: float | None = None
) -> mx.array:
    """Launch the CUDA kernel on 3-D ``x`` [B, S, D] and 3-D conditioning (no validation)."""
    batch, seq, _ = x.shape
    (out,) = _cuda_kernel()(
        inputs=[x, shift, scale, kernel_scalars((eps,))],
        template=[("T", x.dtype), ("C", shift.dtype), ("N", 16 // x.itemsize)],
        grid=(batch * seq * 32, 1, 1),
        threadgroup=(_THREADS, 1, 1),
        output_shapes=[x.shape],
        output_dtypes=[x.dtype],
        init_value=init_value,
    )
    return out


def modulate_metal(
    x: mx.array, shift: mx.array, scale: mx.array, eps: float, *, init_value: float | None = None
) -> mx.array:
    """Launch the Metal kernel on 3-D ``x`` [B, S, D] and 3-D conditioning (no validation)."""
    batch, seq, _ = x.shape
    (out,) = _metal_kernel()(
        inputs=[x, shift, scale, kernel_scalars((eps,))],
        template=[("T", x.dtype), ("C", shift.dtype)],
        grid=(batch * seq * 32, 1, 1),
        threadgroup=(_THREADS, 1, 1),
        output_shapes=[x.shape],
        output_dtypes=[x.dtype],
        init_value=init_value,
    )
    return out


def prepare_modulate(
    x: mx.array, shift: mx.array, scale: mx.array, eps: float
) -> tuple[mx.array, mx.array, mx.array, float]:
    """Validate and normalise arguments to ``(x [B, S, D], shift [Bs, Ss, D], scale [Bc, Sc, D], eps)``.

    Conditioning keeps ``x``'s dtype when both match it, otherwise both become float32.
    """
    x = require_array("x", x)
    shift = require_array("shift", shift)
    scale = require_array("scale", scale)
    for name, a in (("x", x), ("shift", shift), ("scale", scale)):
        require_float(name, a)
    eps = require_eps(eps)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be [batch, seq, dim] or [seq, dim], got shape {tuple(x.shape)}.")
    x3 = x if x.ndim == 3 else x[None]
    batch, seq, dim = x3.shape
    if dim == 0:
        raise ValueError(f"x has an empty last axis (shape {tuple(x.shape)}); LayerNorm needs dim >= 1.")
    shift3 = _condition("shift", shift, batch, seq, dim, x.ndim)
    scale3 = _condition("scale", scale, batch, seq, dim, x.ndim)
    cond_dtype = x.dtype if shift.dtype == scale.dtype == x.dtype else mx.float32
    return x3, shift3.astype(cond_dtype), scale3.astype(cond_dtype), eps


def fused_modulate(
    x: mx.array, shift: mx.array, scale: mx.array, eps: float = 1e-6, *, backend: str | None = None
) -> mx.array:
    """``(1 + scale) * LayerNorm(x) + shift`` over the last axis, computed in float32.

    Args:
        x: ``[B, S, D]`` or ``[S, D]``, float32/float16/bfloat16.
        shift, scale: ``[D]``, ``[B, D]`` / ``[B, 1, D]`` (per sample), ``[B, S, D]`` (per token); for
            2-D ``x`` also ``[S, D]``. A last axis of 1 broadcasts over ``D``.
        eps: added to the variance before the square root.
        backend: ``None``/``"auto"``, ``"fallback"``, ``"cuda"`` or ``"metal"``.

    Returns:
        An array of ``x``'s shape and dtype.
    """
    x3, shift3, scale3, eps = prepare_modulate(x, shift, scale, eps)
    impl = resolve_backend(backend, x.dtype)
    rows = x3.shape[0] * x3.shape[1]
    if rows == 0 or rows > _MAX_ROWS:
        impl = "fallback"
    if impl == "cuda":
        out = modulate_cuda(x3, shift3, scale3, eps)
    elif impl == "metal":
        out = modulate_metal(x3, shift3, scale3, eps)
    else:
        out = modulate_fallback(x3, shift3, scale3, eps)
    return out.reshape(x.shape)
