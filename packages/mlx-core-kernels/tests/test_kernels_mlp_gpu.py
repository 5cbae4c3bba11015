"""The one-launch CUDA MLP against two `fused_matvec` launches and a float64 MLP (lent H100 only)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import MatvecWeights, fused_matvec, fused_mlp
from mlx_core.kernels.mlp import mlp_kernel_supports

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend"),
]

EPS = 1e-6
SHAPES = {"qwen3-0.6b": (1024, 3072), "llama-3.2-1b": (2048, 8192), "llama-3-8b, 2 ranks": (4096, 7168)}
#: (bits, group size) of gate/up and of down; None is a dense weight.
QUANTIZATIONS = {
    "dense": (None, None),
    "q4": ((4, 64), (4, 64)),
    "q8": ((8, 64), (8, 64)),
    "q4-down-q8": ((4, 64), (8, 32)),
    "dense-down-q4": (None, (4, 32)),
}


def f64(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


def rand(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(mx.bfloat16)


def projection(
    out: int, inp: int, quant: tuple[int, int] | None, seed: int
) -> tuple[MatvecWeights, np.ndarray]:
    w = rand((out, inp), seed, scale=inp**-0.5)
    if quant is None:
        return MatvecWeights(w), f64(w)
    bits, group = quant
    packed, scales, biases = mx.quantize(w, group_size=group, bits=bits)
    return MatvecWeights(packed, scales, biases, bits, group), f64(
        mx.dequantize(packed, scales, biases, group_size=group, bits=bits)
    )


def two_launches(x: mx.array, gate_up: MatvecWeights, down: MatvecWeights, norm: mx.array) -> mx.array:
    gu = gate_up
    act = fused_matvec(
        x,
        gu.weight,
        gu.scales,
        gu.biases,
        bits=gu.bits,
        group_size=gu.group_size,
        norm_weight=norm,
        eps=EPS,
        swiglu=True,
    )
    return fused_matvec(
        act, down.weight, down.scales, down.biases, bits=down.bits, group_size=down.group_size, residual=x
    )


#: Each case JIT-compiles three kernels on a cold machine (~4 s each), so the cases are a chosen few.
CASES = [
    ("qwen3-0.6b", "dense", 1),
    ("qwen3-0.6b", "q4", 1),
    ("qwen3-0.6b", "q4", 2),
    ("qwen3-0.6b", "q4-down-q8", 1),
    ("qwen3-0.6b", "dense-down-q4", 2),
    ("llama-3.2-1b", "dense", 1),
    ("llama-3.2-1b", "q4", 1),
    ("llama-3.2-1b", "q8", 1),
    ("llama-3-8b, 2 ranks", "dense", 1),
]


@pytest.mark.parametrize(("shape", "quant", "rows"), CASES)
def test_one_launch_equals_two_and_leaves_counters_zero(shape: str, quant: str, rows: int) -> None:
    hidden, intermediate = SHAPES[shape]
    gate_up_quant, down_quant = QUANTIZATIONS[quant]
    gate_up, gate_up64 = projection(2 * intermediate, hidden, gate_up_quant, seed=1)
    down, down64 = projection(hidden, intermediate, down_quant, seed=2)
    norm = (1.0 + 0.2 * rand((hidden,), seed=3)).astype(mx.bfloat16)
    assert mlp_kernel_supports(rows, hidden, intermediate, mx.bfloat16, gate_up, down)
    counters = mx.zeros((5,), dtype=mx.int32)
    for step in range(3):  # the same counters every step, as a decode loop uses them
        x = rand((rows, 1, hidden), seed=10 + step, scale=2.0)
        got = fused_mlp(x, gate_up, down, norm_weight=norm, eps=EPS, counters=counters)
        want = two_launches(x, gate_up, down, norm)
        mx.eval(got, want)
        np.testing.assert_array_equal(f64(got), f64(want))
        assert not np.array(counters).any(), f"counters not reset after step {step}: {np.array(counters)}"
        xs = f64(x)
        normed = xs / np.sqrt((xs * xs).mean(-1, keepdims=True) + EPS) * f64(norm)
        g, u = np.split(normed @ gate_up64.T, 2, axis=-1)
        reference = xs + (g / (1 + np.exp(-g)) * u) @ down64.T
        np.testing.assert_allclose(f64(got), reference, rtol=2e-2, atol=2e-2 * np.abs(reference).max())


def test_shapes_beyond_one_block_fall_back_to_two_launches() -> None:
    """Eight tokens of an 8-bit Qwen3-0.6B MLP do not fit one block's shared memory: two launches, the same
    result, counters unused."""
    hidden, intermediate = SHAPES["qwen3-0.6b"]
    gate_up, _ = projection(2 * intermediate, hidden, (8, 64), seed=4)
    down, _ = projection(hidden, intermediate, (8, 64), seed=5)
    norm = rand((hidden,), seed=6)
    assert not mlp_kernel_supports(8, hidden, intermediate, mx.bfloat16, gate_up, down)
    x = rand((8, 1, hidden), seed=7)
    counters = mx.zeros((3,), dtype=mx.int32)
    got = fused_mlp(x, gate_up, down, norm_weight=norm, eps=EPS, counters=counters)
    np.testing.assert_array_equal(f64(got), f64(two_launches(x, gate_up, down, norm)))
    assert not np.array(counters).any()
