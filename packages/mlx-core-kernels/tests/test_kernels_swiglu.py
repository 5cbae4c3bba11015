"""fused_swiglu on the CPU (compiled fallback) against a float64 numpy reference."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.kernels import fused_swiglu


def reference(x: np.ndarray, gate: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    g64 = gate.astype(np.float64)
    with np.errstate(over="ignore"):
        return x64 * g64 / (1.0 + np.exp(-g64))


def as_f64(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 37), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_float32_matches_float64_reference_on_odd_shapes(shape: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32) * 3
    g = rng.standard_normal(shape).astype(np.float32) * 4
    out = fused_swiglu(mx.array(x), mx.array(g))
    assert out.shape == tuple(shape) and out.dtype == mx.float32
    np.testing.assert_allclose(np.array(out), reference(x, g), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_within_1e_2(dtype: mx.Dtype) -> None:
    rng = np.random.default_rng(1)
    x = mx.array(rng.standard_normal((5, 67)).astype(np.float32)).astype(dtype)
    g = mx.array(rng.standard_normal((5, 67)).astype(np.float32) * 3).astype(dtype)
    out = fused_swiglu(x, g)
    assert out.dtype == dtype
    np.testing.assert_allclose(as_f64(out), reference(as_f64(x), as_f64(g)), rtol=1e-2, atol=1e-2)


def test_extreme_gates_saturate_without_nan() -> None:
    g = mx.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4], dtype=mx.float32)
    x = mx.full(g.shape, 2.0)
    out = np.array(fused_swiglu(x, g))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, reference(np.array(x), np.array(g)), rtol=1e-5, atol=1e-30)


def test_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(2)
    base_x = mx.array(rng.standard_normal((9, 13)).astype(np.float32))
    base_g = mx.array(rng.standard_normal((13, 9)).astype(np.float32))
    x = base_x.T  # transposed view
    g = base_g[:, ::-1]  # reversed view
    out = fused_swiglu(x, g)
    np.testing.assert_allclose(np.array(out), reference(np.array(x), np.array(g)), rtol=1e-5, atol=1e-7)


def test_empty_input_gives_empty_output() -> None:
    out = fused_swiglu(mx.zeros((0, 4)), mx.zeros((0, 4)))
    assert out.shape == (0, 4)


def test_forced_fallback_argument_matches_auto() -> None:
    rng = np.random.default_rng(3)
    x = mx.array(rng.standard_normal((4, 33)).astype(np.float32))
    g = mx.array(rng.standard_normal((4, 33)).astype(np.float32))
    np.testing.assert_array_equal(
        np.array(fused_swiglu(x, g, backend="fallback")), np.array(fused_swiglu(x, g))
    )


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="same shape"):
        fused_swiglu(mx.zeros((2, 3)), mx.zeros((3, 2)))


def test_dtype_mismatch_is_rejected() -> None:
    with pytest.raises(TypeError, match="same dtype"):
        fused_swiglu(mx.zeros((2, 3)), mx.zeros((2, 3), dtype=mx.float16))


def test_integer_dtype_is_rejected() -> None:
    with pytest.raises(TypeError, match="float32, float16 and bfloat16"):
        fused_swiglu(mx.zeros((2, 3), dtype=mx.int32), mx.zeros((2, 3), dtype=mx.int32))


def test_non_array_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"gate must be an mx\.array"):
        fused_swiglu(mx.zeros((2,)), [1.0, 2.0])  # type: ignore[arg-type]


def test_unknown_backend_argument_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a kernels backend"):
        fused_swiglu(mx.zeros((2,)), mx.zeros((2,)), backend="tpu")
