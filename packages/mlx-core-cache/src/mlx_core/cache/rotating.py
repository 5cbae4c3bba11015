"""RotatingKVCache: sliding-window cache keeping the first ``keep`` tokens (mlx-lm semantics, better trim)."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_core.cache._tree import (
    Stored,
    fresh,
    leaves,
    nbytes,
    seq_assign,
    seq_concat,
    seq_len,
    seq_slice,
    seq_zeros_like,
)
from mlx_core.cache.base import BaseCache, check_against, check_trim
from mlx_core.cache.errors import CacheTrimError
from mlx_core.cache.mask import MaskLike, create_causal_mask
from mlx_core.cache.registry import register_cache_class


class RotatingBase(BaseCache):
    """Ring-buffer logic shared by the float and quantized rotating caches.

    Reproduces mlx-lm's ``RotatingKVCache`` exactly: single-token updates write in place into a ring of
    ``max_size`` slots (slots ``[0, keep)`` never rotate); multi-token updates put the buffer in temporal
    order
    and concatenate, keeping ``max_size - 1`` old tokens so every new token sees a full window (the buffer
    may then briefly hold ``max_size + S - 1`` tokens). Internal counters: ``_idx`` the write position,
    ``_held`` the number of valid slots (mlx-lm infers it from ``offset``; tracking it lets ``trim`` work
    after the window has wrapped).
    """

    def __init__(self, max_size: int, keep: int = 0, step: int = 256) -> None:
        for name, v in (("max_size", max_size), ("keep", keep), ("step", step)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{type(self).__name__} {name} must be an int, got {v!r}")
        if max_size <= 0 or step <= 0 or keep < 0:
            raise ValueError(f"need max_size > 0, step > 0, keep >= 0; got {max_size}, {step}, {keep}")
        if keep >= max_size:
            raise ValueError(
                f"keep ({keep}) must be smaller than max_size ({max_size}) so the window can slide"
            )
        self.max_size: int = max_size
        self.keep = keep
        self.step = step
        self.reset()

    # -- encoding hook (identity here, mx.quantize in the quantized subclass) --
    def _encode(self, x: mx.array) -> Stored:
        return x

    def reset(self) -> None:
        self.keys: Stored | None = None
        self.values: Stored | None = None
        self.offset = 0
        self._idx = 0
        self._held = 0
        self._layout: Any = None

    def _trim_front(self, trim_size: int, v: Stored, append: Stored | None = None) -> Stored:
        parts = (
            [seq_slice(v, None, self.keep), seq_slice(v, trim_size + self.keep, None)]
            if trim_size > 0
            else [v]
        )
        if append is not None:
            parts.append(append)
        return seq_concat(parts)

    def _temporal_order(self, v: Stored) -> Stored:
        if self._idx == seq_len(v):
            return v
        if self._idx < self._held:
            return seq_concat(
                [
                    seq_slice(v, None, self.keep),
                    seq_slice(v, self._idx, self._held),
                    seq_slice(v, self.keep, self._idx),
                ]
            )
        return seq_slice(v, None, self._idx)

    def _update_concat(self, k: Stored, v: Stored, S: int) -> tuple[Stored, Stored]:
        if self.keys is None or self.values is None:
            self.keys, self.values = fresh(k), fresh(v)
        else:
            self.keys = self._temporal_order(self.keys)
            self.values = self._temporal_order(self.values)
            self._idx = seq_len(self.keys)
            trim_size = self._idx - self.max_size + 1
            self.keys = self._trim_front(trim_size, self.keys, k)
            self.values = self._trim_front(trim_size, self.values, v)
        self.offset += S
        self._idx = self._held = seq_len(self.keys)
        return self.keys, self.values

    def _update_in_place(self, k: Stored, v: Stored, S: int) -> tuple[Stored, Stored]:
        if self.keys is None or self.values is None:
            n = min(self.step, self.max_size)
            self.keys, self.values = seq_zeros_like(k, n), seq_zeros_like(v, n)
            self._idx = self._held = 0
        elif self._held >= seq_len(self.keys) and seq_len(self.keys) < self.max_size:
            n = min(self.step, self.max_size - seq_len(self.keys))
            self.keys = seq_concat([self.keys, seq_zeros_like(k, n)])
            self.values = seq_concat([self.values, seq_zeros_like(v, n)])
            self._idx = self._held
        trim_size = seq_len(self.keys) - self.max_size
        if trim_size > 0:
            self.keys = self._trim_front(trim_size, self.keys)
            self.values = self._trim_front(trim_size, self.values)
            self._idx = self._held = self.max_size
        if self._idx == self.max_size:
            self._idx = self.keep
        seq_assign(self.keys, self._idx, k)
        seq_assign(self.values, self._idx, v)
        self.offset += S
        self._idx += S
        self._held = max(self._held, self._idx)
        if self._held < seq_len(self.keys):
            return seq_slice(self.keys, None, self._held), seq_slice(self.values, None, self._held)
        return self.keys, self.values

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Any, Any]:
        """Store ``[B, H, S, D]`` keys/values; return what attention should see (ring order for S = 1)."""
        self._layout = check_against(keys, values, self._layout)
        S = keys.shape[2]
        k, v = self._encode(keys), self._encode(values)
        if S == 1:
            return self._update_in_place(k, v, S)
        return self._update_concat(k, v, S)

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> MaskLike:
        """Mask for ``N`` queries before they are added (mlx-lm's ``RotatingKVCache.make_mask``)."""
        if N > 1:
            window_size = window_size or self.max_size
            offset = min(self.max_size - 1, self._held)
            if offset + N > window_size or return_array:
                return create_causal_mask(N, offset, window_size=window_size)
            return "causal"
        if window_size is None:
            return None
        if self.offset >= window_size and self.max_size > window_size:
            idx = self._idx if self._idx < self.max_size else 0
            mask_size = min(self._held + 1, self.max_size)
            mask = mx.arange(mask_size) >= (mask_size - window_size)
            return mx.roll(mask, idx + 1)  # positional: the stub declares shift positional-only
        return None

    def size(self) -> int:
        return min(self._held, self.max_size)

    def empty(self) -> bool:
        return self.keys is None

    def is_trimmable(self) -> bool:
        return True

    def trimmable_tokens(self) -> int:
        """How many of the most recent tokens ``trim`` can drop now.

        All of ``offset`` while nothing has slid out of the window; afterwards only the non-``keep`` tokens
        still in the buffer (``size() - keep``) — older ones are gone and cannot come back.
        """
        if self.offset == self._held:
            return self.offset
        return self._held - self.keep

    def trim(self, n: int) -> int:
        """Drop the ``n`` most recent tokens.

        Before the window wraps this equals mlx-lm's trim. Afterwards (mlx-lm refuses) the buffer is put in
        temporal order and cut, so the window holds ``size() - n`` tokens until new ones refill it: the
        tokens that slid out earlier are not restored. Raises ``CacheTrimError`` past ``trimmable_tokens()``.
        """
        limit = self.trimmable_tokens()
        try:
            check_trim(n, limit)
        except CacheTrimError as e:
            if isinstance(n, int) and n > limit and self.offset != self._held:
                raise CacheTrimError(
                    f"cannot trim {n} tokens from {type(self).__name__}(max_size={self.max_size}, "
                    f"keep={self.keep}): the window has wrapped and only the last {limit} tokens are "
                    f"still held"
                ) from None
            raise e
        if n == 0 or self.keys is None or self.values is None:
            return n
        if self.offset == self._held:
            self.offset -= n
            self._idx -= n
            self._held -= n
            return n
        self.keys = seq_slice(self._temporal_order(self.keys), None, self._held - n)
        self.values = seq_slice(self._temporal_order(self.values), None, self._held - n)
        self.offset -= n
        self._idx = self._held = self._held - n
        return n

    @property
    def state(self) -> list[mx.array]:
        return leaves(self.keys) + leaves(self.values)

    @state.setter
    def state(self, v: Any) -> None:
        meta = (self.offset, self._idx, self._held)
        self.keys = self.values = None
        self._layout = None
        v = list(v) if v else []
        if v:
            half = len(v) // 2
            if half == 1:
                self.keys, self.values = v[0], v[1]
            else:
                self.keys, self.values = tuple(v[:half]), tuple(v[half:])
        self.offset, self._idx, self._held = meta

    @property
    def meta_state(self) -> tuple[str, ...]:
        return tuple(
            str(x) for x in (self.max_size, self.keep, self.step, self.offset, self._idx, self._held)
        )

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        self.max_size, self.keep, self.step, self.offset, self._idx, self._held = (int(x) for x in v)
        self._layout = None

    @property
    def nbytes(self) -> int:
        return nbytes(self.keys) + nbytes(self.values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_size={self.max_size}, keep={self.keep}, offset={self.offset})"


@register_cache_class
class RotatingKVCache(RotatingBase):
    """Sliding-window KV cache: keeps the first ``keep`` tokens and the most recent ``max_size - keep``.

    Outputs equal mlx-lm's ``RotatingKVCache(max_size, keep)`` for any sequence of updates; ``trim`` also
    works
    after the window has wrapped (see ``trim``). ``max_size`` is the window.
    """

    def to_quantized(self, group_size: int = 64, bits: int = 4) -> Any:
        """A ``QuantizedRotatingKVCache`` with the same window and content, quantized."""
        from mlx_core.cache.quantized_rotating import QuantizedRotatingKVCache

        q = QuantizedRotatingKVCache(self.max_size, self.keep, self.step, group_size=group_size, bits=bits)
        q.offset, q._idx, q._held = self.offset, self._idx, self._held
        if isinstance(self.keys, mx.array) and isinstance(self.values, mx.array):
            q.keys, q.values = q._encode(self.keys), q._encode(self.values)
        return q
