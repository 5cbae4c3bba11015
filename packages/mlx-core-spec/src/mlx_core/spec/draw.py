"""Cheap, self-consistent draws of draft tokens: inverse CDF with one uniform per row.

A draft model draws ``k`` tokens per round from distributions ``q`` over the whole vocabulary. Gumbel-max
(``mx.random.categorical``) spends a random number and two logarithms per vocabulary entry, plus a log of
``q`` itself; with vocabularies of 150k entries that is most of a round's sampling cost. Rejection sampling
is lossless for *any* proposal, provided the ``q`` it is told is exactly the distribution the token was
drawn from. So the draft is drawn by inverting the float32 cumulative sum with a single uniform, and the
distribution reported is the one that inversion samples, ``diff(cdf) / cdf[-1]``: rounding in the cumulative
sum changes which ``q`` is used (by ulps), never whether the verification is exact.
"""

from __future__ import annotations

import mlx.core as mx

__all__ = ["inverse_cdf_draw"]


def inverse_cdf_draw(probs: mx.array, key: mx.array | None = None) -> tuple[mx.array, mx.array]:
    """Draw one index per row of ``probs`` [B, V] and return ``(tokens [B] int32, q [B, V] float32)``.

    ``probs`` may be unnormalised (non-negative, positive row sums). ``q`` is the exact distribution the
    draw follows given a uniform ``u``: ``q[x] = (cdf[x] − cdf[x−1]) / cdf[−1]`` with the float32 ``cdf``
    used for the draw; entries with zero probability get exactly zero and are never drawn. All lazy: no
    host round-trip, one ``[B]`` uniform.
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D [B, V], got shape {tuple(probs.shape)}")
    probs = probs.astype(mx.float32)
    vocab = probs.shape[-1]
    cdf = mx.cumsum(probs, axis=-1)
    total = cdf[:, -1:]
    u = mx.random.uniform(shape=(probs.shape[0], 1), key=key)
    # index x with cdf[x-1] <= u * total < cdf[x]; count of cdf entries <= u * total.
    tokens = (cdf <= u * total).sum(axis=-1).astype(mx.int32)
    # u * total can round up to total; clamp to the last index with mass (never a zero-mass entry).
    last = mx.max(mx.where(probs > 0, mx.arange(vocab, dtype=mx.int32), 0), axis=-1)
    tokens = mx.minimum(tokens, last)
    prev = mx.concatenate([mx.zeros_like(total), cdf[:, :-1]], axis=-1)
    q = (cdf - prev) / total
    return tokens, q
