"""QuantizedKVCache: parity with mlx-lm, closeness to the float reference, parameter errors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx.utils import tree_flatten
from mlx_core.cache import CacheShapeError, KVCache, QuantizedKVCache


@pytest.mark.parity
@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(1, 300), min_size=1, max_size=6), st.sampled_from([4, 8]), st.integers(0, 2**31 - 1)
)
def test_parity_with_mlx_lm(sizes: list[int], bits: int, seed: int) -> None:
    C = pytest.importorskip("mlx_lm.models.cache")
    rng = np.random.default_rng(seed)
    ours, theirs = QuantizedKVCache(group_size=32, bits=bits), C.QuantizedKVCache(group_size=32, bits=bits)
    for n in sizes:
        k = mx.array(rng.standard_normal((1, 2, n, 64)).astype(np.float32))
        v = mx.array(rng.standard_normal((1, 2, n, 64)).astype(np.float32))
        for (_, a), (_, b) in zip(
            tree_flatten(ours.update_and_fetch(k, v)),
            tree_flatten(theirs.update_and_fetch(k, v)),
            strict=False,
        ):
            assert a.shape == b.shape and mx.array_equal(a, b)
    t = sizes[-1] // 2
    assert ours.trim(t) == theirs.trim(t) and ours.offset == theirs.offset


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_dequantized_close_to_float_cache(bits: int) -> None:
    rng = np.random.default_rng(bits)
    q, f = QuantizedKVCache(group_size=64, bits=bits), KVCache()
    for n in (7, 1, 1, 260):
        k = mx.array(rng.standard_normal((1, 2, n, 64)).astype(np.float32))
        (qk, _), (fk, _) = q.update_and_fetch(k, k), f.update_and_fetch(k, k)
    err = float(mx.abs(q.dequantize(qk) - fk).max())
    assert err < 4.0 / (2**bits - 1) * 3  # within a few quantization steps of the group range
    assert q.nbytes < f.nbytes


def test_to_quantized_and_state_roundtrip() -> None:
    rng = np.random.default_rng(0)
    f = KVCache()
    k = mx.array(rng.standard_normal((1, 2, 9, 64)).astype(np.float32))
    f.update_and_fetch(k, k)
    q = f.to_quantized(group_size=64, bits=4)
    assert q.offset == 9 and q.bits == 4
    assert mx.array_equal(q.state[0], mx.quantize(k, group_size=64, bits=4)[0])


def test_errors() -> None:
    with pytest.raises(ValueError, match="bits"):
        QuantizedKVCache(bits=7)
    with pytest.raises(ValueError, match="group_size"):
        QuantizedKVCache(group_size=48)
    with pytest.raises(CacheShapeError, match="multiple of group_size"):
        QuantizedKVCache(group_size=64).update_and_fetch(mx.zeros((1, 1, 1, 32)), mx.zeros((1, 1, 1, 32)))
