"""Logits processors: ``processor(tokens [L] or [B, L], logits [B, V]) -> logits [B, V]``.

Same semantics as mlx-lm 0.32.2's: ``tokens`` is the history (prompt + generated so far); only the last
``context_size`` tokens count. 1-D histories are shared by every row; 2-D histories are per row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import mlx.core as mx

from .errors import SamplerConfigError

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]


def _recent(tokens: mx.array, logits: mx.array, context_size: int | None) -> mx.array | None:
    """Last ``context_size`` history tokens as [B, C] int32, or None when the history is empty."""
    if tokens.ndim not in (1, 2):
        raise ValueError(f"token history must be [L] or [B, L], got shape {tokens.shape}.")
    if tokens.shape[-1] == 0:
        return None
    if context_size is not None:
        tokens = tokens[..., -context_size:]
    tokens = tokens.astype(mx.int32)
    if tokens.ndim == 1:
        tokens = mx.broadcast_to(tokens[None], (logits.shape[0], tokens.shape[0]))
    elif tokens.shape[0] != logits.shape[0]:
        raise ValueError(
            f"token history has batch {tokens.shape[0]} but logits have batch {logits.shape[0]}."
        )
    return tokens


def _check_context(name: str, context_size: int | None) -> None:
    if context_size is not None and (isinstance(context_size, bool) or context_size < 1):
        raise SamplerConfigError(f"{name} must be a positive integer or None, got {context_size!r}.")


def make_logit_bias(logit_bias: Mapping[int, float]) -> LogitsProcessor:
    """Add ``logit_bias[token]`` to that token's logit in every row."""
    indices = mx.array([int(k) for k in logit_bias], dtype=mx.int32)
    values = mx.array([float(v) for v in logit_bias.values()])

    def logit_bias_processor(tokens: mx.array, logits: mx.array) -> mx.array:
        return logits.at[:, indices].add(values.astype(logits.dtype))

    return logit_bias_processor


def make_repetition_penalty(penalty: float, context_size: int | None = 20) -> LogitsProcessor:
    """Sign-aware multiplicative penalty on tokens seen recently (CTRL, arXiv:1909.05858):
    negative logits are multiplied by ``penalty``, positive ones divided by it."""
    if not isinstance(penalty, (int, float)) or penalty < 0:
        raise SamplerConfigError(f"repetition_penalty must be a non-negative number, got {penalty!r}.")
    _check_context("repetition_context_size", context_size)

    def repetition_penalty_processor(tokens: mx.array, logits: mx.array) -> mx.array:
        recent = _recent(tokens, logits, context_size)
        if recent is None:
            return logits
        selected = mx.take_along_axis(logits, recent, axis=-1)
        selected = mx.where(selected < 0, selected * penalty, selected / penalty)
        return mx.put_along_axis(logits, recent, selected, axis=-1)

    return repetition_penalty_processor


def make_presence_penalty(penalty: float, context_size: int | None = 20) -> LogitsProcessor:
    """Subtract ``penalty`` once from every token present in the recent history (OpenAI's option)."""
    _check_context("presence_context_size", context_size)

    def presence_penalty_processor(tokens: mx.array, logits: mx.array) -> mx.array:
        recent = _recent(tokens, logits, context_size)
        if recent is None:
            return logits
        selected = mx.take_along_axis(logits, recent, axis=-1) - penalty
        return mx.put_along_axis(logits, recent, selected, axis=-1)

    return presence_penalty_processor


def make_frequency_penalty(penalty: float, context_size: int | None = 20) -> LogitsProcessor:
    """Subtract ``penalty`` once per occurrence of each token in the recent history (OpenAI's option)."""
    _check_context("frequency_context_size", context_size)

    def frequency_penalty_processor(tokens: mx.array, logits: mx.array) -> mx.array:
        recent = _recent(tokens, logits, context_size)
        if recent is None:
            return logits
        rows = mx.broadcast_to(mx.arange(logits.shape[0])[:, None], recent.shape)
        return logits.at[rows, recent].subtract(mx.array(penalty, logits.dtype))

    return frequency_penalty_processor


def make_logits_processors(
    logit_bias: Mapping[int, float] | None = None,
    repetition_penalty: float | None = None,
    repetition_context_size: int | None = 20,
    presence_penalty: float | None = None,
    presence_context_size: int | None = 20,
    frequency_penalty: float | None = None,
    frequency_context_size: int | None = 20,
) -> list[LogitsProcessor]:
    """The processors for the given options, in mlx-lm's order: bias, repetition, presence, frequency."""
    processors: list[LogitsProcessor] = []
    if logit_bias:
        processors.append(make_logit_bias(logit_bias))
    if repetition_penalty is not None and repetition_penalty != 0:
        processors.append(make_repetition_penalty(repetition_penalty, repetition_context_size))
    if presence_penalty is not None and presence_penalty != 0:
        processors.append(make_presence_penalty(presence_penalty, presence_context_size))
    if frequency_penalty is not None and frequency_penalty != 0:
        processors.append(make_frequency_penalty(frequency_penalty, frequency_context_size))
    return processors
