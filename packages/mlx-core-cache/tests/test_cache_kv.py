"""KVCache and ConcatKeyValueCache against a naive list-of-tokens reference, and their errors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.cache import (
    CacheDtypeError,
    CacheShapeError,
    CacheTrimError,
    ConcatKeyValueCache,
    KeyValueCache,
    KVCache,
)

B, H, DK, DV = 1, 2, 8, 4

ops = st.lists(
    st.one_of(
        st.tuples(st.just("u"), st.one_of(st.integers(1, 4), st.integers(1, 300))),
        st.tuples(st.just("t"), st.integers(0, 40)),
    ),
    min_size=1,
    max_size=12,
)


def run_against_reference(cache: KeyValueCache, seq: list[tuple[str, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_k: list[np.ndarray] = []
    ref_v: list[np.ndarray] = []
    for op, n in seq:
        if op == "t":
            n = min(n, len(ref_k))
            assert cache.trim(n) == n
            del ref_k[len(ref_k) - n :], ref_v[len(ref_v) - n :]
        else:
            k = rng.standard_normal((B, H, n, DK)).astype(np.float32)
            v = rng.standard_normal((B, H, n, DV)).astype(np.float32)
            mask = cache.make_mask(n, return_array=True)
            if n == 1:
                assert mask is None  # mlx-lm convention: one query sees everything
            else:
                np.testing.assert_array_equal(
                    np.array(mask), np.tril(np.ones((n, len(ref_k) + n)), len(ref_k)) > 0
                )
            ref_k.extend(np.split(k, n, axis=2))
            ref_v.extend(np.split(v, n, axis=2))
            gk, gv = cache.update_and_fetch(mx.array(k), mx.array(v))
            np.testing.assert_array_equal(np.array(gk), np.concatenate(ref_k, axis=2))
            np.testing.assert_array_equal(np.array(gv), np.concatenate(ref_v, axis=2))
        assert cache.offset == len(ref_k)


@settings(max_examples=30, deadline=None)
@given(ops, st.sampled_from([1, 3, 16, 256]), st.integers(0, 2**31 - 1))
def test_kvcache_matches_reference(seq: list[tuple[str, int]], step: int, seed: int) -> None:
    run_against_reference(KVCache(step=step), seq, seed)


@settings(max_examples=25, deadline=None)
@given(ops, st.integers(0, 2**31 - 1))
def test_concat_cache_matches_reference(seq: list[tuple[str, int]], seed: int) -> None:
    run_against_reference(ConcatKeyValueCache(), seq, seed)


def test_concat_trim_does_not_resurrect_entries() -> None:
    c = ConcatKeyValueCache()
    c.update_and_fetch(mx.ones((1, 1, 5, 4)), mx.ones((1, 1, 5, 4)))
    c.trim(3)
    k, _ = c.update_and_fetch(mx.full((1, 1, 1, 4), 7.0), mx.full((1, 1, 1, 4), 7.0))
    assert k.shape[2] == 3 and c.offset == 3
    assert float(k[0, 0, 2, 0]) == 7.0


def test_kvcache_grows_in_whole_steps() -> None:
    c = KVCache(step=8)
    c.update_and_fetch(mx.zeros((1, 1, 3, 4)), mx.zeros((1, 1, 3, 4)))
    assert c.keys is not None and c.keys.shape[2] == 8
    c.update_and_fetch(mx.zeros((1, 1, 6, 4)), mx.zeros((1, 1, 6, 4)))
    assert c.keys.shape[2] == 11  # mlx-lm: cut to offset, then add whole steps
    assert c.nbytes == 2 * 11 * 4 * 4


@pytest.mark.parametrize("cls", [KVCache, ConcatKeyValueCache])
def test_errors(cls: type) -> None:
    c = cls()
    assert bool(c) and isinstance(c, KeyValueCache)
    with pytest.raises(CacheShapeError, match="rank 4"):
        c.update_and_fetch(mx.zeros((1, 3, 4)), mx.zeros((1, 3, 4)))
    with pytest.raises(CacheShapeError, match="disagree"):
        c.update_and_fetch(mx.zeros((1, 2, 3, 4)), mx.zeros((1, 1, 3, 4)))
    c.update_and_fetch(mx.zeros((1, 2, 3, 4)), mx.zeros((1, 2, 3, 4)))
    with pytest.raises(CacheShapeError, match="key head dim 4 -> 8"):
        c.update_and_fetch(mx.zeros((1, 2, 1, 8)), mx.zeros((1, 2, 1, 4)))
    with pytest.raises(CacheShapeError, match="B 1 -> 2"):
        c.update_and_fetch(mx.zeros((2, 2, 1, 4)), mx.zeros((2, 2, 1, 4)))
    with pytest.raises(CacheDtypeError, match="mid-stream"):
        c.update_and_fetch(mx.zeros((1, 2, 1, 4), mx.float16), mx.zeros((1, 2, 1, 4), mx.float16))
    with pytest.raises(CacheTrimError, match="only 3"):
        c.trim(4)
    with pytest.raises(CacheTrimError, match=">= 0"):
        c.trim(-1)
    c.reset()
    assert c.offset == 0 and c.nbytes == 0
    c.update_and_fetch(mx.zeros((2, 2, 1, 8)), mx.zeros((2, 2, 1, 8)))  # new layout accepted after reset


def test_bad_step() -> None:
    with pytest.raises(ValueError, match="step"):
        KVCache(step=0)


def test_returned_view_does_not_alias_caller_arrays() -> None:
    c = KVCache(step=4)
    k = mx.ones((1, 1, 4, 2))
    c.update_and_fetch(k, k)
    c.trim(2)
    c.update_and_fetch(mx.zeros((1, 1, 1, 2)), mx.zeros((1, 1, 1, 2)))
    assert float(k.sum()) == 8.0


@pytest.mark.parity
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=8), st.integers(0, 2**31 - 1))
def test_kvcache_parity_with_mlx_lm(sizes: list[int], seed: int) -> None:
    C = pytest.importorskip("mlx_lm.models.cache")
    rng = np.random.default_rng(seed)
    ours, theirs = KVCache(), C.KVCache()
    for n in sizes:
        k = mx.array(rng.standard_normal((B, H, n, DK)).astype(np.float32))
        v = mx.array(rng.standard_normal((B, H, n, DV)).astype(np.float32))
        a, b = ours.update_and_fetch(k, v), theirs.update_and_fetch(k, v)
        assert mx.array_equal(a[0], b[0]) and mx.array_equal(a[1], b[1])
        assert ours.keys is not None and ours.keys.shape == theirs.keys.shape
        assert ours.make_mask(2, return_array=False) == theirs.make_mask(
            2, return_array=False, window_size=None
        )
