"""ConcatKeyValueCache: the simplest cache, concatenating every update; a readable reference."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_core.cache.base import BaseCache, check_against, check_trim
from mlx_core.cache.mask import MaskLike, attention_mask_for_offset
from mlx_core.cache.registry import register_cache_class


@register_cache_class
class ConcatKeyValueCache(BaseCache):
    """Holds keys/values ``[B, H, offset, D]`` and concatenates each update along the sequence axis.

    Unlike mlx-lm's ``ConcatenateKVCache``, ``trim`` really drops the trimmed entries, so they never come
    back.
    Each update copies the whole history (O(L) per token); prefer ``KVCache`` for decoding.
    """

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self._layout: Any = None

    @property
    def offset(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self._layout = check_against(keys, values, self._layout)
        if self.keys is None or self.values is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        return self.keys, self.values

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> MaskLike:
        return attention_mask_for_offset(N, self.offset, return_array, window_size)

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        check_trim(n, self.offset)
        if n and self.keys is not None and self.values is not None:
            keep = self.offset - n
            self.keys = self.keys[..., :keep, :]
            self.values = self.values[..., :keep, :]
        return n

    def reset(self) -> None:
        self.keys = self.values = None
        self._layout = None

    def size(self) -> int:
        return self.offset

    def empty(self) -> bool:
        return self.keys is None

    @property
    def state(self) -> list[mx.array]:
        return [] if self.keys is None or self.values is None else [self.keys, self.values]

    @state.setter
    def state(self, v: Any) -> None:
        self.reset()
        if v:
            self.keys, self.values = v
            self._layout = check_against(self.keys, self.values, None)

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None or self.values is None else self.keys.nbytes + self.values.nbytes
