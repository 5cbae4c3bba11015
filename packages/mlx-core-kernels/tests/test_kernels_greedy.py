"""greedy_tokens on the CPU (the MLX ops) against a float64 numpy argmax of the log-probabilities."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import greedy_tokens
from mlx_core.kernels.greedy import greedy_blocks


def reference(logits: np.ndarray) -> np.ndarray:
    """First index of the largest log-probability, in float64 (no rounding ties on random floats)."""
    x = logits.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    lse = top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
    return np.argmax(x - lse, axis=-1)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 2049), (2, 5, 300), (4096,)])
def test_float32_matches_float64_argmax(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    out = greedy_tokens(mx.array(x))
    assert out.dtype == mx.int32 and out.shape == shape[:-1]
    np.testing.assert_array_equal(np.array(out), reference(x))


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_ties_go_to_the_first_index(dtype: mx.Dtype) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    x[:, [17, 500, 999]] = 9.0  # three equal maxima per row
    out = greedy_tokens(mx.array(x).astype(dtype))
    np.testing.assert_array_equal(np.array(out), [17, 17, 17])


def test_masked_logits() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 513)).astype(np.float32)
    x[:, ::2] = -np.inf
    out = np.array(greedy_tokens(mx.array(x)))
    np.testing.assert_array_equal(out, reference(np.where(np.isinf(x), -1e30, x)))
    assert np.all(out % 2 == 1)


def test_blocks_per_row() -> None:
    assert greedy_blocks(1) == 1
    assert greedy_blocks(2048) == 1
    assert greedy_blocks(2049) == 2
    assert greedy_blocks(128256) == 63
    assert greedy_blocks(10**8) == 256


def test_bad_input_is_named() -> None:
    with pytest.raises(TypeError, match=r"logits must be an mx\.array"):
        greedy_tokens(np.zeros((1, 4), np.float32))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"logits has dtype .*int32"):
        greedy_tokens(mx.zeros((1, 4), mx.int32))
    with pytest.raises(ValueError, match="V >= 1"):
        greedy_tokens(mx.zeros((2, 0)))
    with pytest.raises(ValueError, match="V >= 1"):
        greedy_tokens(mx.array(1.0))
    with pytest.raises(ValueError, match="not a kernels backend"):
        greedy_tokens(mx.zeros((1, 4)), backend="tpu")
