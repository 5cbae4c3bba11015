"""save_prompt_cache / load_prompt_cache: a list of caches in one safetensors file, any registered class."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import mlx.core as mx
from mlx_core.cache.errors import CacheFileError
from mlx_core.cache.registry import cache_class_name, get_cache_class

FORMAT_KEY = "mlx_core.cache.format"
FORMAT_VERSION = "1"
CACHES_KEY = "mlx_core.cache.caches"
USER_KEY = "mlx_core.cache.metadata"


def _normalise(path: str | os.PathLike[str]) -> str:
    p = os.fspath(path)
    return p if p.endswith(".safetensors") else p + ".safetensors"


def _flatten(state: Any, prefix: str, arrays: dict[str, mx.array]) -> Any:
    """Replace arrays in a nested list/tuple state by their key; ``None`` stays ``None``."""
    if state is None:
        return None
    if isinstance(state, mx.array):
        arrays[prefix] = state
        return prefix
    if isinstance(state, (list, tuple)):
        return [_flatten(s, f"{prefix}.{i}", arrays) for i, s in enumerate(state)]
    raise CacheFileError(
        f"cache state entry at {prefix!r} is a {type(state).__name__}; states hold only arrays"
    )


def _unflatten(spec: Any, arrays: Mapping[str, mx.array]) -> Any:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in arrays:
            raise CacheFileError(f"prompt-cache file is corrupt: array {spec!r} is missing")
        return arrays[spec]
    if isinstance(spec, list):
        return [_unflatten(s, arrays) for s in spec]
    raise CacheFileError(f"prompt-cache file is corrupt: bad state entry {spec!r}")


def save_prompt_cache(
    path: str | os.PathLike[str], caches: Sequence[Any], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``caches`` (one per layer, any registered cache class) and string ``metadata`` to ``path``.

    ``.safetensors`` is appended when missing. Each cache contributes its ``state`` arrays and its class name
    and ``meta_state`` strings, so ``load_prompt_cache`` can rebuild it — user classes included once they are
    decorated with ``register_cache_class``.
    """
    metadata = dict(metadata or {})
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"metadata must map str to str; got {k!r}: {type(v).__name__}")
    arrays: dict[str, mx.array] = {}
    entries = []
    for i, c in enumerate(caches):
        name = cache_class_name(c)
        meta = [str(m) for m in c.meta_state]
        entries.append({"class": name, "meta": meta, "state": _flatten(c.state, f"c{i}", arrays)})
    header = {
        FORMAT_KEY: FORMAT_VERSION,
        CACHES_KEY: json.dumps(entries),
        USER_KEY: json.dumps(metadata),
    }
    mx.save_safetensors(_normalise(path), arrays, header)


def load_prompt_cache(
    path: str | os.PathLike[str], return_metadata: bool = False
) -> list[Any] | tuple[list[Any], dict[str, str]]:
    """Rebuild the caches saved by ``save_prompt_cache`` (and the metadata when ``return_metadata``).

    Raises ``FileNotFoundError`` for a missing file and ``CacheFileError`` for a file that is not a
    prompt-cache file or names a cache class that is not registered.
    """
    p = os.fspath(path)
    if not os.path.exists(p) and os.path.exists(_normalise(p)):
        p = _normalise(p)
    if not os.path.exists(p):
        raise FileNotFoundError(f"no prompt-cache file at {p!r}")
    try:
        # mlx's stub gives load() one union return type; with return_metadata=True it is (arrays, metadata).
        arrays, header = cast(tuple[dict[str, mx.array], dict[str, Any]], mx.load(p, return_metadata=True))
    except Exception as e:  # mlx raises RuntimeError/ValueError for unreadable files
        raise CacheFileError(f"{p!r} is not a readable safetensors file: {e}") from e
    if not isinstance(header, dict) or header.get(FORMAT_KEY) is None:
        raise CacheFileError(
            f"{p!r} is not an mlx_core.cache prompt-cache file (no {FORMAT_KEY!r} in its header); "
            "write it with mlx_core.cache.save_prompt_cache"
        )
    if header[FORMAT_KEY] != FORMAT_VERSION:
        raise CacheFileError(
            f"{p!r} has prompt-cache format {header[FORMAT_KEY]!r}; this version reads {FORMAT_VERSION!r}"
        )
    try:
        entries = json.loads(header[CACHES_KEY])
        user = json.loads(header.get(USER_KEY, "{}"))
    except (KeyError, json.JSONDecodeError) as e:
        raise CacheFileError(f"{p!r} has a corrupt prompt-cache header: {e}") from e
    caches = []
    for entry in entries:
        cls = get_cache_class(entry["class"])
        caches.append(cls.from_state(_unflatten(entry["state"], arrays), tuple(entry["meta"])))
    if return_metadata:
        return caches, user
    return caches
