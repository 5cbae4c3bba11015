"""Compiled decode step: model forward + sampling for one token, traced once with ``mx.compile``.

Eager decoding rebuilds the whole graph in Python every token (about 150–180 µs per layer on an H100 with
mlx-lm), so small models are bound by Python, not by the GPU. With `StaticKVCache` every decode step has
the same shapes, so the step can be compiled once and replayed: the state (each cache's ``compile_state``,
the model parameters and ``mx.random.state``) goes in and out as compile inputs/outputs, and positions stay
on the device. Any protocol-following model works unchanged, mlx-lm's included: while tracing, each cache
is inside `StaticKVCache.array_offset`, so ``rope(x, offset=cache.offset)`` gets the position *array* and
``cache.make_mask(1)`` derives the mask from it.

Traces are shared: a compiled step is kept per (model, sampler configuration, cache layout) and runs on
stand-in caches whose arrays are swapped for the caller's, so a new `Generate` with fresh caches of the same
capacity reuses the trace instead of tracing the model again. The parameters are constants of the trace
(cheaper per step than compile inputs); a step object whose model holds different weight arrays (after
``model.update(...)``/``load_weights``) gets a fresh trace.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any, cast

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_core.cache import StaticKVCache

from .forward import forward_logits
from .sampling import sample_from_logits

__all__ = ["CompiledDecodeStep", "clear_compiled_steps", "compile_unsupported_reason", "static_caches_for"]

_MAX_ENTRIES = 8
_ENTRIES: OrderedDict[tuple[Any, ...], _Trace] = OrderedDict()

#: Cache classes (by name, ours and mlx-lm's) that `Generate` may swap for `StaticKVCache` to compile.
PLAIN_CACHE_NAMES = frozenset({"KVCache"})


def clear_compiled_steps() -> None:
    """Forget every shared trace (e.g. after swapping a model's attention function or its modules)."""
    _ENTRIES.clear()


def compile_unsupported_reason(caches: Sequence[Any], logits_processors: Sequence[Any] = ()) -> str | None:
    """Why a decode step over ``caches`` cannot be compiled (``None`` when it can).

    Needs at least one cache, every cache a `StaticKVCache` holding a prompt already (its buffers set),
    and no logits processors (their token history grows every step, so the shapes would change).
    """
    if logits_processors:
        return "logits processors need the growing token history; they run eagerly"
    if not caches:
        return "no caches"
    for c in caches:
        if not isinstance(c, StaticKVCache):
            return f"{type(c).__name__} is not a StaticKVCache (its shapes change every step)"
    return None


def static_caches_for(caches: Sequence[Any], capacity: int) -> list[StaticKVCache] | None:
    """`StaticKVCache(capacity)` for each cache if all are plain, empty ``KVCache``s, else ``None``."""
    if not caches:
        return None
    for c in caches:
        if type(c).__name__ not in PLAIN_CACHE_NAMES or getattr(c, "offset", 0) != 0:
            return None
    return [StaticKVCache(capacity) for _ in caches]


def _sampler_key(sampler: Any) -> tuple[Any, ...]:
    """Samplers with equal configuration share traces; others are keyed by identity."""
    from .sampling import DefaultSampler

    if type(sampler) is DefaultSampler:
        return (
            "default",
            sampler.temperature,
            sampler.top_p,
            sampler.min_p,
            sampler.min_tokens_to_keep,
            sampler.top_k,
            sampler.xtc_probability,
            sampler.xtc_threshold,
            sampler.xtc_special_tokens,
            sampler.greedy,
        )
    return ("id", id(sampler))


def _layout(c: StaticKVCache) -> tuple[Any, ...]:
    k, v = c.keys, c.values
    assert k is not None and v is not None
    return (c.max_size, tuple(k.shape), tuple(v.shape), k.dtype)


class _Trace:
    """One compiled function over stand-in caches (reused by every step with the same key)."""

    def __init__(
        self, model: Any, sampler: Callable[[mx.array], mx.array], n_caches: int, defer_append: bool = True
    ) -> None:
        self.model_ref = weakref.ref(model) if _weakrefable(model) else (lambda m=model: m)
        self.sampler = sampler
        # Deferred cache writes: the attention appends the new K/V row itself (in place on CUDA), so a
        # step neither copies the cache buffers nor launches write kernels. Kept only if the trace shows
        # the model's attention completed every pending append (see StaticKVCache.deferred_append).
        self.defer_append = defer_append
        self.proxies = [StaticKVCache(1) for _ in range(n_caches)]
        # The parameters are constants of the trace (as compile inputs they would be flattened every
        # step: ~0.1-0.3 ms for a 28-layer model); `weights` is checked once per step object instead.
        self.weights = _weights(model)
        # A constant still unevaluated when traced is recomputed by every step: e.g. the last layer's
        # gate/up of a model fused with `fuse_projections` after loading, which a prefill never needs
        # (two 33 MB copies per token on Llama-3.2-1B; benchmarks/NOTES.md). Evaluate them once here.
        mx.eval(self.weights)
        states: list[Any] = [p.compile_state for p in self.proxies]
        state: list[Any] = [states, mx.random.state]
        self.fn = mx.compile(self._step, inputs=state, outputs=state)
        self.traced = False

    def _step(self, tokens: mx.array) -> mx.array:
        model = self.model_ref()
        with ExitStack() as stack:
            for p in self.proxies:
                stack.enter_context(p.array_offset())
                stack.enter_context(p.deferred_append(self.defer_append))
            logits = forward_logits(model, tokens.reshape(-1, 1), self.proxies)[:, -1, :]
            if any(p.pending_append is not None for p in self.proxies):
                raise _AppendNotCompleted
        return sample_from_logits(self.sampler, logits).astype(mx.int32)


class _AppendNotCompleted(Exception):
    """The traced model attended without completing a deferred cache write: trace it again without."""


def _weights(model: Any) -> list[mx.array]:
    """The model's parameter arrays (held, so identity comparisons stay valid)."""
    if not isinstance(model, nn.Module):
        return []
    # tree_flatten is annotated list-or-dict; without ``destination`` it returns a list of (path, leaf).
    return [v for _, v in cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))]


def _same_weights(a: list[mx.array], b: list[mx.array]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _weakrefable(obj: Any) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


class CompiledDecodeStep:
    """``step(tokens [B] int) -> next tokens [B] int32``: one compiled decode step over `StaticKVCache`s.

    Feeds ``tokens`` at each cache's position, advances the caches in place and samples with ``sampler``
    (whose random draws, if any, advance ``mx.random.state`` exactly like the eager path). The caller must
    not step a full cache: `room` says how many steps are left.
    """

    def __init__(
        self, model: Any, caches: Sequence[StaticKVCache], sampler: Callable[[mx.array], mx.array]
    ) -> None:
        reason = compile_unsupported_reason(caches)
        if reason is not None:
            raise TypeError(f"cannot compile the decode step: {reason}.")
        if any(c.keys is None for c in caches):
            raise ValueError("prefill the caches (or call allocate()) before compiling the decode step.")
        self.caches = list(caches)
        key = (id(model), _sampler_key(sampler), tuple(_layout(c) for c in self.caches))
        trace = _ENTRIES.get(key)
        if (
            trace is None
            or trace.model_ref() is not model
            or not _same_weights(trace.weights, _weights(model))
        ):
            trace = _Trace(model, sampler, len(self.caches))
            _ENTRIES[key] = trace
            while len(_ENTRIES) > _MAX_ENTRIES:
                _ENTRIES.popitem(last=False)
        _ENTRIES.move_to_end(key)
        self._trace = trace
        self._written = [c.offset for c in self.caches]  # one host sync, then counted in Python

    def _first_call(self, tokens: mx.array) -> mx.array:
        """Trace; if the model cannot be traced, put back what the failed trace left as tracers."""
        trace = self._trace
        # mlx's random stub does not declare ``state`` (a sequence whose [0] is the key array).
        key = cast(Sequence[mx.array], mx.random.state)[0]
        try:
            out = trace.fn(tokens)
        except BaseException as exc:
            for p in trace.proxies:  # the caller's caches were never touched
                p.reset()
            dict_key = next((k for k, v in _ENTRIES.items() if v is trace), None)
            if dict_key is not None:
                del _ENTRIES[dict_key]
            hi, lo = (int(v) for v in cast(list[int], key.tolist()))  # key: uint32 [2]
            mx.random.seed((hi << 32) | lo)
            if not isinstance(exc, _AppendNotCompleted) or dict_key is None:
                raise
            # Retrace with ordinary cache writes (the model's attention is not one that appends).
            model = trace.model_ref()
            self._trace = _Trace(model, trace.sampler, len(trace.proxies), defer_append=False)
            _ENTRIES[dict_key] = self._trace
            for p, c in zip(self._trace.proxies, self.caches, strict=True):
                p.max_size, p._layout = c.max_size, c._layout
                p.compile_state[:] = c.compile_state
            return self._first_call(tokens)
        trace.traced = True
        return out

    @property
    def room(self) -> int:
        """Decode steps left before the fullest cache is at capacity."""
        return min(c.max_size - w for c, w in zip(self.caches, self._written, strict=True))

    def __call__(self, tokens: mx.array) -> mx.array:
        if self.room < 1:
            raise ValueError(
                "a StaticKVCache is full: stop decoding (or create the caches with a larger max_size)."
            )
        trace = self._trace
        proxies = trace.proxies
        for p, c in zip(proxies, self.caches, strict=True):
            p.max_size, p._layout = c.max_size, c._layout
            p.compile_state[:] = c.compile_state
        run = trace.fn if trace.traced else self._first_call
        out = run(tokens.reshape(-1))
        proxies = self._trace.proxies  # a first call may have replaced the trace
        for i, (p, c) in enumerate(zip(proxies, self.caches, strict=True)):
            c.compile_state[:] = p.compile_state
            p.compile_state[0] = p.compile_state[1] = None  # do not keep the buffers alive
            self._written[i] += 1
            c._written = self._written[i]
        return out
