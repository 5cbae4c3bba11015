"""StaticKVCache: fixed-capacity cache whose write position lives in an mx.array (compile-friendly
decoding).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_core.cache.base import BaseCache, check_against, check_trim
from mlx_core.cache.errors import CacheCapacityError
from mlx_core.cache.registry import register_cache_class


@register_cache_class
class StaticKVCache(BaseCache):
    """Fixed ``[B, H, max_size, D]`` buffers written at a position held in an ``mx.array``.

    ``update_and_fetch`` writes with ``mx.slice_update`` at the array position and returns the *whole*
    buffers;
    ``make_mask`` always returns a boolean ``[N, max_size]`` array hiding unwritten slots and future
    positions.
    So a decode step (N = 1) has identical shapes and an identical graph every token, which lets the whole
    step be compiled once.

    Using it from a compiled decode step::

        caches = [StaticKVCache(4096) for _ in model.layers]
        model(prompt[None], cache=caches)                      # eager prefill allocates the buffers
        state = [c.compile_state for c in caches]              # mutable lists [keys, values, position]
        step = mx.compile(decode_fn, inputs=state, outputs=state)
        for _ in range(n):
            token = step(token)                                # buffers and positions advance in place

    Inside the compiled function use ``cache.position`` (an int32 array, e.g. as RoPE offset) and the mask
    from ``make_mask``; never read ``cache.offset`` there: it is a Python int obtained with ``.item()``
    (always exact, but a host sync, and not allowed while tracing). ``update_and_fetch`` checks capacity only
    in eager mode; a compiled loop must stop at ``max_size`` itself (read ``offset`` between steps).

    Models that read ``cache.offset`` (every mlx-lm model: ``rope(x, offset=cache.offset)``) can still be
    traced: inside ``with cache.array_offset():`` ``offset`` returns the ``position`` array instead of a
    Python int (``mx.fast.rope`` takes array offsets), so the same model code runs eagerly and compiled.
    """

    _array_offset: bool = False
    _defer_append: bool = False
    _prefix_mask: Any = None  # the last window-free mask any StaticKVCache made (see valid_length)
    #: ``(keys, values, position)`` of a one-token update not yet written (see `deferred_append`).
    pending_append: tuple[mx.array, mx.array, mx.array] | None = None
    _kernel_counters: mx.array | None = None

    def __init__(self, max_size: int) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
            raise ValueError(f"StaticKVCache max_size must be a positive int, got {max_size!r}")
        self.max_size: int = max_size
        self.compile_state: list[Any] = [None, None, mx.array(0, dtype=mx.int32)]
        self._written = 0
        self._layout: Any = None

    @property
    def keys(self) -> mx.array | None:
        return self.compile_state[0]

    @property
    def values(self) -> mx.array | None:
        return self.compile_state[1]

    @property
    def position(self) -> mx.array:
        """Write position (= tokens held) as an int32 scalar array; usable inside ``mx.compile``."""
        return self.compile_state[2]

    @property
    def offset(self) -> Any:
        """Tokens held: a Python int (syncs on ``position``), or the ``position`` array inside
        `array_offset`.
        """
        if self._array_offset:
            return self.position
        self._written = int(self.position)
        return self._written

    @contextmanager
    def array_offset(self) -> Iterator[StaticKVCache]:
        """Within the block ``offset`` is the ``position`` array (no host sync; traceable by
        ``mx.compile``) and ``update_and_fetch`` skips the Python-side capacity check (the caller checks).
        """
        previous = self._array_offset
        self._array_offset = True
        try:
            yield self
        finally:
            self._array_offset = previous

    @contextmanager
    def deferred_append(self, enabled: bool = True) -> Iterator[StaticKVCache]:
        """Within the block a one-token ``update_and_fetch`` (buffers already allocated) does not write:
        it advances ``position``, records ``pending_append`` and returns the buffers *without* the new
        row, for an attention that appends and attends in one kernel (``mlx_core.attn`` on CUDA, via
        ``mlx_core.kernels.decode_attention_append``) and then calls `complete_append`. Any other
        consumer must call `apply_pending_append` first. Used while tracing a compiled decode step,
        which checks that every pending append was completed.
        """
        previous = self._defer_append
        self._defer_append = enabled
        try:
            yield self
        finally:
            self._defer_append = previous

    @property
    def defers_append(self) -> bool:
        """Whether this cache is inside `deferred_append`: its caller owns the buffers, so a kernel may
        append to them in place (see `store_appended`).
        """
        return self._defer_append

    def store_appended(self, keys: mx.array, values: mx.array, next_position: mx.array | None = None) -> None:
        """A kernel appended one token at ``position`` to the buffers (in place, or as new arrays ``keys``
        and ``values``): keep them and advance ``position`` by one (to ``next_position`` if the kernel
        computed ``position + 1`` itself).
        """
        if self.keys is None:
            raise ValueError("StaticKVCache.store_appended needs allocated buffers (prefill or allocate()).")
        if not self._array_offset and self._written + 1 > self.max_size:
            raise CacheCapacityError(
                f"StaticKVCache(max_size={self.max_size}) is full; create it with a larger max_size"
            )
        self.complete_append(keys, values)
        self.compile_state[2] = self.position + 1 if next_position is None else next_position
        if not self._array_offset:
            self._written += 1

    def kernel_counters(self, n: int) -> mx.array:
        """A zeroed int32 array of at least ``n`` entries owned by this cache, for a kernel that appends to
        the buffers in place and needs device-side counters (``mlx_core.kernels.decode_attention_qkv``
        elects the block that merges its splits with them, and, when it also applies o_proj, hands out
        its blocks' work tickets); such kernels leave it zero. Built from host
        data, so it is a constant even when first requested while ``mx.compile`` traces a step, and the
        same array every step (one per cache: launches on different caches never share it).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"kernel_counters needs a positive int count, got {n!r}")
        if self._kernel_counters is None or self._kernel_counters.size < n:
            self._kernel_counters = mx.array(np.zeros(max(n, 4), dtype=np.int32))  # >= 16 bytes
        return self._kernel_counters

    def complete_append(self, keys: mx.array, values: mx.array) -> None:
        """Store the buffers that now hold the pending row (the appending attention returned them)."""
        self.compile_state[0], self.compile_state[1] = keys, values
        self.pending_append = None

    def apply_pending_append(self) -> tuple[mx.array, mx.array]:
        """Write a pending row the ordinary way (``mx.slice_update``); return the full buffers."""
        pending = self.pending_append
        if pending is not None:
            keys, values, pos = pending
            start = pos.reshape(1)
            self.complete_append(
                mx.slice_update(self.compile_state[0], keys, start, axes=(2,)),
                mx.slice_update(self.compile_state[1], values, start, axes=(2,)),
            )
        return self.compile_state[0], self.compile_state[1]

    def allocate(
        self,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        v_head_dim: int | None = None,
        dtype: mx.Dtype = mx.float32,
    ) -> None:
        """Allocate zeroed buffers now (otherwise the first update does), e.g. before compiling a step."""
        self.compile_state[0] = mx.zeros((batch, n_kv_heads, self.max_size, head_dim), dtype)
        self.compile_state[1] = mx.zeros((batch, n_kv_heads, self.max_size, v_head_dim or head_dim), dtype)
        self.compile_state[2] = mx.array(0, dtype=mx.int32)
        self._layout = (batch, n_kv_heads, head_dim, v_head_dim or head_dim, dtype)
        self._written = 0

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write ``[B, H, S, D]`` at ``position``; return the full ``[B, H, max_size, D]`` buffers."""
        self._layout = check_against(keys, values, self._layout)
        S = keys.shape[2]
        if not self._array_offset and self._written + S > self.max_size:
            raise CacheCapacityError(
                f"StaticKVCache(max_size={self.max_size}) holds {self._written} tokens and cannot take "
                f"{S} more; "
                "create it with a larger max_size or use KVCache/RotatingKVCache"
            )
        if self.keys is None:
            B, H, _, Dk = keys.shape
            self.allocate(B, H, Dk, values.shape[3], keys.dtype)
        pos = self.position
        if self._defer_append and S == 1:
            self.apply_pending_append()  # a model that updates twice per step gets ordinary writes
            self.pending_append = (keys, values, pos)
            self.compile_state[2] = pos + 1
            if not self._array_offset:
                self._written += 1
            return self.compile_state[0], self.compile_state[1]
        self.apply_pending_append()
        start = pos.reshape(1)
        k = mx.slice_update(self.compile_state[0], keys, start, axes=(2,))
        v = mx.slice_update(self.compile_state[1], values, start, axes=(2,))
        self.compile_state[0], self.compile_state[1] = k, v
        self.compile_state[2] = pos + S
        if not self._array_offset:  # while traced the caller keeps count (the trace runs once)
            self._written += S
        return k, v

    def make_mask(self, N: int, return_array: bool = False, window_size: int | None = None) -> mx.array:
        """Boolean ``[N, max_size]``: query ``i`` (at ``position + i``) sees written keys ``j <=
        position + i``.
        """
        q = self.position + mx.arange(N, dtype=mx.int32)
        k = mx.arange(self.max_size, dtype=mx.int32)
        mask = k[None] <= q[:, None]
        if window_size is not None:
            return mask & (k[None] > q[:, None] - window_size)
        StaticKVCache._prefix_mask = mask
        return mask

    def valid_length(self, mask: Any) -> mx.array | None:
        """For one decode query attending with ``mask``: how many leading keys it sees (the ``position``
        array, call after ``update_and_fetch``), or ``None`` unless ``mask`` is the window-free mask
        ``make_mask`` returned last (caches of one model advance in lockstep, so any of them made it).

        Lets attention kernels read ``keys[:, :, :valid_length]`` of the full buffers instead of applying
        the ``[1, max_size]`` mask.
        """
        if mask is None or mask is not StaticKVCache._prefix_mask:
            return None
        return self.position

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        check_trim(n, self.offset)
        self.compile_state[2] = self.position - n
        self._written -= n
        return n

    def reset(self) -> None:
        self.compile_state[:] = [None, None, mx.array(0, dtype=mx.int32)]
        self.pending_append = None
        self._written = 0
        self._layout = None

    def size(self) -> int:
        return self.offset

    def empty(self) -> bool:
        return self.keys is None

    @property
    def state(self) -> list[mx.array]:
        """``[keys, values, position]`` with the full fixed-size buffers (no host sync)."""
        self.apply_pending_append()
        return [] if self.keys is None else list(self.compile_state)

    @state.setter
    def state(self, v: Any) -> None:
        if not hasattr(self, "compile_state"):
            self.compile_state = [None, None, mx.array(0, dtype=mx.int32)]
        self.reset()
        if v:
            k, vals, pos = v
            self.compile_state[:] = [k, vals, mx.array(pos, dtype=mx.int32).reshape(())]
            self._layout = check_against(k, vals, None)
            self._written = int(self.compile_state[2].item())

    @property
    def meta_state(self) -> tuple[str, ...]:
        return (str(self.max_size),)

    @meta_state.setter
    def meta_state(self, v: tuple[str, ...]) -> None:
        self.max_size = int(v[0])

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None or self.values is None else self.keys.nbytes + self.values.nbytes

    def __repr__(self) -> str:
        return f"StaticKVCache(max_size={self.max_size}, offset={self._written})"
