"""QuantizedKVCache: keys/values stored as mx.quantize triples (mlx-lm's QuantizedKVCache)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_core.cache._tree import leaves, nbytes, seq_assign, seq_concat, seq_len, seq_slice, seq_zeros_like
from mlx_core.cache.base import check_against
from mlx_core.cache.errors import CacheShapeError
from mlx_core.cache.prefix import PrefixCache
from mlx_core.cache.registry import register_cache_class

QTriple = tuple[mx.array, mx.array, mx.array]

SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
SUPPORTED_GROUP_SIZES = (32, 64, 128)


def check_quant_params(group_size: int, bits: int) -> None:
    """Raise ``ValueError`` unless ``mx.quantize`` supports ``(group_size, bits)``."""
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS} (what mx.quantize supports), got {bits!r}")
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ValueError(f"group_size must be one of {SUPPORTED_GROUP_SIZES}, got {group_size!r}")


def quantize_kv(x: mx.array, group_size: int, bits: int) -> QTriple:
    """``mx.quantize`` along the head dim with a clear error when ``D`` is not a multiple of
    ``group_size``.
    """
    if x.shape[-1] % group_size:
        raise CacheShapeError(
            f"head dim {x.shape[-1]} is not a multiple of group_size {group_size}; pick a group_size "
            f"dividing it"
        )
    q, s, b = mx.quantize(x, group_size=group_size, bits=bits)
    return q, s, b


class QuantizedMixin:
    """``bits``/``group_size`` attributes (models check ``hasattr(cache, "bits")``) and dequantize helper."""

    bits: int
    group_size: int

    def dequantize(self, x: QTriple) -> mx.array:
        """Float view of one stored triple (for tests and debugging)."""
        return mx.dequantize(*x, group_size=self.group_size, bits=self.bits)


@register_cache_class
class QuantizedKVCache(QuantizedMixin, PrefixCache):
    """Grows in ``step`` blocks like ``KVCache`` but stores ``(packed uint32, scales, biases)`` per token.

    ``update_and_fetch`` returns ``(packed, scales, biases)`` for keys and for values, each ``[B, H, offset,
    *]``,
    the input of ``mx.quantized_matmul`` (mlx-lm's quantized SDPA path).
    """

    def __init__(self, group_size: int = 64, bits: int = 8, step: int = 256) -> None:
        check_quant_params(group_size, bits)
        if isinstance(step, bool) or not isinstance(step, int) or step <= 0:
            raise ValueError(f"step must be a positive int, got {step!r}")
        self.group_size = group_size
        self.bits = bits
        self.step = step
        self.reset()

    def reset(self) -> None:
        self.keys: QTriple | None = None
        self.values: QTriple | None = None
        self.offset = 0
        self._layout: Any = None

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[QTriple, QTriple]:
        self._layout = check_against(keys, values, self._layout)
        qk = quantize_kv(keys, self.group_size, self.bits)
        qv = quantize_kv(values, self.group_size, self.bits)
        prev, S = self.offset, keys.shape[2]
        if self.keys is None or self.values is None or prev + S > seq_len(self.keys):
            n = (self.step + S - 1) // self.step * self.step
            if self.keys is not None and self.values is not None:
                if prev % self.step != 0:
                    self.keys = seq_slice(self.keys, None, prev)  # type: ignore[assignment]
                    self.values = seq_slice(self.values, None, prev)  # type: ignore[assignment]
                self.keys = seq_concat([self.keys, seq_zeros_like(qk, n)])  # type: ignore[assignment,list-item]
                self.values = seq_concat([self.values, seq_zeros_like(qv, n)])  # type: ignore[assignment,list-item]
            else:
                self.keys = seq_zeros_like(qk, n)  # type: ignore[assignment]
                self.values = seq_zeros_like(qv, n)  # type: ignore[assignment]
        assert self.keys is not None and self.values is not None
        seq_assign(self.keys, prev, qk)
        seq_assign(self.values, prev, qv)
        self.offset = prev + S
        return self._fetch()

    def _fetch(self) -> tuple[QTriple, QTriple]:
        assert self.keys is not None and self.values is not None
        if self.offset == seq_len(self.keys):
            return self.keys, self.values
        return seq_slice(self.keys, None, self.offset), seq_slice(self.values, None, self.offset)  # type: ignore[return-value]

    @property
    def state(self) -> list[mx.array]:
        """``[k_packed, k_scales, k_biases, v_packed, v_scales, v_biases]`` trimmed to ``offset``."""
        if self.keys is None or self.values is None:
            return []
        k, v = self._fetch()
        return leaves(k) + leaves(v)

    @state.setter
    def state(self, v: Any) -> None:
        self.keys = self.values = None
        self.offset = 0
        self._layout = None
        if v:
            v = list(v)
            self.keys, self.values = tuple(v[:3]), tuple(v[3:])  # type: ignore[assignment]
            self.offset = seq_len(self.keys)  # type: ignore[arg-type]

    @property
    def meta_state(self) -> tuple[str, ...]:
        return (str(self.group_size), str(self.bits), str(self.step))

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        self.group_size, self.bits, self.step = (int(x) for x in v)

    @property
    def nbytes(self) -> int:
        return nbytes(self.keys) + nbytes(self.values)
