"""Shared behaviour of the caches: truthiness, validation of incoming keys/values, (de)serialisation hooks."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_core.cache.errors import CacheDtypeError, CacheShapeError, CacheTrimError


def check_keys_values(keys: mx.array, values: mx.array) -> None:
    """Validate one update: both rank 4 ``[B, H, L, D]`` with equal ``B``, ``H`` and ``L`` and equal dtypes.

    The value head dim may differ from the key head dim (MLA-style models), so ``D`` is not compared.
    """
    if not isinstance(keys, mx.array) or not isinstance(values, mx.array):
        raise TypeError(
            f"keys and values must be mx.array, got {type(keys).__name__}/{type(values).__name__}"
        )
    if keys.ndim != 4 or values.ndim != 4:
        raise CacheShapeError(
            f"keys and values must be rank 4 [B, n_kv_heads, L, D]; got keys {keys.shape}, values "
            f"{values.shape}"
        )
    if keys.shape[:3] != values.shape[:3]:
        raise CacheShapeError(
            f"keys {keys.shape} and values {values.shape} disagree on [B, n_kv_heads, L]; they must match"
        )
    if keys.dtype != values.dtype:
        raise CacheDtypeError(f"keys dtype {keys.dtype} differs from values dtype {values.dtype}")


def check_against(
    keys: mx.array,
    values: mx.array,
    layout: tuple[int, int, int, int, mx.Dtype] | None,
) -> tuple[int, int, int, int, mx.Dtype]:
    """Check an update against the layout ``(B, H, Dk, Dv, dtype)`` already held; return the update's
    layout.
    """
    check_keys_values(keys, values)
    new = (keys.shape[0], keys.shape[1], keys.shape[3], values.shape[3], keys.dtype)
    if layout is not None and new != layout:
        if new[4] != layout[4]:
            raise CacheDtypeError(
                f"dtype changed mid-stream: cache holds {layout[4]}, update is {new[4]}; cast "
                f"keys/values first"
            )
        names = ("B", "n_kv_heads", "key head dim", "value head dim")
        diffs = ", ".join(
            f"{n} {o} -> {x}" for n, o, x in zip(names, layout[:4], new[:4], strict=False) if o != x
        )
        raise CacheShapeError(
            f"update does not match the cache's content ({diffs}); call reset() to start over"
        )
    return new


def check_trim(n: int, held: int) -> int:
    """Validate a trim of ``n`` tokens when ``held`` can be dropped; returns ``n`` as int."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"trim(n) needs an int, got {type(n).__name__}")
    if n < 0:
        raise CacheTrimError(f"trim(n) needs n >= 0, got {n}")
    if n > held:
        raise CacheTrimError(f"cannot trim {n} tokens: only {held} can be trimmed")
    return n


class BaseCache:
    """Defaults for the protocol: always truthy, not trimmable, empty state, unbounded, rebuild via state."""

    max_size: int | None = None

    def __bool__(self) -> bool:
        return True

    @property
    def state(self) -> Any:
        return []

    @state.setter
    def state(self, v: Any) -> None:
        if v:
            raise ValueError(f"{type(self).__name__} has no state but a state was set")

    @property
    def meta_state(self) -> tuple[str, ...]:
        return ()

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        if v:
            raise ValueError(f"{type(self).__name__} has no meta_state but one was set: {v!r}")

    def is_trimmable(self) -> bool:
        return False

    def trim(self, n: int) -> int:
        raise CacheTrimError(f"{type(self).__name__} cannot be trimmed; check is_trimmable() first")

    def size(self) -> int:
        """Number of positions held (mlx-lm compatibility)."""
        return 0

    def empty(self) -> bool:
        """Whether nothing has been stored yet (mlx-lm compatibility)."""
        return not self.state

    @property
    def nbytes(self) -> int:
        return 0

    @classmethod
    def from_state(cls, state: Any, meta_state: tuple[str, ...] = ()) -> Any:
        """Rebuild a cache from ``state`` and ``meta_state`` without calling ``__init__``."""
        obj = cls.__new__(cls)
        obj.meta_state = tuple(meta_state)
        obj.state = state
        return obj

    def __repr__(self) -> str:
        return f"{type(self).__name__}(offset={getattr(self, 'offset', None)}, max_size={self.max_size})"
