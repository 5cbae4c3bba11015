"""KV caches for autoregressive decoding with MLX, drop-in for mlx-lm models."""

from mlx_core.cache.arrays import ArraysCache
from mlx_core.cache.base import BaseCache
from mlx_core.cache.cache_list import CacheList
from mlx_core.cache.concat import ConcatKeyValueCache
from mlx_core.cache.errors import (
    CacheCapacityError,
    CacheDtypeError,
    CacheError,
    CacheFileError,
    CacheShapeError,
    CacheTrimError,
)
from mlx_core.cache.io import load_prompt_cache, save_prompt_cache
from mlx_core.cache.kv import KVCache
from mlx_core.cache.mask import attention_mask_for_offset, create_causal_mask
from mlx_core.cache.prompt import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_core.cache.protocol import KeyValueCache, MaskLike
from mlx_core.cache.quantized import QuantizedKVCache
from mlx_core.cache.quantized_rotating import QuantizedRotatingKVCache
from mlx_core.cache.registry import register_cache_class, registered_cache_classes
from mlx_core.cache.rotating import RotatingKVCache
from mlx_core.cache.static import StaticKVCache

__all__ = [
    "ArraysCache",
    "BaseCache",
    "CacheCapacityError",
    "CacheDtypeError",
    "CacheError",
    "CacheFileError",
    "CacheList",
    "CacheShapeError",
    "CacheTrimError",
    "ConcatKeyValueCache",
    "KVCache",
    "KeyValueCache",
    "MaskLike",
    "QuantizedKVCache",
    "QuantizedRotatingKVCache",
    "RotatingKVCache",
    "StaticKVCache",
    "attention_mask_for_offset",
    "can_trim_prompt_cache",
    "create_causal_mask",
    "load_prompt_cache",
    "make_prompt_cache",
    "register_cache_class",
    "registered_cache_classes",
    "save_prompt_cache",
    "trim_prompt_cache",
]
