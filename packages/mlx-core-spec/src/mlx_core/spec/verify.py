"""Verification rules of speculative decoding, as pure functions on logits and probability arrays.

One target forward over ``[last, d1..dk]`` gives ``k + 1`` next-token distributions. These functions decide
how many draft tokens to keep and which token comes next (the correction at the first rejection, or the
bonus token when all ``k`` were accepted), so every round emits ``n_accepted + 1`` tokens.

- :func:`greedy_verify` (temperature 0): keep the longest prefix equal to the target's argmax.
- :func:`rejection_verify` (temperature > 0): the modified rejection sampling of Leviathan et al. (2023) and
  Chen et al. (2023): accept ``d_i`` with probability ``min(1, p_i(d_i) / q_i(d_i))``; at the first rejection
  sample from ``norm(max(0, p_i - q_i))``; if all are accepted sample the bonus token from ``p_k``. The output
  is distributed exactly as sampling from ``p`` token by token, and the expected acceptance per position is
  ``Σ min(p, q)`` (mlx-lm's "accept if equal to the target's own sample" gives only ``Σ p·q``).

Results are returned as lazy ``mx.array`` scalars so a caller evaluates them in one ``mx.eval``.
"""

from __future__ import annotations

import mlx.core as mx

__all__ = ["greedy_verify", "point_mass", "rejection_verify", "residual_distribution"]


def _check_draft(draft_tokens: mx.array, target: mx.array, what: str) -> int:
    if draft_tokens.ndim != 1:
        raise ValueError(f"draft_tokens must be 1-D [k], got shape {tuple(draft_tokens.shape)}")
    if target.ndim != 2:
        raise ValueError(f"{what} must be 2-D [k + 1, V], got shape {tuple(target.shape)}")
    k = draft_tokens.shape[0]
    if target.shape[0] != k + 1:
        raise ValueError(
            f"{what} must have k + 1 = {k + 1} rows (one per verified position plus the bonus), "
            f"got {target.shape[0]}"
        )
    return k


def _leading_true(accept: mx.array) -> mx.array:
    """Number of leading True entries of a 1-D boolean array (0-d int32)."""
    if accept.shape[0] == 0:
        return mx.array(0, dtype=mx.int32)
    return mx.cumprod(accept.astype(mx.int32)).sum()


def greedy_verify(draft_tokens: mx.array, target_logits: mx.array) -> tuple[mx.array, mx.array]:
    """Temperature-0 verification.

    Args:
        draft_tokens: ``[k]`` proposed tokens.
        target_logits: ``[k + 1, V]`` target scores (logits or log-probabilities) for the positions after
            ``last, d1, ..., dk``.

    Returns:
        ``(num_accepted, next_token)`` as 0-d int arrays: the longest prefix of the draft that equals the
        target's argmax, and the target's argmax right after it (correction or bonus).
    """
    k = _check_draft(draft_tokens, target_logits, "target_logits")
    choice = mx.argmax(target_logits, axis=-1)
    n = _leading_true(choice[:k] == draft_tokens.astype(choice.dtype))
    return n, choice[n]


def point_mass(tokens: mx.array, vocab_size: int) -> mx.array:
    """``[k, V]`` one-hot distributions: the ``q`` of a deterministic drafter such as prompt lookup."""
    return (mx.arange(vocab_size)[None, :] == tokens[:, None]).astype(mx.float32)


def residual_distribution(p: mx.array, q: mx.array) -> mx.array:
    """``norm(max(0, p − q))`` along the last axis; rows where it has no mass fall back to ``p``.

    The fallback only matters for rounding: a rejection implies ``p(x) < q(x)`` somewhere, hence
    ``Σ max(0, p − q) = Σ max(0, q − p) > 0`` in exact arithmetic.
    """
    r = mx.maximum(p - q, 0.0)
    mass = r.sum(axis=-1, keepdims=True)
    r = mx.where(mass > 0, r, p)
    return r / r.sum(axis=-1, keepdims=True)


def rejection_verify(
    draft_tokens: mx.array,
    target_probs: mx.array,
    draft_probs: mx.array | None = None,
    key: mx.array | None = None,
) -> tuple[mx.array, mx.array]:
    """Lossless modified rejection sampling.

    Args:
        draft_tokens: ``[k]`` proposed tokens, drawn from ``draft_probs``.
        target_probs: ``[k + 1, V]`` target distributions ``p`` (after the sampler's filters, temperature
            and logits processors) for the positions after ``last, d1, ..., dk``.
        draft_probs: ``[k, V]`` draft distributions ``q`` the tokens were drawn from, or ``None`` for a
            deterministic drafter (``q`` is a point mass on each proposed token).
        key: optional ``mx.random`` key; the global generator is used otherwise.

    Returns:
        ``(num_accepted, next_token)`` as 0-d int arrays.
    """
    k = _check_draft(draft_tokens, target_probs, "target_probs")
    vocab = target_probs.shape[-1]
    p = target_probs.astype(mx.float32)
    idx = draft_tokens.astype(mx.int32)
    q: mx.array | None = None
    if draft_probs is not None:
        if tuple(draft_probs.shape) != (k, vocab):
            raise ValueError(
                f"draft_probs must have shape [k, V] = {[k, vocab]}, got {list(draft_probs.shape)}; "
                "the draft and target vocabularies must match"
            )
        q = draft_probs.astype(mx.float32)
    k_uniform: mx.array | None = None
    k_sample: mx.array | None = None
    if key is not None:
        k_uniform, k_sample = mx.random.split(key)
    # Only k scalars p_i(d_i), q_i(d_i) and one full row of p and q are needed: gather them, never
    # materialise a [k, V] point mass or pad q with a zero row.
    p_x = mx.take_along_axis(p[:k], idx[:, None], axis=-1)[:, 0]
    q_x = mx.ones((k,), mx.float32) if q is None else mx.take_along_axis(q, idx[:, None], axis=-1)[:, 0]
    u = mx.random.uniform(shape=(k,), key=k_uniform)
    # accept with probability min(1, p/q)  <=>  u * q < p  (u in [0, 1)); division-free and safe at q = 0.
    n = _leading_true(u * q_x < p_x)
    # The row at the first rejection, or the bonus row (n == k), where q = 0 and the residual is p itself.
    p_row = mx.take(p, n, axis=0)
    if k == 0:
        q_row = mx.zeros((vocab,), mx.float32)
    else:
        m = mx.minimum(n, k - 1)
        if q is None:
            q_row = (mx.arange(vocab) == mx.take(idx, m)).astype(mx.float32)
        else:
            q_row = mx.take(q, m, axis=0)
        q_row = mx.where(n < k, q_row, 0.0)
    residual = residual_distribution(p_row, q_row)
    return n, mx.random.categorical(mx.log(residual), key=k_sample)
