"""Sequence-axis helpers that treat an array and a quantized (packed, scales, biases) triple alike."""

from __future__ import annotations

from typing import cast

import mlx.core as mx

#: A float buffer ``[B, H, L, D]`` or a quantized triple of ``[B, H, L, *]`` arrays.
Stored = mx.array | tuple[mx.array, ...]


def seq_len(x: Stored) -> int:
    return (x[0] if isinstance(x, tuple) else x).shape[2]


def seq_slice(x: Stored, start: int | None, stop: int | None) -> Stored:
    if isinstance(x, tuple):
        return tuple(a[..., start:stop, :] for a in x)
    return x[..., start:stop, :]


def seq_concat(parts: list[Stored]) -> Stored:
    # All parts share one layout (the cache stores one kind), so the first part decides for all.
    if isinstance(parts[0], tuple):
        triples = cast(list[tuple[mx.array, ...]], parts)
        return tuple(mx.concatenate([p[i] for p in triples], axis=2) for i in range(len(triples[0])))
    return mx.concatenate(cast(list[mx.array], parts), axis=2)


def seq_zeros_like(x: Stored, n: int) -> Stored:
    if isinstance(x, tuple):
        return tuple(mx.zeros((a.shape[0], a.shape[1], n, a.shape[3]), a.dtype) for a in x)
    return mx.zeros((x.shape[0], x.shape[1], n, x.shape[3]), x.dtype)


def seq_assign(x: Stored, start: int, update: Stored) -> None:
    """In place: ``x[..., start:start+L, :] = update`` (each array object of ``x`` is updated)."""
    stop = start + seq_len(update)
    # ``update`` has the same layout as ``x`` (array with array, triple with triple).
    if isinstance(x, tuple):
        for a, u in zip(x, cast(tuple[mx.array, ...], update), strict=False):
            a[..., start:stop, :] = u
    else:
        x[..., start:stop, :] = cast(mx.array, update)


def fresh(x: Stored) -> Stored:
    """New array objects for ``x`` so in-place writes never touch a caller's arrays."""
    if isinstance(x, tuple):
        return tuple(a[...] for a in x)
    return x[...]


def leaves(x: Stored | None) -> list[mx.array]:
    if x is None:
        return []
    return list(x) if isinstance(x, tuple) else [x]


def nbytes(x: Stored | None) -> int:
    return sum(a.nbytes for a in leaves(x))
