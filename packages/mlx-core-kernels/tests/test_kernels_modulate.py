"""fused_modulate on the CPU (compiled fallback) against a float64 numpy reference."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.kernels import fused_modulate


def reference(x: np.ndarray, shift: np.ndarray, scale: np.ndarray, eps: float) -> np.ndarray:
    """Naive float64 LayerNorm + modulate; shift/scale already in numpy-broadcastable form."""
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x64 - mean) / np.sqrt(var + eps)
    return y * (1.0 + scale.astype(np.float64)) + shift.astype(np.float64)


def as_f64(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


# (shape given to fused_modulate, shape numpy broadcasts against [B, S, D]) per form.
FORMS = {
    "shared [D]": lambda b, s, d: ((d,), (d,)),
    "shared [1, D]": lambda b, s, d: ((1, d), (1, 1, d)),
    "per sample [B, D]": lambda b, s, d: ((b, d), (b, 1, d)),
    "per sample [B, 1, D]": lambda b, s, d: ((b, 1, d), (b, 1, d)),
    "per token [B, S, D]": lambda b, s, d: ((b, s, d), (b, s, d)),
    "per token [1, S, D]": lambda b, s, d: ((1, s, d), (1, s, d)),
    "scalar [1]": lambda b, s, d: ((1,), (1,)),
}


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 4),
    s=st.integers(1, 9),
    d=st.integers(1, 70),
    shift_form=st.sampled_from(sorted(FORMS)),
    scale_form=st.sampled_from(sorted(FORMS)),
    seed=st.integers(0, 2**16),
)
def test_float32_matches_float64_reference(
    b: int, s: int, d: int, shift_form: str, scale_form: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((b, s, d)) * 2 + 0.5).astype(np.float32)
    shift_shape, shift_np_shape = FORMS[shift_form](b, s, d)
    scale_shape, scale_np_shape = FORMS[scale_form](b, s, d)
    shift = rng.standard_normal(shift_shape).astype(np.float32)
    scale = (rng.standard_normal(scale_shape) * 0.5).astype(np.float32)
    out = fused_modulate(mx.array(x), mx.array(shift), mx.array(scale), eps=1e-6)
    assert out.shape == (b, s, d) and out.dtype == mx.float32
    expected = reference(x, shift.reshape(shift_np_shape), scale.reshape(scale_np_shape), 1e-6)
    np.testing.assert_allclose(np.array(out), expected, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("cond_shape", [(13,), (6, 13), (1, 13)])
def test_two_dimensional_x_is_seq_by_dim(cond_shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 13)).astype(np.float32)
    shift = rng.standard_normal(cond_shape).astype(np.float32)
    scale = rng.standard_normal(cond_shape).astype(np.float32)
    out = fused_modulate(mx.array(x), mx.array(shift), mx.array(scale), eps=1e-5)
    assert out.shape == (6, 13)
    np.testing.assert_allclose(np.array(out), reference(x, shift, scale, 1e-5), rtol=1e-5, atol=2e-5)


def test_variance_is_stable_under_a_large_mean() -> None:
    rng = np.random.default_rng(5)
    x = (1e4 + rng.standard_normal((2, 3, 257))).astype(np.float32)
    shift = np.zeros((257,), np.float32)
    scale = np.zeros((257,), np.float32)
    expected = reference(x, shift, scale, 1e-6)
    out = np.array(fused_modulate(mx.array(x), mx.array(shift), mx.array(scale)))
    assert np.max(np.abs(out - expected)) < 5e-3
    # Negative control: E[x^2] - mean^2 in float32 is far off for the same input.
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float32)
    naive_var = np.maximum((x * x).mean(axis=-1, keepdims=True, dtype=np.float32) - mean * mean, 0)
    naive = (x - mean) / np.sqrt(naive_var + np.float32(1e-6))
    assert np.max(np.abs(naive - expected)) > 5e-2


def test_constant_rows_give_shift() -> None:
    x = mx.full((2, 3, 8), 7.0)
    shift = mx.array(np.linspace(-1, 1, 8, dtype=np.float32))
    out = np.array(fused_modulate(x, shift, mx.ones((8,))))
    np.testing.assert_allclose(out, np.broadcast_to(np.array(shift), (2, 3, 8)), atol=1e-6)


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_within_1e_2(dtype: mx.Dtype) -> None:
    rng = np.random.default_rng(6)
    x = mx.array(rng.standard_normal((2, 5, 77)).astype(np.float32) * 3).astype(dtype)
    shift = mx.array(rng.standard_normal((2, 77)).astype(np.float32)).astype(dtype)
    scale = mx.array(rng.standard_normal((2, 1, 77)).astype(np.float32) * 0.3).astype(dtype)
    out = fused_modulate(x, shift, scale)
    assert out.dtype == dtype
    expected = reference(as_f64(x), as_f64(shift)[:, None], as_f64(scale), 1e-6)
    np.testing.assert_allclose(as_f64(out), expected, rtol=1e-2, atol=2e-2)


def test_float32_conditioning_with_bfloat16_x() -> None:
    rng = np.random.default_rng(7)
    x = mx.array(rng.standard_normal((2, 4, 40)).astype(np.float32)).astype(mx.bfloat16)
    shift = rng.standard_normal((2, 40)).astype(np.float32)
    scale = rng.standard_normal((40,)).astype(np.float32)
    out = fused_modulate(x, mx.array(shift), mx.array(scale))
    assert out.dtype == mx.bfloat16
    expected = reference(as_f64(x), shift[:, None], scale, 1e-6)
    np.testing.assert_allclose(as_f64(out), expected, rtol=1e-2, atol=2e-2)


def test_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(8)
    base = mx.array(rng.standard_normal((3, 11, 2)).astype(np.float32))
    x = base.transpose(2, 0, 1)  # [2, 3, 11], not row-contiguous
    shift_base = mx.array(rng.standard_normal((11, 2)).astype(np.float32))
    shift = shift_base.T  # [2, 11] per sample, transposed view
    scale = mx.array(rng.standard_normal((22,)).astype(np.float32))[::2]  # strided [11]
    out = fused_modulate(x, shift, scale, eps=1e-6)
    expected = reference(np.array(x), np.array(shift)[:, None], np.array(scale), 1e-6)
    np.testing.assert_allclose(np.array(out), expected, rtol=1e-5, atol=2e-5)


def test_eps_changes_result() -> None:
    x = mx.array(np.random.default_rng(9).standard_normal((1, 2, 16)).astype(np.float32) * 0.01)
    zero = mx.zeros((16,))
    small = np.array(fused_modulate(x, zero, zero, eps=1e-12))
    large = np.array(fused_modulate(x, zero, zero, eps=1.0))
    np.testing.assert_allclose(large, reference(np.array(x), np.zeros(16), np.zeros(16), 1.0), rtol=1e-5)
    assert np.abs(small).max() > 10 * np.abs(large).max()


def test_empty_batch() -> None:
    out = fused_modulate(mx.zeros((0, 3, 4)), mx.zeros((4,)), mx.zeros((4,)))
    assert out.shape == (0, 3, 4)


@pytest.mark.parametrize(
    ("x_shape", "shift_shape", "match"),
    [
        ((8,), (8,), r"\[batch, seq, dim\] or \[seq, dim\]"),
        ((1, 2, 3, 8), (8,), r"\[batch, seq, dim\] or \[seq, dim\]"),
        ((2, 3, 8), (7,), "not broadcastable"),
        ((2, 3, 8), (3, 8), "not broadcastable"),
        ((2, 3, 8), (2, 2, 8), "not broadcastable"),
        ((3, 8), (2, 3, 8), "not broadcastable"),
        ((2, 3, 8), (1, 1, 1, 8), "shift has shape"),
        ((2, 3, 0), (0,), "empty last axis"),
    ],
)
def test_bad_shapes_are_rejected(x_shape: tuple[int, ...], shift_shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fused_modulate(mx.zeros(x_shape), mx.zeros(shift_shape), mx.zeros((x_shape[-1],)))


def test_bad_dtypes_and_types_are_rejected() -> None:
    x = mx.zeros((2, 3, 8))
    with pytest.raises(TypeError, match="scale has dtype"):
        fused_modulate(x, mx.zeros((8,)), mx.zeros((8,), dtype=mx.int32))
    with pytest.raises(TypeError, match="x has dtype"):
        fused_modulate(x.astype(mx.int8), mx.zeros((8,)), mx.zeros((8,)))
    with pytest.raises(TypeError, match=r"shift must be an mx\.array"):
        fused_modulate(x, np.zeros(8), mx.zeros((8,)))  # type: ignore[arg-type]


@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf")])
def test_bad_eps_values_are_rejected(eps: float) -> None:
    with pytest.raises(ValueError, match="eps must be finite"):
        fused_modulate(mx.zeros((1, 2, 4)), mx.zeros((4,)), mx.zeros((4,)), eps=eps)


@pytest.mark.parametrize("eps", [True, "1e-6", mx.array(1e-6)])
def test_bad_eps_types_are_rejected(eps: object) -> None:
    with pytest.raises(TypeError, match="eps must be a Python float"):
        fused_modulate(mx.zeros((1, 2, 4)), mx.zeros((4,)), mx.zeros((4,)), eps=eps)  # type: ignore[arg-type]
