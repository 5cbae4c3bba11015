"""QuantizedRotatingKVCache: the sliding-window cache with quantized storage (mlx-lm has none)."""

from __future__ import annotations

import mlx.core as mx
from mlx_core.cache._tree import Stored
from mlx_core.cache.quantized import QuantizedMixin, check_quant_params, quantize_kv
from mlx_core.cache.registry import register_cache_class
from mlx_core.cache.rotating import RotatingBase


@register_cache_class
class QuantizedRotatingKVCache(QuantizedMixin, RotatingBase):
    """``RotatingKVCache`` semantics (same positions, masks and trim) with ``(packed, scales, biases)``
    storage.

    ``update_and_fetch`` returns quantized triples for keys and values, like ``QuantizedKVCache``;
    dequantizing
    them gives ``RotatingKVCache``'s output up to quantization error.
    """

    def __init__(
        self, max_size: int, keep: int = 0, step: int = 256, group_size: int = 64, bits: int = 8
    ) -> None:
        check_quant_params(group_size, bits)
        self.group_size = group_size
        self.bits = bits
        super().__init__(max_size, keep, step)

    def _encode(self, x: mx.array) -> Stored:
        return quantize_kv(x, self.group_size, self.bits)

    @property
    def meta_state(self) -> tuple[str, ...]:
        return (*RotatingBase.meta_state.fget(self), str(self.group_size), str(self.bits))  # type: ignore[attr-defined]

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        RotatingBase.meta_state.fset(self, tuple(v[:6]))  # type: ignore[attr-defined]
        self.group_size, self.bits = int(v[6]), int(v[7])
