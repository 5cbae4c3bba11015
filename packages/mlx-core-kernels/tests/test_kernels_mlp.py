"""fused_mlp (CPU path) against a float64 numpy MLP, and its argument errors."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import MatvecWeights, fused_mlp

HIDDEN = 128
INTERMEDIATE = 192
EPS = 1e-5
#: (bits, group size) of gate/up and of down; None is a dense weight.
QUANTIZATIONS = [(None, None), ((4, 32), (4, 32)), ((8, 64), (8, 64)), ((4, 64), None), (None, (8, 32))]


def f64(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


def projection(
    out: int, inp: int, quant: tuple[int, int] | None, seed: int
) -> tuple[MatvecWeights, np.ndarray]:
    """Random weights (dense float32 or affine-quantized) and their float64 values."""
    w = mx.array((np.random.default_rng(seed).standard_normal((out, inp)) * inp**-0.5).astype(np.float32))
    if quant is None:
        return MatvecWeights(w), f64(w)
    bits, group = quant
    packed, scales, biases = mx.quantize(w, group_size=group, bits=bits)
    dense = mx.dequantize(packed, scales, biases, group_size=group, bits=bits)
    return MatvecWeights(packed, scales, biases, bits, group), f64(dense)


def mlp64(x: np.ndarray, norm: np.ndarray, gate_up: np.ndarray, down: np.ndarray) -> np.ndarray:
    normed = x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * norm
    gate, up = np.split(normed @ gate_up.T, 2, axis=-1)
    return x + (gate / (1 + np.exp(-gate)) * up) @ down.T


def inputs(lead: tuple[int, ...], seed: int) -> tuple[mx.array, mx.array]:
    rng = np.random.default_rng(seed)
    x = mx.array(rng.standard_normal((*lead, HIDDEN)).astype(np.float32) * 2.0)
    norm = mx.array((1.0 + 0.3 * rng.standard_normal(HIDDEN)).astype(np.float32))
    return x, norm


@pytest.mark.parametrize("lead", [(1, 1), (3,), (2, 2)])
@pytest.mark.parametrize(("gate_up_quant", "down_quant"), QUANTIZATIONS)
def test_matches_float64_reference(
    lead: tuple[int, ...], gate_up_quant: tuple[int, int] | None, down_quant: tuple[int, int] | None
) -> None:
    x, norm = inputs(lead, seed=len(lead) + 7)
    gate_up, gate_up64 = projection(2 * INTERMEDIATE, HIDDEN, gate_up_quant, seed=1)
    down, down64 = projection(HIDDEN, INTERMEDIATE, down_quant, seed=2)
    got = fused_mlp(x, gate_up, down, norm_weight=norm, eps=EPS)
    assert got.shape == x.shape and got.dtype == mx.float32
    want = mlp64(f64(x), f64(norm), gate_up64, down64)
    np.testing.assert_allclose(f64(got), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert np.abs(want - f64(x)).max() > 0.1  # the MLP adds something sizeable


def test_counters_change_nothing_on_the_cpu_and_stay_zero() -> None:
    """On the CPU (no kernel) counters are accepted and unused: the same result, counters untouched."""
    x, norm = inputs((1, 1), seed=3)
    gate_up, _ = projection(2 * INTERMEDIATE, HIDDEN, (4, 32), seed=4)
    down, _ = projection(HIDDEN, INTERMEDIATE, (4, 32), seed=5)
    counters = mx.zeros((8,), dtype=mx.int32)
    plain = fused_mlp(x, gate_up, down, norm_weight=norm, eps=EPS)
    counted = fused_mlp(x, gate_up, down, norm_weight=norm, eps=EPS, counters=counters)
    np.testing.assert_array_equal(np.array(counted), np.array(plain))
    assert not np.array(counters).any()


def _args(**change: Any) -> dict[str, Any]:
    x, norm = inputs((1, 1), seed=9)
    gate_up, _ = projection(2 * INTERMEDIATE, HIDDEN, None, seed=10)
    down, _ = projection(HIDDEN, INTERMEDIATE, None, seed=11)
    return {"x": x, "gate_up": gate_up, "down": down, "norm_weight": norm, **change}


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"x": np.zeros((1, HIDDEN), np.float32)}, TypeError, "x must be an mx.array"),
        ({"x": mx.zeros((1, HIDDEN), dtype=mx.int32)}, TypeError, "x has dtype mlx.core.int32"),
        ({"gate_up": mx.zeros((2 * INTERMEDIATE, HIDDEN))}, TypeError, "gate_up must be MatvecWeights"),
        ({"down": (mx.zeros((HIDDEN, INTERMEDIATE)),)}, TypeError, "down must be MatvecWeights"),
        (
            {"gate_up": MatvecWeights(mx.zeros((2 * INTERMEDIATE, HIDDEN + 32)))},
            ValueError,
            f"does not take the {HIDDEN} features of x",
        ),
        ({"gate_up": MatvecWeights(mx.zeros((2 * INTERMEDIATE - 1, HIDDEN)))}, ValueError, "even row count"),
        (
            {"down": MatvecWeights(mx.zeros((HIDDEN, INTERMEDIATE + 32)))},
            ValueError,
            f"does not take the {INTERMEDIATE} features of the SwiGLU activations",
        ),
        ({"down": MatvecWeights(mx.zeros((HIDDEN - 1, INTERMEDIATE)))}, ValueError, f"{HIDDEN} output rows"),
        (
            {"down": MatvecWeights(mx.zeros((HIDDEN, INTERMEDIATE), dtype=mx.float16))},
            TypeError,
            "weight dtype .*float16 differs",
        ),
        ({"down": MatvecWeights(mx.zeros((HIDDEN, INTERMEDIATE)), bits=4)}, ValueError, "without scales"),
        ({"norm_weight": mx.zeros((HIDDEN + 1,))}, ValueError, f"norm_weight must be \\[{HIDDEN}\\]"),
        ({"eps": -1.0}, ValueError, "eps"),
        ({"counters": mx.zeros((2,), dtype=mx.int32)}, ValueError, "at least 3 zeros"),
        ({"counters": mx.zeros((4,), dtype=mx.float32)}, ValueError, "int32"),
    ],
)
def test_bad_arguments(change: dict[str, Any], error: type[Exception], match: str) -> None:
    args = _args(**change)
    x, gate_up, down = args.pop("x"), args.pop("gate_up"), args.pop("down")
    with pytest.raises(error, match=match):
        fused_mlp(x, gate_up, down, **args)
