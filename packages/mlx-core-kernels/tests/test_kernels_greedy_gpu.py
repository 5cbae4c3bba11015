"""CUDA greedy_tokens against the MLX ops it replaces (lent H100 only)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import greedy_tokens

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend"),
]


def ops(logits: mx.array) -> mx.array:
    return mx.argmax(logits - mx.logsumexp(logits, axis=-1, keepdims=True), axis=-1).astype(mx.int32)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize(
    "rows,vocab", [(1, 1), (1, 7), (2, 2048), (3, 2049), (1, 128256), (4, 151936), (1, 600000)]
)
def test_kernel_matches_ops(dtype: mx.Dtype, rows: int, vocab: int) -> None:
    rng = np.random.default_rng(rows * vocab)
    for trial in range(4):
        x = mx.array((rng.standard_normal((rows, vocab)) * (1 + 3 * trial)).astype(np.float32)).astype(dtype)
        got, want = greedy_tokens(x, backend="cuda"), ops(x)
        assert got.dtype == mx.int32 and got.shape == (rows,)
        np.testing.assert_array_equal(np.array(got), np.array(want))


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_ties_across_blocks_go_to_the_first_index(dtype: mx.Dtype) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 128256)).astype(np.float32)
    x[0, [70000, 90000, 3]] = 12.0  # equal maxima in three different blocks
    x[1, [128255, 64000]] = 12.0
    xs = mx.array(x).astype(dtype)
    np.testing.assert_array_equal(np.array(greedy_tokens(xs, backend="cuda")), [3, 64000])
    np.testing.assert_array_equal(np.array(ops(xs)), [3, 64000])


def test_near_ties_round_like_the_ops() -> None:
    """Logits one bf16 step apart can become equal after the subtraction; the first then wins, as in MLX."""
    rng = np.random.default_rng(6)
    for _ in range(20):
        x = rng.standard_normal((1, 50000)).astype(np.float32) * 2
        top = float(x.max()) + 1.0
        x[0, rng.integers(0, 50000, 6)] = top - np.arange(6) * 2.0**-6  # a cluster just below the top
        xs = mx.array(x).astype(mx.bfloat16)
        np.testing.assert_array_equal(np.array(greedy_tokens(xs, backend="cuda")), np.array(ops(xs)))


def test_masked_and_non_contiguous_rows() -> None:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((5000, 6)).astype(np.float32)
    base[::3] = -np.inf
    x = mx.array(base).astype(mx.bfloat16).T  # [6, 5000] transposed view: copied to rows first
    np.testing.assert_array_equal(np.array(greedy_tokens(x, backend="cuda")), np.array(ops(x)))
    y = mx.array(rng.standard_normal((2, 3, 999)).astype(np.float32))
    got = greedy_tokens(y, backend="cuda")
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(np.array(got), np.array(ops(y)))


def test_inside_compile() -> None:
    rng = np.random.default_rng(8)
    step = mx.compile(lambda v: greedy_tokens(v * 2.0, backend="cuda"))
    for _ in range(3):
        x = mx.array(rng.standard_normal((1, 128256)).astype(np.float32)).astype(mx.bfloat16)
        np.testing.assert_array_equal(np.array(step(x)), np.array(ops(x * 2.0)))


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_misaligned_rows_take_the_scalar_loads(dtype: mx.Dtype) -> None:
    rng = np.random.default_rng(9)
    flat = mx.array(rng.standard_normal(3 * 4096 + 1).astype(np.float32)).astype(dtype)
    x = flat[1:].reshape(3, 4096)  # row-contiguous, but starting one element past a 16-byte boundary
    np.testing.assert_array_equal(np.array(greedy_tokens(x, backend="cuda")), np.array(ops(x)))
    y = flat[: 3 * 4095].reshape(3, 4095)  # rows of 4095: every other row starts misaligned
    np.testing.assert_array_equal(np.array(greedy_tokens(y, backend="cuda")), np.array(ops(y)))
