"""The cache protocol mlx-lm-style model code relies on."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import mlx.core as mx
from mlx_core.cache.mask import MaskLike


@runtime_checkable
class KeyValueCache(Protocol):
    """Per-layer cache for autoregressive attention, as used by mlx-lm models.

    Keys/values are ``[B, n_kv_heads, L, D]``. ``offset`` is the number of tokens seen so far (the position of
    the next token); ``max_size`` is ``None`` for unbounded caches and the window for sliding-window ones.
    ``state`` is a list of arrays (settable), ``meta_state`` a tuple of strings; together they rebuild the
    cache.
    A cache is always truthy (mlx-lm skips ``make_mask`` on falsy caches).
    """

    @property
    def offset(self) -> int: ...

    @property
    def max_size(self) -> int | None: ...

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Any, Any]: ...

    @property
    def state(self) -> Any: ...

    @property
    def meta_state(self) -> tuple[str, ...]: ...

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> MaskLike: ...

    def is_trimmable(self) -> bool: ...

    def trim(self, n: int) -> int: ...

    def reset(self) -> None: ...

    @property
    def nbytes(self) -> int: ...
