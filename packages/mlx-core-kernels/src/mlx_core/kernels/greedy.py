"""Greedy sampling from raw logits: ``argmax(logits - logsumexp(logits))`` in two short kernels.

A greedy decode step samples with ``mx.argmax(logprobs)`` where ``logprobs = logits - logsumexp(logits)``
(mlx-lm's order, which `mlx_core.generate` follows so that greedy tokens match mlx-lm's). Over a
vocabulary of 128k–152k MLX runs the log-sum-exp and the argmax with one block per row: on an H100 they
took 15 µs and 24 µs per token (ncu, Llama-3.2-1B shape), more than a whole transformer layer's
attention. `greedy_tokens` spreads each row over many blocks:

1. every block reduces its slice to a log-sum-exp partial ``(max, sum of exp(x - max))``;
2. every block recombines the row's partials into the log-sum-exp (rounded to the logits' dtype, as
   ``mx.logsumexp`` returns it), picks the best ``T(x - lse)`` of its slice (the first index among
   equal values, as ``mx.argmax``), and the last block of the row to finish picks among the blocks.

The subtraction is rounded to the logits' dtype exactly as the MLX ops round it, so logits closer than
half a unit in the last place of the result tie and the first wins, as with the ops; the tokens agree
with the ops whenever their log-sum-exp rounds to the same value (the float32 sums differ only in
summation order). NaN logits have no defined result. CPU and Metal run the MLX ops.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import mlx.core as mx
from mlx_core.kernels._sources import kernel_source
from mlx_core.kernels._validate import require_array, require_float
from mlx_core.kernels.backend import resolve_backend

__all__ = ["greedy_tokens", "greedy_tokens_cuda"]

_THREADS = 256
_PER_BLOCK = 2048  # logits per block: ~63 blocks for a 128k vocabulary, 8 per thread
_MAX_BLOCKS = 256  # pass 2 reads every partial of its row: keep that list short
_MAX_ROWS = 65535  # grid.y


@functools.cache
def _kernels() -> tuple[Any, Any]:
    partials = mx.fast.cuda_kernel(
        name="mlx_core_greedy_partials",
        input_names=["logits"],
        output_names=["parts", "state"],
        source=kernel_source("greedy_partials.cu"),
        header=kernel_source("common.cuh"),
        ensure_row_contiguous=True,
    )
    pick = mx.fast.cuda_kernel(
        name="mlx_core_greedy_pick",
        input_names=["logits", "parts", "state"],
        output_names=["token", "picks"],
        source=kernel_source("greedy_pick.cu"),
        header=kernel_source("common.cuh"),
        ensure_row_contiguous=True,
    )
    return partials, pick


def greedy_blocks(vocab: int) -> int:
    """Blocks per row: one per ``_PER_BLOCK`` logits, at most ``_MAX_BLOCKS``."""
    return max(1, min(_MAX_BLOCKS, -(-vocab // _PER_BLOCK)))


def greedy_tokens_cuda(logits: mx.array) -> mx.array:
    """Launch both passes (no validation): ``logits`` ``[rows, V]`` → int32 ``[rows]``."""
    rows, vocab = logits.shape
    blocks = greedy_blocks(vocab)
    template = [("T", logits.dtype), ("V", vocab), ("NBLK", blocks), ("NT", _THREADS)]
    launch = {"grid": (blocks * _THREADS, rows, 1), "threadgroup": (_THREADS, 1, 1), "template": template}
    partials, pick = _kernels()
    parts, state = partials(
        inputs=[logits],
        output_shapes=[(rows, blocks, 2), (max(rows, 4),)],  # >= 16 bytes: not the host's pool (_scalars)
        output_dtypes=[mx.float32, mx.int32],
        **launch,
    )
    # The tokens are exactly [rows], not padded: the host reads them every step, and MLX serves
    # allocations of <= 8 bytes from a read-mostly managed pool the host reads without migrating a page,
    # as it does mx.argmax's result. A 16-byte token buffer (ordinary managed memory) cost 40–70 µs per
    # token in a decode loop on an H100 (benchmarks/NOTES.md).
    token, _ = pick(
        inputs=[logits, parts, state],
        output_shapes=[(rows,), (rows, blocks, 2)],
        output_dtypes=[mx.int32, mx.float32],
        **launch,
    )
    return token


def _ops(logits: mx.array) -> mx.array:
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return mx.argmax(logprobs, axis=-1).astype(mx.int32)


def greedy_tokens(logits: mx.array, *, backend: str | None = None) -> mx.array:
    """The greedy token of each row: ``argmax(logits - logsumexp(logits))`` over the last axis, as int32.

    Args:
        logits: ``[..., V]`` float32, float16 or bfloat16 (not log-normalised: the log-sum-exp is taken
            here, in the same rounding as ``mx.logsumexp`` then a subtraction in the logits' dtype).
        backend: ``None``/``"auto"``, ``"fallback"`` (MLX ops), ``"cuda"``.

    Returns:
        int32 ``[...]``: the first index of the largest ``logits - logsumexp(logits)`` of each row.
    """
    logits = require_array("logits", logits)
    require_float("logits", logits)
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must be [..., V] with V >= 1, got shape {tuple(logits.shape)}.")
    lead = logits.shape[:-1]
    rows = math.prod(lead)
    if (
        resolve_backend(backend, logits.dtype) == "cuda"
        and 1 <= rows <= _MAX_ROWS
        and logits.shape[-1] < 2**31 - _PER_BLOCK
    ):
        flat = logits if logits.ndim == 2 else logits.reshape(rows, logits.shape[-1])
        tokens = greedy_tokens_cuda(flat)
        return tokens if logits.ndim == 2 else tokens.reshape(lead)
    return _ops(logits)
