"""save/load round trip for every cache class (a user-defined one included) and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_core.cache import (
    ArraysCache,
    CacheFileError,
    CacheList,
    ConcatKeyValueCache,
    KVCache,
    QuantizedKVCache,
    QuantizedRotatingKVCache,
    RotatingKVCache,
    StaticKVCache,
    load_prompt_cache,
    register_cache_class,
    save_prompt_cache,
)


@register_cache_class(name="tests.ScaledKVCache")
class ScaledKVCache(KVCache):
    """A user cache with its own meta_state entry."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__(step=8)
        self.scale = scale

    @property
    def meta_state(self) -> tuple[str, ...]:
        return (str(self.step), str(self.scale))

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        self.step, self.scale = int(v[0]), float(v[1])


def filled(cache: Any, rng: np.random.Generator) -> Any:
    for n in (5, 1, 40, 1, 1):
        k = mx.array(rng.standard_normal((1, 2, n, 32)).astype(np.float32))
        cache.update_and_fetch(k, k + 1)
    return cache


def make_all(rng: np.random.Generator) -> list[Any]:
    arrays = ArraysCache(2)
    arrays[0] = mx.array(rng.standard_normal((1, 3, 4)).astype(np.float32))
    arrays.advance(7)
    return [
        filled(KVCache(), rng),
        filled(ConcatKeyValueCache(), rng),
        filled(RotatingKVCache(16, keep=2), rng),
        filled(QuantizedKVCache(group_size=32, bits=4), rng),
        filled(QuantizedRotatingKVCache(16, keep=1, group_size=32), rng),
        filled(StaticKVCache(128), rng),
        CacheList(filled(KVCache(), rng), filled(RotatingKVCache(8), rng)),
        arrays,
        filled(ScaledKVCache(3.5), rng),
    ]


def test_round_trip_every_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    caches = make_all(rng)
    path = tmp_path / "prompt"
    save_prompt_cache(path, caches, {"model": "tiny"})
    loaded, meta = load_prompt_cache(tmp_path / "prompt.safetensors", return_metadata=True)
    assert meta == {"model": "tiny"}
    assert [type(c) for c in loaded] == [type(c) for c in caches]
    for a, b in zip(caches, loaded, strict=False):
        assert a.offset == b.offset and a.meta_state == b.meta_state
        fa, fb = tree_flatten(a.state), tree_flatten(b.state)
        assert len(fa) == len(fb)
        assert all(
            (x is None and y is None) or mx.array_equal(x, y) for (_, x), (_, y) in zip(fa, fb, strict=False)
        )
    assert loaded[-1].scale == 3.5
    # loaded caches keep working identically
    rng2a, rng2b = np.random.default_rng(5), np.random.default_rng(5)
    for a, b in zip(caches, loaded, strict=False):
        if isinstance(a, (CacheList, ArraysCache)):
            continue
        ra, rb = filled(a, rng2a), filled(b, rng2b)
        ka = tree_flatten(ra.update_and_fetch(mx.ones((1, 2, 1, 32)), mx.ones((1, 2, 1, 32))))
        kb = tree_flatten(rb.update_and_fetch(mx.ones((1, 2, 1, 32)), mx.ones((1, 2, 1, 32))))
        assert all(mx.array_equal(x, y) for (_, x), (_, y) in zip(ka, kb, strict=False))


def test_unknown_class_and_foreign_file(tmp_path: Path) -> None:
    class Unregistered(KVCache):
        pass

    with pytest.raises(CacheFileError, match="not registered"):
        save_prompt_cache(tmp_path / "x", [Unregistered()])
    mx.save_safetensors(str(tmp_path / "weights.safetensors"), {"w": mx.ones(3)})
    with pytest.raises(CacheFileError, match=r"not an mlx_core\.cache prompt-cache file"):
        load_prompt_cache(tmp_path / "weights.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CacheFileError, match="not a readable"):
        load_prompt_cache(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        load_prompt_cache(tmp_path / "missing.safetensors")
    save_prompt_cache(tmp_path / "ok", [KVCache()])
    import json

    arrays, header = mx.load(str(tmp_path / "ok.safetensors"), return_metadata=True)
    header["mlx_core.cache.caches"] = json.dumps([{"class": "NoSuchCache", "meta": [], "state": []}])
    mx.save_safetensors(str(tmp_path / "bad.safetensors"), arrays, header)
    with pytest.raises(CacheFileError, match="unknown cache class 'NoSuchCache'"):
        load_prompt_cache(tmp_path / "bad.safetensors")


def test_registry_rejects_name_clash() -> None:
    class Other(KVCache):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_cache_class(Other, name="KVCache")
