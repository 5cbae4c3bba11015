"""Fused SwiGLU, ``silu(gate) * x``: one read of each input and one write, float32 math inside.

The gated MLP of Llama-family models computes ``down(silu(gate(h)) * up(h))``; unfused that is three
element-wise kernels and two temporaries. Here it is one CUDA or Metal kernel, or one compiled
MLX graph on the CPU.
"""

from __future__ import annotations

import functools
from typing import Any

import mlx.core as mx
from mlx_core.kernels._sources import kernel_source
from mlx_core.kernels._validate import require_array, require_float
from mlx_core.kernels.backend import resolve_backend

_MAX_ELEMENTS = 2**31 - 1  # kernels index with int32 shapes and a 32-bit grid
_THREADS = 256
_METAL_PER_THREAD = 4


def _swiglu_ops(x: mx.array, gate: mx.array) -> mx.array:
    g = gate.astype(mx.float32)
    return (x.astype(mx.float32) * (g / (1.0 + mx.exp(-g)))).astype(x.dtype)


swiglu_fallback = mx.compile(_swiglu_ops)
"""The pure-MLX path (compiled): same math as the kernels, used on the CPU or when forced."""


@functools.cache
def _cuda_kernel() -> Any:
    return mx.fast.cuda_kernel(
        name="mlx_core_swiglu",
        input_names=["x", "gate"],
        output_names=["out"],
        source=kernel_source("swiglu.cu"),
        header=kernel_source("common.cuh"),
        ensure_row_contiguous=True,
    )


@functools.cache
def _metal_kernel() -> Any:
    return mx.fast.metal_kernel(
        name="mlx_core_swiglu",
        input_names=["x", "gate"],
        output_names=["out"],
        source=kernel_source("swiglu.metal"),
        ensure_row_contiguous=True,
    )


def swiglu_cuda(x: mx.array, gate: mx.array, *, init_value: float | None = None) -> mx.array:
    """Launch the CUDA kernel (no validation). ``init_value`` pre-fills the output (coverage tests)."""
    n = x.size
    vec = 16 // x.itemsize
    (out,) = _cuda_kernel()(
        inputs=[x.reshape(n), gate.reshape(n)],
        template=[("T", x.dtype), ("N", vec)],
        grid=(-(-n // vec), 1, 1),
        threadgroup=(_THREADS, 1, 1),
        output_shapes=[(n,)],
        output_dtypes=[x.dtype],
        init_value=init_value,
    )
    return out.reshape(x.shape)


def swiglu_metal(x: mx.array, gate: mx.array, *, init_value: float | None = None) -> mx.array:
    """Launch the Metal kernel (no validation). ``init_value`` pre-fills the output (coverage tests)."""
    n = x.size
    (out,) = _metal_kernel()(
        inputs=[x.reshape(n), gate.reshape(n)],
        template=[("T", x.dtype), ("N", _METAL_PER_THREAD)],
        grid=(-(-n // _METAL_PER_THREAD), 1, 1),
        threadgroup=(_THREADS, 1, 1),
        output_shapes=[(n,)],
        output_dtypes=[x.dtype],
        init_value=init_value,
    )
    return out.reshape(x.shape)


def fused_swiglu(x: mx.array, gate: mx.array, *, backend: str | None = None) -> mx.array:
    """``silu(gate) * x`` for same-shape float arrays of any shape, computed in float32.

    Args:
        x: the "up" projection, any shape, float32/float16/bfloat16.
        gate: the "gate" projection, same shape and dtype as ``x``.
        backend: ``None``/``"auto"`` (see :func:`mlx_core.kernels.backend`), ``"fallback"``,
            ``"cuda"`` or ``"metal"``.

    Returns:
        An array of ``x``'s shape and dtype.
    """
    x = require_array("x", x)
    gate = require_array("gate", gate)
    require_float("x", x)
    require_float("gate", gate)
    if x.shape != gate.shape:
        raise ValueError(
            f"x and gate must have the same shape, got {tuple(x.shape)} and {tuple(gate.shape)}; "
            "broadcast them explicitly if that is intended."
        )
    if x.dtype != gate.dtype:
        raise TypeError(f"x and gate must have the same dtype, got {x.dtype} and {gate.dtype}.")
    impl = resolve_backend(backend, x.dtype)
    if x.size == 0 or x.size > _MAX_ELEMENTS:
        impl = "fallback"
    if impl == "cuda":
        return swiglu_cuda(x, gate)
    if impl == "metal":
        return swiglu_metal(x, gate)
    return swiglu_fallback(x, gate)
