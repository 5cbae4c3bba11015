"""Benchmark mlx_core.attn.scaled_dot_product_attention against calling mx.fast directly.

Two comparisons per (phase, Lk), timed in the same process, interleaved, median of repeats after warm-up:

- ours (plain KV) vs ``mx.fast.scaled_dot_product_attention`` called directly: the overhead of our
  dispatch and shape checks (ratio should be ≈ 1.00);
- ours on an 8-bit quantized KV cache (``mx.quantized_matmul`` path) vs dequantize-then-attend
  (``mx.dequantize`` + ``mx.fast``), the obvious alternative.

Phases: decode (Lq = 1, no mask) and prefill (causal; the last prefill chunk of a context of Lk tokens). On
the GPU: bf16, B=1, 32 query / 8 kv heads, D=128, prefill chunk min(Lk, 2048) (mlx-lm's prefill step, which
also keeps the quantized path's [Lq, Lk] scores at 16k within a few GB). On the CPU (reference BLAS, slow):
float32, 8 / 2 heads, D=64, a 16-token chunk, so the whole run takes well under a minute.

    uv run python benchmarks/attn.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import mlx.core as mx
from mlx_core.attn import scaled_dot_product_attention


class QuantCache:
    """What the attention call reads from a quantized KV cache."""

    def __init__(self, group_size: int, bits: int) -> None:
        self.group_size, self.bits = group_size, bits


def time_pair(fns: list[Callable[[], mx.array]], repeats: int, inner: int) -> list[float]:
    """Median seconds per call of each fn, interleaving the fns within every repeat to share drift."""
    for fn in fns:  # warm-up (compilation, allocation)
        for _ in range(2):
            mx.eval(fn())
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(inner):
                mx.eval(fn())
            samples[i].append((time.perf_counter() - t0) / inner)
    return [statistics.median(s) for s in samples]


def bench_case(
    queries: mx.array,
    kv: tuple[mx.array, mx.array],
    q_kv: tuple[tuple[mx.array, mx.array, mx.array], tuple[mx.array, mx.array, mx.array]],
    mask: str | None,
    scale: float,
    cache: QuantCache,
    repeats: int,
    inner: int,
) -> list[float]:
    """Seconds per call: mx.fast direct, ours, dequantize-then-attend, ours on the quantized cache."""
    keys, values = kv
    q_keys, q_values = q_kv
    gs, bits = cache.group_size, cache.bits

    def direct() -> mx.array:
        return mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)

    def ours() -> mx.array:
        return scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)

    def dequant_then_attend() -> mx.array:
        k = mx.dequantize(*q_keys, group_size=gs, bits=bits)
        v = mx.dequantize(*q_values, group_size=gs, bits=bits)
        return mx.fast.scaled_dot_product_attention(queries, k, v, scale=scale, mask=mask)

    def ours_quantized() -> mx.array:
        return scaled_dot_product_attention(queries, q_keys, q_values, scale=scale, mask=mask, cache=cache)

    return time_pair([direct, ours, dequant_then_attend, ours_quantized], repeats, inner)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: Lk 1k only, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per case (default 15 / 5)")
    args = parser.parse_args()

    device = mx.default_device()
    on_gpu = device.type == mx.gpu
    if on_gpu:
        dtype, n_q, n_kv, d, prefill_chunk = mx.bfloat16, 32, 8, 128, 2048
    else:
        dtype, n_q, n_kv, d, prefill_chunk = mx.float32, 8, 2, 64, 16
    lengths = [1024] if args.quick else [1024, 4096, 16384]
    repeats = args.repeats or (3 if args.quick else (15 if on_gpu else 5))
    group_size, bits = 64, 8
    scale = d**-0.5
    cache = QuantCache(group_size, bits)

    print(
        f"device={device} dtype={dtype} B=1 heads={n_q}/{n_kv} D={d} kv={bits}-bit/g{group_size} "
        f"repeats={repeats} mlx={mx.__version__}"
    )
    header = (
        f"{'phase':<8}{'Lk':>7}{'Lq':>7} | {'mx.fast µs':>11}{'ours µs':>10}{'ratio':>7} | "
        f"{'deq+fast µs':>12}{'quant µs':>10}{'ratio':>7}"
    )
    print(header)
    print("-" * len(header))
    mx.random.seed(0)
    for lk in lengths:
        keys = mx.random.normal((1, n_kv, lk, d)).astype(dtype)
        values = mx.random.normal((1, n_kv, lk, d)).astype(dtype)
        q_keys = mx.quantize(keys, group_size=group_size, bits=bits)
        q_values = mx.quantize(values, group_size=group_size, bits=bits)
        mx.eval(keys, values, q_keys, q_values)
        for phase in ("decode", "prefill"):
            lq = 1 if phase == "decode" else min(prefill_chunk, lk)
            mask = None if phase == "decode" else "causal"
            queries = mx.random.normal((1, n_q, lq, d)).astype(dtype)
            mx.eval(queries)
            work = n_q * lq * lk * d
            inner = max(1, min(50, int(2e8 / work))) if on_gpu else max(1, min(10, int(2e7 / work)))

            t_direct, t_ours, t_deq, t_quant = bench_case(
                queries, (keys, values), (q_keys, q_values), mask, scale, cache, repeats, inner
            )
            print(
                f"{phase:<8}{lk:>7}{lq:>7} | {t_direct * 1e6:>11.1f}{t_ours * 1e6:>10.1f}"
                f"{t_ours / t_direct:>7.2f} | {t_deq * 1e6:>12.1f}{t_quant * 1e6:>10.1f}"
                f"{t_quant / t_deq:>7.2f}"
            )
    print("ratio = ours / reference (lower is faster; ≈ 1.00 on the plain path means no overhead)")


if __name__ == "__main__":
    main()
