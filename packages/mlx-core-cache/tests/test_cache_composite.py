"""CacheList, ArraysCache and the whole-model helpers."""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_core.cache import (
    ArraysCache,
    CacheList,
    CacheTrimError,
    KVCache,
    RotatingKVCache,
    can_trim_prompt_cache,
    make_prompt_cache,
    trim_prompt_cache,
)


def test_cache_list_delegates_and_trims() -> None:
    cl = CacheList(KVCache(), KVCache())
    cl[0].update_and_fetch(mx.ones((1, 1, 5, 4)), mx.ones((1, 1, 5, 4)))
    cl[1].update_and_fetch(mx.ones((1, 1, 5, 4)), mx.ones((1, 1, 5, 4)))
    assert bool(CacheList()) and cl.offset == 5 and cl.is_trimmable()
    assert cl.make_mask(3) == "causal"
    assert cl.trim(2) == 2 and cl[1].offset == 3
    with pytest.raises(TypeError, match="cache\\[i\\]"):
        cl.update_and_fetch(mx.ones((1, 1, 1, 4)), mx.ones((1, 1, 1, 4)))
    assert not CacheList(KVCache(), ArraysCache(1)).is_trimmable()


def test_arrays_cache_is_not_trimmable() -> None:
    a = ArraysCache(2, left_padding=[1, 0])
    a[1] = mx.ones((2, 3))
    assert bool(a) and a[0] is None and a.nbytes == 24
    assert not a.is_trimmable()
    with pytest.raises(CacheTrimError, match="cannot be trimmed"):
        a.trim(1)
    assert a.make_mask(3).tolist() == [[False, True, True], [True, True, True]]


class Layered:
    layers = (object(), object(), object())


class WithMakeCache:
    def make_cache(self) -> list:
        return [RotatingKVCache(8)]


def test_make_prompt_cache_and_trim() -> None:
    caches = make_prompt_cache(Layered())
    assert len(caches) == 3 and all(type(c) is KVCache for c in caches)
    rot = make_prompt_cache(Layered(), max_kv_size=32)
    assert all(type(c) is RotatingKVCache and c.max_size == 32 and c.keep == 4 for c in rot)
    assert type(make_prompt_cache(WithMakeCache())[0]) is RotatingKVCache
    with pytest.raises(TypeError, match="layers"):
        make_prompt_cache(object())
    for c in caches:
        c.update_and_fetch(mx.ones((1, 1, 6, 4)), mx.ones((1, 1, 6, 4)))
    assert can_trim_prompt_cache(caches)
    assert trim_prompt_cache(caches, 4) == 4 and all(c.offset == 2 for c in caches)
    with pytest.raises(CacheTrimError):
        trim_prompt_cache(caches, 3)
    assert all(c.offset == 2 for c in caches)  # nothing modified on error
    assert trim_prompt_cache([ArraysCache(1)], 1) == 0
