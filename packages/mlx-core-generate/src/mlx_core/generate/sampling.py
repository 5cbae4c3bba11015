"""Samplers: turn log-probabilities [B, V] into tokens [B], with mlx-lm's filters and their order.

The filters operate on log-probabilities and return log-probabilities with removed entries at -inf,
exactly like mlx-lm 0.32.2's ``sample_utils``. A sampler applies top-p, then min-p, then XTC, then
top-k (mlx-lm's order), and finally draws from ``softmax(logprobs / temperature)``; temperature 0 is
argmax and ignores the filters. Using the same operations in the same order on the same global random
state makes seeded draws identical to mlx-lm's ``make_sampler``.

A decode step hands a sampler raw logits through `sample_from_logits`: a sampler with a
``sample_logits(logits)`` method (`DefaultSampler` has one) may skip the log-softmax, e.g. greedy decoding
with a fused kernel (``DefaultSampler(greedy=mlx_core.kernels.greedy_tokens)``); any other sampler gets
``logits - logsumexp(logits)`` as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import mlx.core as mx

from .errors import SamplerConfigError


@runtime_checkable
class Sampler(Protocol):
    """``sampler(logprobs [B, V]) -> tokens [B]``; ``probabilities`` gives the distribution it draws from."""

    temperature: float

    def __call__(self, logprobs: mx.array) -> mx.array: ...

    def probabilities(self, logprobs: mx.array) -> mx.array: ...


def sample_from_logits(sampler: Callable[[mx.array], mx.array], logits: mx.array) -> mx.array:
    """Tokens [B] from raw ``logits`` [B, V]: ``sampler.sample_logits(logits)`` where the sampler has it,
    else ``sampler(logits - logsumexp(logits))``.
    """
    sample_logits = getattr(sampler, "sample_logits", None)
    if sample_logits is not None:
        return sample_logits(logits)
    return sampler(log_softmax(logits))


def log_softmax(logits: mx.array) -> mx.array:
    """``logits - logsumexp(logits)`` over the last axis, in mlx-lm's operations and rounding."""
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def apply_top_k(logprobs: mx.array, top_k: int) -> mx.array:
    """Keep the ``top_k`` most likely entries of each row [B, V]; the rest become -inf."""
    vocab_size = logprobs.shape[-1]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not (0 < top_k < vocab_size):
        raise SamplerConfigError(f"top_k must be an integer in (0, {vocab_size}), got {top_k!r}.")
    mask_idx = mx.argpartition(-logprobs, kth=top_k - 1, axis=-1)[..., top_k:]
    return mx.put_along_axis(logprobs, mask_idx, mx.array(-float("inf"), logprobs.dtype), axis=-1)


def _check_min_tokens_to_keep(value: int) -> None:
    """``min_tokens_to_keep`` must be a positive int (not a bool): at least one token always survives."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SamplerConfigError(f"min_tokens_to_keep must be a positive integer, got {value!r}.")


def apply_min_p(logprobs: mx.array, min_p: float, min_tokens_to_keep: int = 1) -> mx.array:
    """Drop entries with probability below ``min_p`` times the row's top probability.

    At least ``min_tokens_to_keep`` entries (the most likely ones) always survive.
    """
    if not (0 <= min_p <= 1.0):
        raise SamplerConfigError(f"min_p must be in [0, 1], got {min_p!r}.")
    _check_min_tokens_to_keep(min_tokens_to_keep)
    top_logprobs = mx.max(logprobs, axis=-1, keepdims=True)
    scaled_min_p = top_logprobs + math.log(min_p) if min_p > 0 else top_logprobs - float("inf")
    tokens_to_remove = logprobs < scaled_min_p
    if min_tokens_to_keep > 1:
        top_indices = mx.argpartition(logprobs, kth=-min_tokens_to_keep, axis=-1)[..., -min_tokens_to_keep:]
        tokens_to_remove = mx.put_along_axis(tokens_to_remove, top_indices, mx.array(False), axis=-1)
    return mx.where(tokens_to_remove, -float("inf"), logprobs)


def apply_top_p(logprobs: mx.array, top_p: float) -> mx.array:
    """Nucleus filter: keep the smallest set of most likely entries whose mass reaches ``top_p``."""
    if not (0 < top_p <= 1.0):
        raise SamplerConfigError(f"top_p must be in (0, 1], got {top_p!r}; use 1.0 to disable it.")
    sorted_logprobs = mx.sort(logprobs, axis=-1)
    sorted_probs = mx.exp(sorted_logprobs.astype(mx.float32))
    mass_above = mx.cumsum(sorted_probs, axis=-1, reverse=True, inclusive=False)
    total_mass = mass_above[..., :1] + sorted_probs[..., :1]
    num_dropped = (mass_above >= top_p * total_mass).sum(axis=-1, keepdims=True)
    threshold = mx.take_along_axis(sorted_logprobs, num_dropped, axis=-1)
    return mx.where(logprobs < threshold, -float("inf"), logprobs)


def _xtc_mask(logprobs: mx.array, xtc_threshold: float, xtc_special_tokens: Sequence[int]) -> mx.array:
    probs = mx.softmax(logprobs, -1)
    mask = probs > mx.where(probs > xtc_threshold, probs, mx.inf).min(axis=-1, keepdims=True)
    if xtc_special_tokens:
        mask[..., list(xtc_special_tokens)] = False
    return mask


def _check_xtc(xtc_probability: float, xtc_threshold: float) -> None:
    if not (0 <= xtc_threshold <= 0.5):
        raise SamplerConfigError(f"xtc_threshold must be in [0, 0.5], got {xtc_threshold!r}.")
    if not (0 <= xtc_probability <= 1.0):
        raise SamplerConfigError(f"xtc_probability must be in [0, 1], got {xtc_probability!r}.")


def apply_xtc(
    logprobs: mx.array, xtc_probability: float, xtc_threshold: float, xtc_special_tokens: Sequence[int] = ()
) -> mx.array:
    """Exclude Top Choices: with probability ``xtc_probability`` remove every entry above the threshold
    except the least likely of them (one uniform draw per call, as in mlx-lm)."""
    _check_xtc(xtc_probability, xtc_threshold)
    mask = _xtc_mask(logprobs, xtc_threshold, xtc_special_tokens)
    return mx.where(mx.random.uniform(0, 1) > xtc_probability, logprobs, mx.where(mask, -mx.inf, logprobs))


class DefaultSampler:
    """Temperature sampling with optional top-p, min-p, XTC and top-k filters (mlx-lm's order).

    ``temperature == 0`` → argmax (filters ignored); otherwise a categorical draw from
    ``softmax(filtered_logprobs / temperature)`` using MLX's global random state.

    ``greedy``: optional ``f(logits [B, V]) -> tokens [B]`` returning what ``argmax(logits -
    logsumexp(logits))`` returns, used by `sample_logits` at temperature 0 (e.g.
    ``mlx_core.kernels.greedy_tokens``, two kernels instead of MLX's three single-block ones).
    """

    def __init__(
        self,
        temperature: float = 0.0,
        top_p: float = 1.0,
        min_p: float = 0.0,
        min_tokens_to_keep: int = 1,
        top_k: int = 0,
        xtc_probability: float = 0.0,
        xtc_threshold: float = 0.0,
        xtc_special_tokens: Sequence[int] = (),
        greedy: Callable[[mx.array], mx.array] | None = None,
    ) -> None:
        if greedy is not None and not callable(greedy):
            raise SamplerConfigError(f"greedy must be a function of the logits or None, got {greedy!r}.")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
            raise SamplerConfigError(f"temperature must be a finite number >= 0, got {temperature!r}.")
        if not isinstance(top_p, (int, float)) or not (0 < top_p <= 1.0):
            raise SamplerConfigError(f"top_p must be in (0, 1], got {top_p!r}; use 1.0 to disable it.")
        if not (0 <= min_p <= 1.0):
            raise SamplerConfigError(f"min_p must be in [0, 1], got {min_p!r}; use 0.0 to disable it.")
        _check_min_tokens_to_keep(min_tokens_to_keep)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise SamplerConfigError(f"top_k must be an integer >= 0 (0 disables it), got {top_k!r}.")
        _check_xtc(xtc_probability, xtc_threshold)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.min_p = float(min_p)
        self.min_tokens_to_keep = min_tokens_to_keep
        self.top_k = top_k
        self.xtc_probability = float(xtc_probability)
        self.xtc_threshold = float(xtc_threshold)
        self.xtc_special_tokens = tuple(int(t) for t in xtc_special_tokens)
        self.greedy = greedy
        self._draw: Callable[[mx.array], mx.array] | None = None

    def __repr__(self) -> str:
        return (
            f"DefaultSampler(temperature={self.temperature}, top_p={self.top_p}, min_p={self.min_p}, "
            f"top_k={self.top_k}, xtc_probability={self.xtc_probability})"
        )

    def _filter(self, logprobs: mx.array, with_xtc: bool) -> mx.array:
        """Apply the deterministic filters (and XTC when asked) in mlx-lm's order."""
        if self.top_p < 1.0:
            logprobs = apply_top_p(logprobs, self.top_p)
        if self.min_p != 0.0:
            logprobs = apply_min_p(logprobs, self.min_p, self.min_tokens_to_keep)
        if with_xtc and self.xtc_probability > 0.0:
            logprobs = apply_xtc(logprobs, self.xtc_probability, self.xtc_threshold, self.xtc_special_tokens)
        if 0 < self.top_k < logprobs.shape[-1]:
            logprobs = apply_top_k(logprobs, self.top_k)
        return logprobs

    def _sample(self, logprobs: mx.array) -> mx.array:
        logprobs = self._filter(logprobs, with_xtc=True)
        return mx.random.categorical(logprobs * (1.0 / self.temperature))

    def __call__(self, logprobs: mx.array) -> mx.array:
        """Draw one token per row of ``logprobs`` [B, V] → [B] (uint32)."""
        if self.temperature == 0:
            return mx.argmax(logprobs, axis=-1)
        if self._draw is None:
            self._draw = mx.compile(self._sample, inputs=mx.random.state, outputs=mx.random.state)
        return self._draw(logprobs)

    def sample_logits(self, logits: mx.array) -> mx.array:
        """Tokens [B] from raw ``logits`` [B, V]: ``greedy(logits)`` at temperature 0 when given, else
        ``self(logits - logsumexp(logits))``.
        """
        if self.temperature == 0 and self.greedy is not None:
            return self.greedy(logits)
        return self(log_softmax(logits))

    def probabilities(self, logprobs: mx.array) -> mx.array:
        """The exact distribution [B, V] that ``__call__`` draws from (one-hot argmax at temperature 0).

        Raises ValueError when XTC is on, since XTC itself is a random choice between two distributions.
        """
        if self.temperature == 0:
            idx = mx.argmax(logprobs, axis=-1, keepdims=True)
            return (mx.arange(logprobs.shape[-1]) == idx).astype(mx.float32)
        if self.xtc_probability > 0.0:
            raise SamplerConfigError(
                "probabilities() is undefined with XTC on (XTC randomly switches filters); "
                "set xtc_probability=0 to get the sampling distribution."
            )
        filtered = self._filter(logprobs, with_xtc=False)
        return mx.softmax(filtered.astype(mx.float32) * (1.0 / self.temperature), axis=-1)


def make_sampler(
    temperature: float = 0.0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    min_tokens_to_keep: int = 1,
    top_k: int = 0,
    xtc_probability: float = 0.0,
    xtc_threshold: float = 0.0,
    xtc_special_tokens: Sequence[int] = (),
    greedy: Callable[[mx.array], mx.array] | None = None,
) -> DefaultSampler:
    """Build a `DefaultSampler` (validates every parameter; see its docstring for semantics)."""
    return DefaultSampler(
        temperature=temperature,
        top_p=top_p,
        min_p=min_p,
        min_tokens_to_keep=min_tokens_to_keep,
        top_k=top_k,
        xtc_probability=xtc_probability,
        xtc_threshold=xtc_threshold,
        xtc_special_tokens=xtc_special_tokens,
        greedy=greedy,
    )
