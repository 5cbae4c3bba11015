"""Scalar kernel arguments (eps, softmax scale, ...) as arrays a CUDA kernel can read without a page fault.

MLX's CUDA allocator takes all memory with ``cudaMallocManaged`` and serves every allocation of at most 8
bytes from a small read-mostly pool that the host also reads and writes (every Python scalar turned into an
array lands there). A kernel that reads such an array may wait on a page migration: measured on an H100,
kernels reading a one-float ``eps`` array took ~20 µs longer than the same kernels without it. So scalars
are passed in arrays of at least 16 bytes, which MLX allocates outside that pool (managed memory that stays
on the GPU). The converse holds for results the *host* reads every step, such as a sampled token: those
belong in the small pool (see `mlx_core.kernels.greedy`).
"""

from __future__ import annotations

import functools

import mlx.core as mx

#: Smallest allocation MLX's CUDA allocator serves outside its small host-shared pool.
DEVICE_MIN_BYTES = 16

#: Distinct argument tuples kept: bounded, because per-call values (an int valid length that grows every
#: decode step) would otherwise accumulate one array per token.
_CACHED = 256


@functools.lru_cache(maxsize=_CACHED)
def kernel_scalars(values: tuple[float, ...], dtype: mx.Dtype = mx.float32) -> mx.array:
    """``values`` as a 1-D ``dtype`` array padded with zeros to at least 16 bytes (recent ones cached)."""
    n = max(len(values), -(-DEVICE_MIN_BYTES // dtype.size))
    return mx.array(list(values) + [0] * (n - len(values)), dtype=dtype)
