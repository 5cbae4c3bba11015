"""Fused decode MLP: ``x + down(swiglu(gate_up(rms_norm(x))))`` for one (or a few) tokens.

A decoder block's MLP at decode time is two matvecs (`fused_matvec` with the RMSNorm and SwiGLU folded into
the first and the residual add into the second). Each launch costs the GPU a ramp-up and a tail, and the host
one more kernel to encode per layer and token. With a caller-owned counter buffer the CUDA kernel runs both
in one launch: the gate/up blocks write the activations, the down blocks wait for all of them (work tickets
in start order, so they only wait for running blocks) and read them back from L2. The result is the same as
the two launches': each phase is `fused_matvec`'s code.

Without counters, where the kernel does not cover the shapes (see `mlp_kernel_supports`), and on the CPU and
Metal, the two `fused_matvec` computations run (`apply_matvec`: the arguments are validated once).
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
from mlx_core.kernels._inputs import inputs_read, kernel_reading
from mlx_core.kernels._scalars import kernel_scalars
from mlx_core.kernels._validate import optional_counters, require_array, require_eps, require_float
from mlx_core.kernels.backend import resolve_backend
from mlx_core.kernels.matvec import (
    MatvecWeights,
    apply_matvec,
    checked_norm_weight,
    checked_weights,
    matvec_kernel_supports,
    matvec_launch_shape,
)

__all__ = ["fused_mlp", "mlp_kernel_supports", "mlp_launch_shape"]

#: Static shared memory of one block (both phases' staged inputs); 48 KB is the hardware's static limit.
_SHARED_BYTES = 46 * 1024


_INPUTS = (
    "x",
    "gu_w",
    "gu_scales",
    "gu_biases",
    "norm_w",
    "down_w",
    "down_scales",
    "down_biases",
    "params",
    "counters",
)
# inputs a launch may leave out (see _inputs): dense projections read no scales or biases
_ALIASES = {"gu_scales": "x", "gu_biases": "x", "down_scales": "x", "down_biases": "x"}


def _cuda_kernel(read: frozenset[str]) -> Any:
    return kernel_reading(
        "mlx_core_mlp", _INPUTS, read, _ALIASES, ("y", "h"), "mlp.cu", ("common.cuh", "matvec_block.cuh")
    )


def _staged_bytes(rows: int, in_features: int, dtype: mx.Dtype, bits: int | None) -> int:
    """Shared memory one matvec phase stages: the input rows, and for quantized weights a float per chunk."""
    chunk_sums = rows * (in_features * bits // 128) * 4 if bits else 0
    return rows * in_features * dtype.size + chunk_sums


def mlp_kernel_supports(
    rows: int, hidden: int, intermediate: int, dtype: mx.Dtype, gate_up: MatvecWeights, down: MatvecWeights
) -> bool:
    """Whether the one-launch CUDA kernel covers ``rows`` tokens of this MLP (both phases, and their inputs
    staged in one block's shared memory)."""
    shared = (
        _staged_bytes(rows, hidden, dtype, gate_up.bits)
        + hidden * dtype.size  # the norm weight
        + _staged_bytes(rows, intermediate, dtype, down.bits)
    )
    return (
        shared <= _SHARED_BYTES
        and matvec_kernel_supports(rows, hidden, dtype, gate_up.bits, gate_up.group_size)
        and matvec_kernel_supports(rows, intermediate, dtype, down.bits, down.group_size)
    )


def mlp_launch_shape(
    hidden: int, intermediate: int, gate_up_bits: int | None, down_bits: int | None
) -> tuple[int, int, int]:
    """Warps per block and rows per warp of each phase: the gate/up matvec's shape (the larger phase), and
    the down phase at the same warps with its own launch's rows per block where that is possible."""
    warps, gate_up_rows = matvec_launch_shape(intermediate, gate_up_bits)
    down_warps, down_rows = matvec_launch_shape(hidden, down_bits)
    return warps, gate_up_rows, max(1, down_warps * down_rows // warps)


def _mlp_cuda(
    x: mx.array,
    gate_up: MatvecWeights,
    down: MatvecWeights,
    norm_weight: mx.array,
    eps: float,
    counters: mx.array,
) -> mx.array:
    """Launch the one-launch kernel (no validation)."""
    *lead, hidden = x.shape
    intermediate = gate_up.weight.shape[0] // 2
    rows = math.prod(lead)
    warps, gate_up_rows, down_rows = mlp_launch_shape(hidden, intermediate, gate_up.bits, down.bits)
    blocks = -(-intermediate // (warps * gate_up_rows)) + -(-hidden // (warps * down_rows))

    read, inputs = inputs_read(
        _INPUTS,
        {
            "x": x,
            "gu_w": gate_up.weight,
            "gu_scales": gate_up.scales if gate_up.bits else None,
            "gu_biases": gate_up.biases if gate_up.bits else None,
            "norm_w": norm_weight,
            "down_w": down.weight,
            "down_scales": down.scales if down.bits else None,
            "down_biases": down.biases if down.bits else None,
            "params": kernel_scalars((float(eps),)),
            "counters": counters,
        },
    )
    y, _ = _cuda_kernel(read)(
        inputs=inputs,
        template=[
            ("T", x.dtype),
            ("I", hidden),
            ("H", intermediate),
            ("NB", rows),
            ("GU_QB", gate_up.bits or 0),
            ("GU_GS", gate_up.group_size),
            ("D_QB", down.bits or 0),
            ("D_GS", down.group_size),
            ("NW", warps),
            ("GU_RPW", gate_up_rows),
            ("D_RPW", down_rows),
        ],
        grid=(blocks * warps * 32, 1, 1),
        threadgroup=(warps * 32, 1, 1),
        output_shapes=[tuple(x.shape), (*lead, intermediate)],
        output_dtypes=[x.dtype, x.dtype],
    )
    return y


def fused_mlp(
    x: mx.array,
    gate_up: MatvecWeights,
    down: MatvecWeights,
    *,
    norm_weight: mx.array,
    eps: float = 1e-6,
    counters: mx.array | None = None,
    backend: str | None = None,
) -> mx.array:
    """``x + down(silu(gate) * up)`` with ``gate, up = gate_up(rms_norm(x, norm_weight, eps))``.

    Args:
        x: the block's hidden state ``[..., I]`` (float32, float16 or bfloat16).
        gate_up: `MatvecWeights` of ``[2 H, I]``: the gate rows, then the up rows (``gate_up_proj``).
        down: `MatvecWeights` of ``[I, H]``. Each projection may be dense or quantized on its own.
        norm_weight: ``[I]``, the post-attention RMSNorm's weight.
        counters: int32 ``[>= 3]``, zero, owned by the caller and left zero (e.g.
            ``StaticKVCache.kernel_counters``): on CUDA both projections then run in one launch. Launches
            sharing it must not run concurrently (a decoder layer's kernels run one after another).
        backend: ``None``/``"auto"``, ``"fallback"`` (MLX ops), ``"cuda"``.

    Returns:
        ``[..., I]`` in ``x``'s dtype: the same as two `fused_matvec` calls.
    """
    x = require_array("x", x)
    require_float("x", x)
    for name, w in (("gate_up", gate_up), ("down", down)):
        if not isinstance(w, MatvecWeights):
            raise TypeError(f"{name} must be MatvecWeights, got {type(w).__name__}.")
    if x.ndim < 1:
        raise ValueError(f"x must be [..., I], got a scalar of shape {tuple(x.shape)}.")
    hidden = x.shape[-1]
    checked_weights(
        gate_up.weight, gate_up.scales, gate_up.biases, gate_up.bits, gate_up.group_size, hidden, x.dtype
    )
    if gate_up.weight.shape[0] % 2:
        raise ValueError(
            f"gate_up must stack gate and up rows: an even row count, got {gate_up.weight.shape[0]}."
        )
    intermediate = gate_up.weight.shape[0] // 2
    checked_weights(
        down.weight,
        down.scales,
        down.biases,
        down.bits,
        down.group_size,
        intermediate,
        x.dtype,
        "the SwiGLU activations",
    )
    if down.weight.shape[0] != hidden:
        raise ValueError(f"down must have {hidden} output rows (x's features), got {down.weight.shape[0]}.")
    norm_weight = checked_norm_weight(norm_weight, hidden, x.dtype)
    eps = require_eps(eps)
    counters = optional_counters(counters, 3, "a 1-D int32 array of at least 3 zeros")
    rows = math.prod(x.shape[:-1])
    impl = resolve_backend(backend, x.dtype)
    if (
        impl == "cuda"
        and counters is not None
        and mlp_kernel_supports(rows, hidden, intermediate, x.dtype, gate_up, down)
    ):
        return _mlp_cuda(x, gate_up, down, norm_weight, eps, counters)
    act = apply_matvec(x, gate_up, norm_weight=norm_weight, eps=eps, swiglu=True, backend=backend)
    return apply_matvec(act, down, residual=x, backend=backend)
