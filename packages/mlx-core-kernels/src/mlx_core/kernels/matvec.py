"""Fused decode matvec: ``epilogue(W @ prologue(x))`` for one (or a few) tokens in one kernel.

At decode time every projection multiplies one token by a weight matrix; on a GPU each of those is a
kernel whose launch and ramp-up cost as much as streaming a small weight. The transformer block around
them is a chain of such products glued by small element-wise kernels (RMSNorm, residual add, SwiGLU).
`fused_matvec` folds the glue into the product:

- prologue ``norm_weight``: RMSNorm of ``x`` (each block recomputes it from ``x``, a few KB);
- epilogue ``residual``: ``residual + W @ x``;
- epilogue ``swiglu``: ``W`` holds gate rows then up rows (``gate_up_proj``), output ``silu(gate) * up``.

Weights are dense (``[O, I]``, the dtype of ``x``) or MLX affine-quantized (``mx.quantize``: packed
``uint32`` plus ``scales``/``biases``), 4 or 8 bits. Rounding follows the unfused ops (each intermediate is
rounded to the activation dtype where the unfused graph rounds it), so the fused and unfused paths agree
to the accumulation order of the dot products.

The CUDA kernel covers up to 8 input rows whose ``[rows, I]`` fit in 40 KB of shared memory and ``I`` a
multiple of 32 × the values per 16 bytes; anything else (and the CPU and Metal) runs the same computation as
MLX ops. There is no Metal kernel: Metal runs the MLX ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_core.kernels._inputs import inputs_read, kernel_reading
from mlx_core.kernels._scalars import kernel_scalars
from mlx_core.kernels._validate import require_array, require_eps, require_float
from mlx_core.kernels.backend import resolve_backend
from mlx_core.kernels.swiglu import fused_swiglu

__all__ = [
    "MatvecWeights",
    "apply_matvec",
    "checked_norm_weight",
    "checked_residual",
    "checked_weights",
    "fused_matvec",
    "matvec_cuda",
    "matvec_kernel_supports",
    "matvec_launch_shape",
]

_MAX_ROWS = 8
_SHARED_BYTES = 40 * 1024
_KERNEL_BITS = (4, 8)
_AFFINE_BITS = (1, 2, 3, 4, 5, 6, 8)  # what mx.quantize's affine mode supports
_KERNEL_GROUPS = (32, 64, 128)


@dataclass(frozen=True)
class MatvecWeights:
    """A bias-free projection as `fused_matvec` takes it: ``weight`` ``[O, I]`` in the activation dtype, or
    packed ``uint32`` with ``scales``/``biases`` ``[O, I / group_size]`` (``mx.quantize``'s affine mode)."""

    weight: mx.array
    scales: mx.array | None = None
    biases: mx.array | None = None
    bits: int | None = None
    group_size: int = 64

    @property
    def dtype(self) -> mx.Dtype:
        """The activation dtype these weights multiply."""
        return self.scales.dtype if self.scales is not None else self.weight.dtype


_INPUTS = ("x", "w", "scales", "biases", "norm_w", "residual", "params")
# inputs a launch may leave out (see _inputs): the template switches their code off
_ALIASES = {"scales": "x", "biases": "x", "norm_w": "x", "residual": "x"}


def _cuda_kernel(read: frozenset[str]) -> Any:
    return kernel_reading(
        "mlx_core_matvec", _INPUTS, read, _ALIASES, ("y",), "matvec.cu", ("common.cuh", "matvec_block.cuh")
    )


def _values_per_chunk(bits: int | None, dtype: mx.Dtype) -> int:
    """Weight values in one 16-byte load."""
    return 128 // bits if bits else 16 // dtype.size


def matvec_kernel_supports(
    rows: int, in_features: int, dtype: mx.Dtype, bits: int | None, group_size: int
) -> bool:
    """Whether the CUDA kernel covers ``rows`` input rows of ``in_features`` (else the MLX ops run)."""
    if rows < 1 or rows > _MAX_ROWS or rows * in_features * dtype.size > _SHARED_BYTES:
        return False
    if bits is not None and (bits not in _KERNEL_BITS or group_size not in _KERNEL_GROUPS):
        return False
    vals = _values_per_chunk(bits, dtype)
    return in_features % (vals * 32) == 0 and (bits is None or group_size % vals == 0)


def matvec_launch_shape(out_features: int, bits: int | None) -> tuple[int, int]:
    """Warps per block and output rows per warp.

    Every block stages (and normalises) the whole input before its first row, so a launch of many small
    blocks pays that prologue once per wave. Quantized weights are a third of the bytes, which makes the
    prologue weigh more: an ncu sweep on an H100 (4-bit, one token) measured 16.8 µs instead of 24.2 µs
    for Llama-3.2-1B's gate/up with 8 warps × 4 rows. Once the quantized prologue's chunk sums read shared
    memory without bank conflicts (H100, ncu, fresh weights each launch), one row per warp is the faster
    shape below 4096 outputs: Llama-3.2-1B 4-bit down 11.8 µs against 12.5 µs (8 × 2), q/k/v 7.9 against
    8.3, o 5.5 against 6.1. Blocks of 16 warps were up to 10 % faster still, but a 512-thread block
    allows 128 registers per thread and some instantiations (8-bit, wide inputs, eight rows) reach that
    (NVRTC does not know the block size), so blocks stay at 8 warps.
    Dense weights: 8 warps × 2 rows from 3072 outputs (H200 sweep: Llama-3.2-1B's gate/up 31.0 → 21.0 µs,
    Qwen3-0.6B's q/k/v 7.3 → 6.3 µs), 4 warps × 1 row below (1024-output projections: within 0.1 µs of
    the best shape).
    """
    if out_features >= 65536:  # an output projection over the vocabulary
        return 8, 4
    if bits is None:
        return (8, 2) if out_features >= 3072 else (4, 1)
    if out_features > 4096:
        return 8, min(4, -(-out_features // 2048))
    return 8, 1


def matvec_cuda(
    x: mx.array,
    weight: mx.array,
    scales: mx.array | None,
    biases: mx.array | None,
    *,
    bits: int | None,
    group_size: int,
    norm_weight: mx.array | None,
    eps: float,
    residual: mx.array | None,
    swiglu: bool,
    warps: int | None = None,
    rows_per_warp: int | None = None,
) -> mx.array:
    """Launch the CUDA kernel (no validation): ``x`` is ``[..., I]``, the result ``[..., OUT]``.

    The kernel reads ``x`` and ``residual`` as flat rows, so neither is reshaped: in a compiled decode
    step every reshape is one more primitive the host encodes per token (~10 per block before).
    ``warps`` (per block) and ``rows_per_warp`` override the launch shape (for tuning).
    """
    *lead, in_features = x.shape
    rows = math.prod(lead)
    out_features = weight.shape[0] // 2 if swiglu else weight.shape[0]
    default_warps, default_rows = matvec_launch_shape(out_features, bits)
    warps = warps or default_warps
    rows_per_warp = rows_per_warp or default_rows
    per_block = warps * rows_per_warp
    read, inputs = inputs_read(
        _INPUTS,
        {
            "x": x,
            "w": weight,
            "scales": scales,
            "biases": biases,
            "norm_w": norm_weight,
            "residual": residual,
            "params": kernel_scalars((float(eps),)),
        },
    )
    (y,) = _cuda_kernel(read)(
        inputs=inputs,
        template=[
            ("T", x.dtype),
            ("I", in_features),
            ("OUT", out_features),
            ("NB", rows),
            ("QB", bits or 0),
            ("GS", group_size),
            ("NORM", norm_weight is not None),
            ("EPI", 2 if swiglu else (1 if residual is not None else 0)),
            ("NW", warps),
            ("RPW", rows_per_warp),
        ],
        grid=(-(-out_features // per_block) * warps * 32, 1, 1),
        threadgroup=(warps * 32, 1, 1),
        output_shapes=[(*lead, out_features)],
        output_dtypes=[x.dtype],
    )
    return y


def _ops(
    x: mx.array,
    weight: mx.array,
    scales: mx.array | None,
    biases: mx.array | None,
    bits: int | None,
    group_size: int,
    norm_weight: mx.array | None,
    eps: float,
    residual: mx.array | None,
    swiglu: bool,
) -> mx.array:
    """The same computation as MLX ops (the unfused graph of a decoder block)."""
    if norm_weight is not None:
        x = mx.fast.rms_norm(x, norm_weight, eps)
    if scales is not None:
        y = mx.quantized_matmul(
            x, weight, scales, biases, transpose=True, group_size=group_size, bits=bits or 4
        )
    else:
        y = x @ weight.T
    if swiglu:
        gate, up = mx.split(y, 2, axis=-1)
        y = fused_swiglu(up, gate)
    if residual is not None:
        y = residual + y
    return y


def _check_quantization(
    weight: mx.array, scales: Any, biases: Any, bits: Any, group_size: Any, in_features: int
) -> int | None:
    """Validate the quantization arguments; return ``bits`` (``None`` for a dense weight)."""
    if scales is None:
        if biases is not None or bits is not None:
            raise ValueError("biases/bits given without scales: pass all three for a quantized weight.")
        return None
    scales = require_array("scales", scales)
    biases = require_array("biases", biases)
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in _AFFINE_BITS:
        raise ValueError(f"bits must be one of {_AFFINE_BITS} for a quantized weight, got {bits!r}.")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}.")
    if weight.dtype != mx.uint32:
        raise TypeError(f"a quantized weight is packed uint32 (mx.quantize), got {weight.dtype}.")
    groups = in_features // group_size
    if in_features % group_size or scales.shape != (weight.shape[0], groups) or biases.shape != scales.shape:
        raise ValueError(
            f"scales/biases must be [{weight.shape[0]}, {groups}] for {in_features} inputs in groups of "
            f"{group_size}, got {tuple(scales.shape)} and {tuple(biases.shape)}."
        )
    if weight.shape[1] * 32 != in_features * bits:
        raise ValueError(
            f"packed weight {tuple(weight.shape)} holds {weight.shape[1] * 32 // bits} values per row at "
            f"{bits} bits, but x has {in_features} features."
        )
    return bits


def checked_weights(
    weight: mx.array,
    scales: Any,
    biases: Any,
    bits: Any,
    group_size: Any,
    in_features: int,
    dtype: mx.Dtype,
    inputs: str = "x",
) -> int | None:
    """Validate a projection's arrays for ``inputs`` (named in errors) of ``in_features`` in ``dtype``;
    return ``bits`` (``None`` for a dense weight)."""
    weight = require_array("weight", weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must be 2-D, got {tuple(weight.shape)}.")
    q_bits = _check_quantization(weight, scales, biases, bits, group_size, in_features)
    if q_bits is None:
        if weight.shape[1] != in_features:
            raise ValueError(
                f"weight {tuple(weight.shape)} does not take the {in_features} features of {inputs}."
            )
        if weight.dtype != dtype:
            raise TypeError(f"weight dtype {weight.dtype} differs from {inputs} ({dtype}); cast one of them.")
    elif scales.dtype != dtype or biases.dtype != dtype:
        raise TypeError(
            f"scales/biases dtypes ({scales.dtype}, {biases.dtype}) must be the dtype of {inputs} ({dtype}); "
            "cast them."
        )
    return q_bits


def checked_norm_weight(norm_weight: Any, in_features: int, dtype: mx.Dtype) -> mx.array:
    """Validate an RMSNorm weight for inputs of ``in_features`` in ``dtype``."""
    norm_weight = require_array("norm_weight", norm_weight)
    if norm_weight.shape != (in_features,) or norm_weight.dtype != dtype:
        raise ValueError(
            f"norm_weight must be [{in_features}] in {dtype}, got {tuple(norm_weight.shape)} "
            f"{norm_weight.dtype}."
        )
    return norm_weight


def checked_residual(residual: Any, shape: tuple[int, ...], dtype: mx.Dtype) -> mx.array:
    """Validate a residual added to a projection's output of ``shape`` in ``dtype``."""
    residual = require_array("residual", residual)
    if residual.shape != shape or residual.dtype != dtype:
        raise ValueError(
            f"residual must be {shape} in {dtype}, got {tuple(residual.shape)} {residual.dtype}."
        )
    return residual


def _checked_matvec_args(
    x: Any,
    weight: Any,
    scales: Any,
    biases: Any,
    bits: Any,
    group_size: Any,
    norm_weight: Any,
    eps: Any,
    residual: Any,
    swiglu: bool,
) -> tuple[mx.array, mx.array, int | None, mx.array | None, float, mx.array | None]:
    """Validate `fused_matvec`'s arguments; return ``(x, weight, bits, norm_weight, eps, residual)``."""
    x = require_array("x", x)
    weight = require_array("weight", weight)
    require_float("x", x)
    if x.ndim < 1 or weight.ndim != 2:
        raise ValueError(
            f"x must be [..., I] and weight 2-D, got {tuple(x.shape)} and {tuple(weight.shape)}."
        )
    in_features = x.shape[-1]
    q_bits = checked_weights(weight, scales, biases, bits, group_size, in_features, x.dtype)
    out_features = weight.shape[0]
    if swiglu:
        if residual is not None:
            raise ValueError("swiglu and residual cannot be combined (the block adds after down_proj).")
        if out_features % 2:
            raise ValueError(f"swiglu needs gate and up rows stacked: an even row count, got {out_features}.")
        out_features //= 2
    if norm_weight is not None:
        norm_weight = checked_norm_weight(norm_weight, in_features, x.dtype)
    eps = require_eps(eps)
    lead = x.shape[:-1]
    if residual is not None:
        residual = checked_residual(residual, (*lead, out_features), x.dtype)
    return x, weight, q_bits, norm_weight, eps, residual


def fused_matvec(
    x: mx.array,
    weight: mx.array,
    scales: mx.array | None = None,
    biases: mx.array | None = None,
    *,
    bits: int | None = None,
    group_size: int = 64,
    norm_weight: mx.array | None = None,
    eps: float = 1e-6,
    residual: mx.array | None = None,
    swiglu: bool = False,
    backend: str | None = None,
) -> mx.array:
    """``epilogue(W @ prologue(x))`` over the last axis of ``x``, in one kernel on CUDA.

    Args:
        x: activations ``[..., I]`` (float32, float16 or bfloat16).
        weight: ``[O, I]`` in ``x``'s dtype, or packed ``uint32`` ``[O, I * bits / 32]`` with ``scales``
            and ``biases`` ``[O, I / group_size]`` (``mx.quantize``'s affine mode).
        bits, group_size: the quantization (``bits`` required with ``scales``).
        norm_weight: ``[I]``: apply ``mx.fast.rms_norm(x, norm_weight, eps)`` first.
        residual: ``[..., O]``: return ``residual + W @ x``.
        swiglu: ``W``'s first ``O / 2`` rows are the gate, the rest the up projection: return
            ``silu(gate) * up`` (``[..., O / 2]``). Excludes ``residual``.
        backend: ``None``/``"auto"``, ``"fallback"`` (MLX ops), ``"cuda"``.

    Returns:
        ``[..., O]`` (``[..., O / 2]`` with ``swiglu``) in ``x``'s dtype.
    """
    x, weight, q_bits, norm_weight, eps, residual = _checked_matvec_args(
        x, weight, scales, biases, bits, group_size, norm_weight, eps, residual, swiglu
    )
    return apply_matvec(
        x,
        MatvecWeights(weight, scales, biases, q_bits, group_size),
        norm_weight=norm_weight,
        eps=eps,
        residual=residual,
        swiglu=swiglu,
        backend=backend,
    )


def apply_matvec(
    x: mx.array,
    weights: MatvecWeights,
    *,
    norm_weight: mx.array | None = None,
    eps: float = 1e-6,
    residual: mx.array | None = None,
    swiglu: bool = False,
    backend: str | None = None,
) -> mx.array:
    """`fused_matvec` for arguments already validated (`fused_matvec`'s checks, or `checked_weights` plus the
    caller's own checks): the kernel where it covers the shapes, else the MLX ops."""
    rows = math.prod(x.shape[:-1])
    bits, group_size = weights.bits, weights.group_size
    impl = resolve_backend(backend, x.dtype)
    if impl == "cuda" and matvec_kernel_supports(rows, x.shape[-1], x.dtype, bits, group_size):
        return matvec_cuda(
            x,
            weights.weight,
            weights.scales,
            weights.biases,
            bits=bits,
            group_size=group_size,
            norm_weight=norm_weight,
            eps=eps,
            residual=residual,
            swiglu=swiglu,
        )
    return _ops(
        x,
        weights.weight,
        weights.scales,
        weights.biases,
        bits,
        group_size,
        norm_weight,
        eps,
        residual,
        swiglu,
    )
