"""CUDA fused matvec against the same computation as MLX ops and a float64 reference (lent H100 only)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import fused_matvec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend"),
]


BACKEND = "cuda"


def rand(shape: tuple[int, ...], dtype: mx.Dtype, seed: int, scale: float = 1.0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(dtype)


def f64(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


def tol(dtype: mx.Dtype) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == mx.float32 else {"rtol": 2e-2, "atol": 2e-2}


TF32 = {"rtol": 5e-3, "atol": 5e-3}


def weights(out: int, inp: int, dtype: mx.Dtype, bits: int | None, group: int, seed: int) -> dict:
    w = rand((out, inp), dtype, seed, scale=inp**-0.5)
    if bits is None:
        return {"weight": w, "dense": f64(w)}
    packed, scales, biases = mx.quantize(w, group_size=group, bits=bits)
    dense = mx.dequantize(packed, scales, biases, group_size=group, bits=bits)
    return {
        "weight": packed,
        "scales": scales,
        "biases": biases,
        "bits": bits,
        "group_size": group,
        "dense": f64(dense),
    }


def reference(x: np.ndarray, w: np.ndarray, norm: np.ndarray | None, eps: float, res, swiglu: bool):
    if norm is not None:
        x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * norm
    y = x @ w.T
    if swiglu:
        g, u = np.split(y, 2, axis=-1)
        y = g / (1 + np.exp(-g)) * u
    if res is not None:
        y = res + y
    return y


def check(rows: int, inp: int, out: int, epilogue: str, bits: int | None, dtype: mx.Dtype) -> None:
    """The kernel against float64 (always) and against MLX's ops (where those are the more exact)."""
    x = rand((rows, 1, inp), dtype, 1)
    wt = weights(out, inp, dtype, bits, 64, 2)
    dense = wt.pop("dense")
    norm = rand((inp,), dtype, 3) if "norm" in epilogue else None
    swiglu = "swiglu" in epilogue
    res = rand((rows, 1, out // 2 if swiglu else out), dtype, 4) if epilogue == "residual" else None
    kw = {**wt, "norm_weight": norm, "eps": 1e-5, "residual": res, "swiglu": swiglu}
    got = fused_matvec(x, backend=BACKEND, **kw)
    ops = fused_matvec(x, backend="fallback", **kw)
    assert got.shape == ops.shape and got.dtype == dtype
    want = reference(
        f64(x), dense, None if norm is None else f64(norm), 1e-5, None if res is None else f64(res), swiglu
    )
    np.testing.assert_allclose(f64(got), want, **tol(dtype))
    # Against MLX's ops, which are the less exact side here: half-precision quantized matmul, and float32
    # matmul on CUDA (TF32 tensor cores).
    if bits is None or dtype == mx.float32:
        np.testing.assert_allclose(f64(got), f64(ops), **(tol(dtype) if dtype != mx.float32 else TF32))
    assert np.abs(want).max() > 0.1


@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16, mx.float32])
@pytest.mark.parametrize("bits", [None, 4, 8])
@pytest.mark.parametrize("epilogue", ["plain", "norm", "residual", "norm+swiglu"])
def test_epilogues_weights_dtypes(epilogue: str, bits: int | None, dtype: mx.Dtype) -> None:
    """Every prologue/epilogue × dense/4-bit/8-bit × dtype, three input rows."""
    check(3, 2048, 1024, epilogue, bits, dtype)


@pytest.mark.parametrize("bits", [None, 4])
@pytest.mark.parametrize("epilogue", ["norm+swiglu", "residual"])
@pytest.mark.parametrize(("rows", "inp", "out"), [(1, 1024, 4096), (1, 3072, 1024), (8, 1024, 512)])
def test_shapes(rows: int, inp: int, out: int, epilogue: str, bits: int | None) -> None:
    """Decode shapes (one token; eight rows) of the Qwen3-0.6B / Llama-3.2-1B layers, bf16."""
    check(rows, inp, out, epilogue, bits, mx.bfloat16)


def kernel_vs_ops(x: mx.array, wt: dict, **kw: object) -> tuple[mx.array, mx.array]:
    """The CUDA kernel's and the MLX ops' results for the same arguments (``wt`` without "dense"),
    checked to agree at bf16 tolerance.
    """
    args = {k: v for k, v in wt.items() if k != "dense"}
    got = fused_matvec(x, backend=BACKEND, **args, **kw)
    ops = fused_matvec(x, backend="fallback", **args, **kw)
    np.testing.assert_allclose(f64(got), f64(ops), rtol=2e-2, atol=2e-2)
    return got, ops


@pytest.mark.parametrize("bits", [None, 4])
def test_vocab_sized_head(bits: int | None) -> None:
    """The many-rows-per-warp launch (output projection, 151936 rows) with the final norm folded in."""
    x = rand((1, 1, 1024), mx.bfloat16, 5)
    wt = weights(151936, 1024, mx.bfloat16, bits, 64, 6)
    got, ops = kernel_vs_ops(x, wt, norm_weight=rand((1024,), mx.bfloat16, 7), eps=1e-6)
    assert int(mx.argmax(got)) == int(mx.argmax(ops)) or abs(float(got.max() - ops.max())) < 0.05


def test_group_sizes_and_unaligned_input_view() -> None:
    """Groups of 32 and 128, and an input that is a row-contiguous slice (offset pointer)."""
    big = rand((2, 1, 2048 + 256), mx.bfloat16, 8)
    x = big[:, :, 256:]
    for group in (32, 128):
        kernel_vs_ops(x, weights(768, 2048, mx.bfloat16, 4, group, 9))


@pytest.mark.parametrize("bits", [None, 4, 8])
def test_input_at_an_unaligned_offset_with_norm(bits: int | None) -> None:
    """One row starting 3 elements into its buffer (no 16-byte loads): the element-wise staging path,
    including the norm weight's, must give what the MLX ops give.
    """
    x = rand((1, 1, 2048 + 3), mx.bfloat16, 10)[:, :, 3:]
    wt = weights(1024, 2048, mx.bfloat16, bits, 64, 11)
    kernel_vs_ops(x, wt, norm_weight=rand((2048,), mx.bfloat16, 12), eps=1e-6)
