"""StaticKVCache and QuantizedKVCache under random updates and trims, against a naive list of tokens.

Complements test_cache_kv.py (KVCache, ConcatKeyValueCache) so every trimmable cache is checked the same
way: after each update the returned keys/values and the mask equal the reference, and trims drop exactly
the newest tokens.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.cache import QuantizedKVCache, StaticKVCache

B, H = 1, 2
ops = st.lists(
    st.one_of(
        st.tuples(st.just("u"), st.one_of(st.integers(1, 4), st.integers(1, 300))),
        st.tuples(st.just("t"), st.integers(0, 40)),
    ),
    min_size=1,
    max_size=10,
)


def _causal(n: int, held: int, width: int) -> np.ndarray:
    """Query i (at position held + i) sees keys 0..held + i of a buffer ``width`` wide."""
    return np.tril(np.ones((n, width)), held) > 0


@settings(max_examples=25, deadline=None)
@given(ops, st.integers(0, 2**31 - 1))
def test_static_cache_matches_reference(seq: list[tuple[str, int]], seed: int) -> None:
    capacity = 3200  # more than 10 updates of at most 300 tokens
    cache, rng = StaticKVCache(capacity), np.random.default_rng(seed)
    ref_k: list[np.ndarray] = []
    ref_v: list[np.ndarray] = []
    for op, n in seq:
        if op == "t":
            n = min(n, len(ref_k))
            assert cache.trim(n) == n
            del ref_k[len(ref_k) - n :], ref_v[len(ref_v) - n :]
        else:
            k = rng.standard_normal((B, H, n, 8)).astype(np.float32)
            v = rng.standard_normal((B, H, n, 4)).astype(np.float32)
            mask = cache.make_mask(n)
            np.testing.assert_array_equal(np.array(mask), _causal(n, len(ref_k), capacity))
            ref_k.extend(np.split(k, n, axis=2))
            ref_v.extend(np.split(v, n, axis=2))
            gk, gv = cache.update_and_fetch(mx.array(k), mx.array(v))
            assert gk.shape[2] == capacity and gv.shape[2] == capacity  # same shapes every step
            held = len(ref_k)
            np.testing.assert_array_equal(np.array(gk)[:, :, :held], np.concatenate(ref_k, axis=2))
            np.testing.assert_array_equal(np.array(gv)[:, :, :held], np.concatenate(ref_v, axis=2))
        assert cache.offset == len(ref_k)


@settings(max_examples=25, deadline=None)
@given(ops, st.sampled_from([4, 8]), st.integers(0, 2**31 - 1))
def test_quantized_cache_matches_reference(seq: list[tuple[str, int]], bits: int, seed: int) -> None:
    group = 32
    cache, rng = QuantizedKVCache(group_size=group, bits=bits), np.random.default_rng(seed)
    ref_k: list[np.ndarray] = []
    ref_v: list[np.ndarray] = []

    def roundtrip(x: np.ndarray) -> np.ndarray:
        """Each token is quantized on its own (groups run along D), so chunking cannot matter."""
        q = mx.quantize(mx.array(x), group_size=group, bits=bits)
        return np.array(mx.dequantize(*q, group_size=group, bits=bits))

    for op, n in seq:
        if op == "t":
            n = min(n, len(ref_k))
            assert cache.trim(n) == n
            del ref_k[len(ref_k) - n :], ref_v[len(ref_v) - n :]
        else:
            k = rng.standard_normal((B, H, n, 64)).astype(np.float32)
            v = rng.standard_normal((B, H, n, 64)).astype(np.float32)
            mask = cache.make_mask(n, return_array=True)
            if n > 1:
                np.testing.assert_array_equal(np.array(mask), _causal(n, len(ref_k), len(ref_k) + n))
            ref_k.extend(np.split(roundtrip(k), n, axis=2))
            ref_v.extend(np.split(roundtrip(v), n, axis=2))
            qk, qv = cache.update_and_fetch(mx.array(k), mx.array(v))
            got_k = np.array(mx.dequantize(*qk, group_size=group, bits=bits))
            got_v = np.array(mx.dequantize(*qv, group_size=group, bits=bits))
            np.testing.assert_array_equal(got_k, np.concatenate(ref_k, axis=2))
            np.testing.assert_array_equal(got_v, np.concatenate(ref_v, axis=2))
        assert cache.offset == len(ref_k)
