"""ArraysCache: fixed slots of arbitrary arrays (recurrent / SSM state) for hybrid models."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_core.cache.base import BaseCache
from mlx_core.cache.registry import register_cache_class


@register_cache_class
class ArraysCache(BaseCache):
    """``size`` slots a layer reads and writes by index (``cache[0] = conv_state``), like mlx-lm's
    ArraysCache.

    Recurrent state cannot be rewound, so it is not trimmable. ``offset`` counts tokens the caller reports
    through ``advance(n)`` (0 otherwise). ``make_mask(N)`` returns a ``[B, N]`` boolean mask hiding left
    padding
    when ``left_padding`` is given, else ``None``.
    """

    def __init__(self, size: int, left_padding: list[int] | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"ArraysCache size must be a positive int, got {size!r}")
        self.cache: list[mx.array | None] = [None] * size
        self.left_padding = mx.array(left_padding) if left_padding else None
        self.offset = 0

    def __setitem__(self, idx: int, value: mx.array | None) -> None:
        self.cache[idx] = value

    def __getitem__(self, idx: int) -> mx.array | None:
        return self.cache[idx]

    def __len__(self) -> int:
        return len(self.cache)

    def advance(self, n: int) -> None:
        """Record that ``n`` tokens were consumed (keeps ``offset`` meaningful)."""
        self.offset += n

    def update_and_fetch(self, keys: Any, values: Any) -> tuple[Any, Any]:
        raise TypeError(
            "ArraysCache stores recurrent state by slot (cache[i] = x); it has no key/value update"
        )

    def make_mask(
        self, N: int, return_array: bool = False, window_size: int | None = None
    ) -> mx.array | None:
        if self.left_padding is None:
            return None
        return mx.arange(N)[None] >= self.left_padding[:, None]

    def reset(self) -> None:
        self.cache = [None] * len(self.cache)
        self.offset = 0

    def empty(self) -> bool:
        return self.cache[0] is None

    @property
    def state(self) -> list[mx.array | None]:
        return list(self.cache)

    @state.setter
    def state(self, v: Any) -> None:
        self.cache = list(v)
        if not hasattr(self, "left_padding"):
            self.left_padding = None
        if not hasattr(self, "offset"):
            self.offset = 0

    @property
    def meta_state(self) -> tuple[str, ...]:
        return (str(len(self.cache)), str(self.offset))

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        self.cache = [None] * int(v[0])
        self.offset = int(v[1])
        self.left_padding = None

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.cache if c is not None)
