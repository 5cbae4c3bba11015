"""Whole-model helpers: build, inspect and trim the list of per-layer caches."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from mlx_core.cache.errors import CacheTrimError
from mlx_core.cache.kv import KVCache
from mlx_core.cache.rotating import RotatingKVCache


def make_prompt_cache(model: Any, max_kv_size: int | None = None) -> list[Any]:
    """One cache per layer for ``model`` (mlx-lm's ``make_prompt_cache``).

    Uses ``model.make_cache()`` when the model defines it (passing ``max_kv_size`` on when given: mlx-lm
    silently drops it there, which leaves the caches unbounded); otherwise ``KVCache`` per entry of
    ``model.layers``, or ``RotatingKVCache(max_kv_size, keep=4)`` when ``max_kv_size`` is given.
    """
    if hasattr(model, "make_cache"):
        if max_kv_size is None:
            return list(model.make_cache())
        if "max_kv_size" not in inspect.signature(model.make_cache).parameters:
            raise TypeError(
                f"{type(model).__name__}.make_cache() takes no max_kv_size, so the window of "
                f"{max_kv_size} tokens cannot be applied; build the caches yourself and pass them in."
            )
        return list(model.make_cache(max_kv_size=max_kv_size))
    layers = getattr(model, "layers", None)
    if layers is None:
        raise TypeError(
            f"{type(model).__name__} has neither make_cache() nor a layers list; cannot build its caches"
        )
    if max_kv_size is not None:
        if max_kv_size <= 4:
            raise ValueError(f"max_kv_size must exceed keep=4, got {max_kv_size}")
        return [RotatingKVCache(max_size=max_kv_size, keep=4) for _ in range(len(layers))]
    return [KVCache() for _ in range(len(layers))]


def can_trim_prompt_cache(caches: Sequence[Any]) -> bool:
    """Whether every cache in ``caches`` is trimmable right now."""
    return all(c.is_trimmable() for c in caches)


def trim_prompt_cache(caches: Sequence[Any], num_tokens: int) -> int:
    """Trim ``num_tokens`` from every cache in place; returns the number trimmed (0 if not all trimmable).

    Like mlx-lm, a list that cannot be trimmed is left untouched and 0 is returned. Asking for more tokens
    than a cache holds raises ``CacheTrimError`` before any cache is modified.
    """
    if len(caches) == 0 or not can_trim_prompt_cache(caches):
        return 0
    for c in caches:
        held = c.offset
        if num_tokens > held:
            raise CacheTrimError(f"cannot trim {num_tokens} tokens: a cache holds only {held}")
    trimmed = [c.trim(num_tokens) for c in caches]
    return trimmed[0]
