"""CacheList: several caches for one layer (hybrid models), trimmed and saved together."""

from __future__ import annotations

import json
from typing import Any

from mlx_core.cache.base import BaseCache
from mlx_core.cache.errors import CacheTrimError
from mlx_core.cache.mask import MaskLike
from mlx_core.cache.registry import cache_class_name, get_cache_class, register_cache_class


@register_cache_class
class CacheList(BaseCache):
    """Holds caches ``caches[i]`` for one layer; ``offset``/``make_mask``/``max_size`` come from the first.

    A layer indexes it (``cache[0].update_and_fetch(...)``); calling ``update_and_fetch`` on the list itself
    raises ``TypeError``. Trimmable only when every member is.
    """

    def __init__(self, *caches: Any) -> None:
        self.caches: tuple[Any, ...] = tuple(caches)

    def __getitem__(self, idx: int) -> Any:
        return self.caches[idx]

    def __len__(self) -> int:
        return len(self.caches)

    @property
    def offset(self) -> int:
        return self.caches[0].offset if self.caches else 0

    @property
    def max_size(self) -> int | None:  # type: ignore[override]
        return self.caches[0].max_size if self.caches else None

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        raise TypeError("CacheList holds several caches; call update_and_fetch on one of them: cache[i]")

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> MaskLike:
        if not self.caches:
            return None
        return self.caches[0].make_mask(N, return_array=return_array, window_size=window_size)

    def is_trimmable(self) -> bool:
        return bool(self.caches) and all(c.is_trimmable() for c in self.caches)

    def trim(self, n: int) -> int:
        if not self.is_trimmable():
            raise CacheTrimError("CacheList holds a cache that cannot be trimmed; check is_trimmable() first")
        for c in self.caches:
            if getattr(c, "offset", 0) < n:
                raise CacheTrimError(f"cannot trim {n} tokens: a member holds only {c.offset}")
        trimmed = [c.trim(n) for c in self.caches]
        return trimmed[0]

    def reset(self) -> None:
        for c in self.caches:
            c.reset()

    def size(self) -> int:
        return max((c.size() for c in self.caches), default=0)

    def empty(self) -> bool:
        return not self.caches or self.caches[0].empty()

    @property
    def state(self) -> list[Any]:
        return [c.state for c in self.caches]

    @state.setter
    def state(self, v: Any) -> None:
        pending = getattr(self, "_pending_meta", None)
        if pending is None:
            if len(v) != len(self.caches):
                raise ValueError(f"CacheList state has {len(v)} entries for {len(self.caches)} caches")
            for c, s in zip(self.caches, v, strict=False):
                c.state = s
            return
        if len(v) != len(pending):
            raise ValueError(
                f"CacheList state has {len(v)} entries but meta_state names {len(pending)} caches"
            )
        self.caches = tuple(
            get_cache_class(name).from_state(s, tuple(meta))
            for (name, meta), s in zip(pending, v, strict=False)
        )
        del self._pending_meta

    @property
    def meta_state(self) -> tuple[str, ...]:
        return (json.dumps([[cache_class_name(c), list(c.meta_state)] for c in self.caches]),)

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        self._pending_meta = [tuple(x) for x in json.loads(v[0])] if v else []
        if not hasattr(self, "caches"):
            self.caches = ()

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.caches)

    def __repr__(self) -> str:
        return f"CacheList({', '.join(repr(c) for c in self.caches)})"
