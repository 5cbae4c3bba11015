"""Name ↔ class registry so ``load_prompt_cache`` can rebuild built-in and user-defined caches."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast, overload

from mlx_core.cache.errors import CacheFileError

T = TypeVar("T", bound=type)

_REGISTRY: dict[str, type] = {}


class RebuildableCache(Protocol):
    """What the registry requires of a registered class: a ``from_state`` classmethod."""

    @classmethod
    def from_state(cls, state: Any, meta_state: tuple[str, ...] = ()) -> Any: ...


@overload
def register_cache_class(cls: T, *, name: str | None = None) -> T: ...
@overload
def register_cache_class(cls: None = None, *, name: str | None = None) -> Callable[[T], T]: ...


def register_cache_class(cls: Any = None, *, name: str | None = None) -> Any:
    """Class decorator: make a cache class loadable by ``load_prompt_cache`` under ``name`` (default: class
    name).

    The class must provide ``state`` / ``meta_state`` and a ``from_state(state, meta_state)`` classmethod
    (``BaseCache`` provides one). Registering a different class under a taken name raises ``ValueError``.
    Use as ``@register_cache_class`` or ``@register_cache_class(name="my.Cache")``.
    """

    def decorate(c: T) -> T:
        if not isinstance(c, type):
            raise TypeError(f"register_cache_class expects a class, got {c!r}")
        if not callable(getattr(c, "from_state", None)):
            raise TypeError(
                f"{c.__name__} has no from_state(state, meta_state) classmethod; subclass "
                "mlx_core.cache.BaseCache or define one"
            )
        key = name or c.__name__
        old = _REGISTRY.get(key)
        if old is not None and old is not c and old.__qualname__ != c.__qualname__:
            raise ValueError(
                f"cache class name {key!r} is already registered to {old.__module__}.{old.__qualname__}; "
                "pass register_cache_class(name=...) with a unique name"
            )
        _REGISTRY[key] = c
        c._cache_registry_name = key  # type: ignore[attr-defined]
        return c

    if cls is None:
        return decorate
    return decorate(cls)


def cache_class_name(cache: object) -> str:
    """Registered name of ``cache``'s class; raises ``CacheFileError`` if the class was never registered."""
    key = getattr(type(cache), "_cache_registry_name", None)
    if key is None or _REGISTRY.get(key) is not type(cache):
        raise CacheFileError(
            f"cache class {type(cache).__name__} is not registered; decorate it with "
            "@mlx_core.cache.register_cache_class so save/load can rebuild it"
        )
    return key


def get_cache_class(name: str) -> type[RebuildableCache]:
    """Class registered under ``name``; raises ``CacheFileError`` naming the known classes otherwise."""
    try:
        # register_cache_class admits only classes with a callable from_state.
        return cast("type[RebuildableCache]", _REGISTRY[name])
    except KeyError:
        raise CacheFileError(
            f"unknown cache class {name!r} in prompt-cache file; known: {sorted(_REGISTRY)}. Import the "
            f"module "
            "that defines it and decorate the class with @register_cache_class before loading"
        ) from None


def registered_cache_classes() -> dict[str, type]:
    """Copy of the registry (name → class)."""
    return dict(_REGISTRY)
