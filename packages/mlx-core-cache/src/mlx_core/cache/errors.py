"""Error classes raised by mlx_core.cache; all are ``ValueError`` subclasses so callers can catch broadly."""

from __future__ import annotations


class CacheError(ValueError):
    """Base class of every error raised by mlx_core.cache."""


class CacheShapeError(CacheError):
    """Keys/values have the wrong rank or disagree with each other or with the cache's content."""


class CacheDtypeError(CacheError):
    """Keys/values changed dtype mid-stream."""


class CacheTrimError(CacheError):
    """A trim asked for more tokens than the cache holds, or the cache cannot be trimmed."""


class CacheCapacityError(CacheError):
    """A fixed-capacity cache (StaticKVCache) would overflow."""


class CacheFileError(CacheError):
    """A file is not a prompt-cache file, is corrupt, or names an unknown cache class."""
