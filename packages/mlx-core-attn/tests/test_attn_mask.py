"""Attention masks: the three kinds, against a naive construction and mlx-lm's helpers."""

from __future__ import annotations

import mlx.core as mx
import mlx_core.cache as cache_pkg
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.attn import create_attention_mask, create_causal_mask, mask_to_array


def naive_causal(n: int, offset: int, window: int | None) -> np.ndarray:
    out = np.zeros((n, offset + n), dtype=bool)
    for i in range(n):
        for j in range(offset + n):
            out[i, j] = j <= offset + i and (window is None or j > offset + i - window)
    return out


def test_create_causal_mask_is_the_cache_one() -> None:
    assert create_causal_mask is cache_pkg.create_causal_mask


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), offset=st.integers(0, 20), window=st.one_of(st.none(), st.integers(1, 16)))
def test_causal_mask_matches_naive(n: int, offset: int, window: int | None) -> None:
    np.testing.assert_array_equal(
        np.array(create_causal_mask(n, offset, window_size=window)), naive_causal(n, offset, window)
    )


class OffsetOnly:
    """A cache-like object with an offset but no make_mask (exercises the fallback)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset


class RecordingCache:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        self.calls.append((n, return_array, window_size))
        return "from-cache"


def test_no_cache_kinds() -> None:
    h1, h5 = mx.zeros((2, 1, 8)), mx.zeros((2, 5, 8))
    assert create_attention_mask(h1) is None
    assert create_attention_mask(h5) == "causal"
    np.testing.assert_array_equal(
        np.array(create_attention_mask(h5, return_array=True)), naive_causal(5, 0, None)
    )
    np.testing.assert_array_equal(np.array(create_attention_mask(h5, window_size=3)), naive_causal(5, 0, 3))
    assert create_attention_mask(h5, window_size=5) == "causal"  # window never cuts in


def test_cache_make_mask_is_used() -> None:
    cache = RecordingCache()
    assert create_attention_mask(mx.zeros((1, 4, 8)), cache, window_size=7, return_array=True) == "from-cache"
    assert cache.calls == [(4, True, 7)]


@pytest.mark.parametrize(("n", "offset", "window"), [(1, 10, None), (1, 10, 4), (3, 10, None), (3, 2, 4)])
def test_offset_only_cache_fallback(n: int, offset: int, window: int | None) -> None:
    mask = create_attention_mask(mx.zeros((1, n, 8)), OffsetOnly(offset), window_size=window)
    full = naive_causal(n, offset, window)
    if mask is None:
        assert full.all()
    elif isinstance(mask, str):
        assert mask == "causal"
        np.testing.assert_array_equal(np.array(mask_to_array(mask, n, offset + n)), full)
    else:
        np.testing.assert_array_equal(np.array(mask), full)


def test_mask_to_array_lower_right() -> None:
    np.testing.assert_array_equal(np.array(mask_to_array("causal", 3, 7)), naive_causal(3, 4, None))
    assert mask_to_array(None, 3, 7) is None
    with pytest.raises(ValueError, match="causal"):
        mask_to_array("full", 3, 3)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"\[B, L, hidden\]"):
        create_attention_mask(mx.zeros((4,)))
    with pytest.raises(ValueError, match="window_size"):
        create_attention_mask(mx.zeros((1, 4, 8)), window_size=0)


@pytest.mark.parity
@pytest.mark.parametrize("window", [None, 3, 64])
@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("return_array", [False, True])
def test_matches_mlx_lm(window: int | None, n: int, return_array: bool) -> None:
    base = pytest.importorskip("mlx_lm.models.base")
    cache_mod = pytest.importorskip("mlx_lm.models.cache")
    h = mx.zeros((1, n, 8))
    for cache_factory in (lambda: None, cache_mod.KVCache, lambda: cache_mod.RotatingKVCache(max_size=8)):
        for prefill in (0, 5, 11):
            ref_cache, our_cache = cache_factory(), cache_factory()
            for c in (ref_cache, our_cache):
                if c is not None and prefill:
                    kv = mx.ones((1, 1, prefill, 4))
                    c.update_and_fetch(kv, kv)
            ref = base.create_attention_mask(h, ref_cache, window_size=window, return_array=return_array)
            ours = create_attention_mask(h, our_cache, window_size=window, return_array=return_array)
            if isinstance(ref, mx.array):
                assert isinstance(ours, mx.array)
                np.testing.assert_array_equal(np.array(ours), np.array(ref))
            else:
                assert ours == ref


@pytest.mark.parity
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 9), offset=st.integers(0, 12), window=st.one_of(st.none(), st.integers(1, 10)))
def test_causal_mask_matches_mlx_lm(n: int, offset: int, window: int | None) -> None:
    base = pytest.importorskip("mlx_lm.models.base")
    np.testing.assert_array_equal(
        np.array(create_causal_mask(n, offset, window_size=window)),
        np.array(base.create_causal_mask(n, offset, window_size=window)),
    )
