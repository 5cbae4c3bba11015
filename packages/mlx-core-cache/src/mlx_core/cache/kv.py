"""KVCache: step-preallocated cache written in place, the default for decoding (mlx-lm's KVCache)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mlx.core as mx
from mlx_core.cache.base import check_against
from mlx_core.cache.prefix import PrefixCache
from mlx_core.cache.registry import register_cache_class

if TYPE_CHECKING:
    from mlx_core.cache.quantized import QuantizedKVCache


@register_cache_class
class KVCache(PrefixCache):
    """Pre-allocates ``[B, H, n*step, D]`` buffers, writes updates in place and returns ``[..., :offset,
    :]`` views.

    Grows by whole ``step`` blocks (same allocation pattern and outputs as mlx-lm's ``KVCache``). ``trim``
    lowers ``offset``; the next update overwrites the trimmed slots.
    """

    def __init__(self, step: int = 256) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step <= 0:
            raise ValueError(f"KVCache step must be a positive int, got {step!r}")
        self.step = step
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0
        self._layout: Any = None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        self._layout = check_against(keys, values, self._layout)
        prev = self.offset
        S = keys.shape[2]
        if self.keys is None or self.values is None or prev + S > self.keys.shape[2]:
            B, H, _, Dk = keys.shape
            Dv = values.shape[3]
            n = (self.step + S - 1) // self.step * self.step
            new_k = mx.zeros((B, H, n, Dk), keys.dtype)
            new_v = mx.zeros((B, H, n, Dv), values.dtype)
            if self.keys is not None and self.values is not None:
                if prev % self.step != 0:
                    self.keys = self.keys[..., :prev, :]
                    self.values = self.values[..., :prev, :]
                self.keys = mx.concatenate([self.keys, new_k], axis=2)
                self.values = mx.concatenate([self.values, new_v], axis=2)
            else:
                self.keys, self.values = new_k, new_v
        self.offset = prev + S
        self.keys[..., prev : self.offset, :] = keys
        self.values[..., prev : self.offset, :] = values
        if self.offset < self.keys.shape[2]:
            return self.keys[..., : self.offset, :], self.values[..., : self.offset, :]
        return self.keys, self.values

    def reset(self) -> None:
        self.keys = self.values = None
        self.offset = 0
        self._layout = None

    def to_quantized(self, group_size: int = 64, bits: int = 4) -> QuantizedKVCache:
        """A ``QuantizedKVCache`` holding this cache's content quantized (mlx-lm's ``to_quantized``)."""
        from mlx_core.cache.quantized import QuantizedKVCache

        q = QuantizedKVCache(group_size=group_size, bits=bits)
        if self.keys is not None and self.values is not None and self.offset:
            k, v = self.state
            q.update_and_fetch(k, v)
        return q

    @property
    def state(self) -> list[mx.array]:
        """``[keys, values]`` trimmed to ``offset`` (empty list before the first update)."""
        if self.keys is None or self.values is None:
            return []
        if self.offset < self.keys.shape[2]:
            return [self.keys[..., : self.offset, :], self.values[..., : self.offset, :]]
        return [self.keys, self.values]

    @state.setter
    def state(self, v: Any) -> None:
        self.keys = self.values = None
        self.offset = 0
        self._layout = None
        if v:
            self.keys, self.values = v
            self._layout = check_against(self.keys, self.values, None)
            self.offset = self.keys.shape[2]

    @property
    def meta_state(self) -> tuple[str, ...]:
        return (str(self.step),)

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        self.step = int(v[0]) if v else 256

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None or self.values is None else self.keys.nbytes + self.values.nbytes
