"""PrefixCache: shared behaviour of caches that hold positions ``[0, offset)`` and nothing else."""

from __future__ import annotations

from typing import Any

from mlx_core.cache.base import BaseCache, check_trim
from mlx_core.cache.mask import MaskLike, attention_mask_for_offset


class PrefixCache(BaseCache):
    """Masks follow ``offset``; trimming lowers it (subclasses that must drop data override `trim`).

    Subclasses set ``keys`` (``None`` while empty) and an ``offset`` attribute (KVCache, QuantizedKVCache).
    """

    keys: Any
    offset: int

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> MaskLike:
        return attention_mask_for_offset(N, self.offset, return_array, window_size)

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        self.offset -= check_trim(n, self.offset)
        return n

    def size(self) -> int:
        return self.offset

    def empty(self) -> bool:
        return self.keys is None
