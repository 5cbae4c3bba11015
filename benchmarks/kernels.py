"""Benchmark mlx_core.kernels: fused kernels vs separate MLX ops vs mx.compile'd ops, side by side.

Runs on ``mx.default_device()``: on a CUDA/Metal GPU in bfloat16 with the shapes of issue 5 (SwiGLU
4096x11008 and 1x11008, modulate [2, 4096, 3072]) and of issue 11 (decode attention, 32 q / 8 kv
heads, D = 128, Lk 1k-64k, B = 1 and 8), greedy sampling over Llama-3.2-1B's and Qwen3's vocabularies
(128256 and 151936 logits, B = 1 and 8) and one token's MLP (Llama-3.2-1B bf16 and 4-bit, Qwen3-0.6B
4-bit); on the CPU in float32 with smaller shapes. Each figure is
the median of >= 30 timed runs after warm-up, each run chaining several calls into one ``mx.eval`` so
launch overhead does not dominate. A failing variant prints its error and the run continues.

    uv run python benchmarks/kernels.py            # full run on the default device
    uv run python benchmarks/kernels.py --quick    # smoke run (small shapes)
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx_core.kernels import MatvecWeights, backend, fused_mlp, fused_modulate, fused_swiglu, greedy_tokens

try:  # phase 2; absent in older checkouts of the package
    from mlx_core.kernels import decode_attention
except ImportError:  # pragma: no cover
    decode_attention = None  # type: ignore[assignment]


@dataclass
class Row:
    op: str
    shape: str
    variant: str
    seconds: float | None
    nbytes: int
    note: str = ""


def time_chain(
    step: Callable[[mx.array], mx.array], start: mx.array, *, chain: int, reps: int, warmup: int
) -> float:
    """Median seconds per call of ``step`` applied ``chain`` times per ``mx.eval``."""

    def run() -> None:
        y = start
        for _ in range(chain):
            y = step(y)
        mx.eval(y)

    for _ in range(warmup):
        run()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) / chain)
    return statistics.median(times)


def compiled_chain(step: Callable[[mx.array], mx.array], n: int) -> Callable[[mx.array], mx.array]:
    """``step`` applied ``n`` times, as one mx.compile'd function."""

    def chained(y: mx.array) -> mx.array:
        for _ in range(n):
            y = step(y)
        return y

    return mx.compile(chained)


def measure(
    rows: list[Row],
    op: str,
    shape: str,
    variant: str,
    nbytes: int,
    step: Callable[[mx.array], mx.array],
    start: mx.array,
    args: argparse.Namespace,
    chain: int | None = None,
    calls_per_step: int = 1,
) -> None:
    """Time ``step`` (which makes ``calls_per_step`` calls of the op) and add a row per call."""
    try:
        seconds = time_chain(step, start, chain=chain or args.chain, reps=args.reps, warmup=args.warmup)
        seconds /= calls_per_step
        rows.append(Row(op, shape, variant, seconds, nbytes))
    except Exception as exc:  # keep going: one broken variant must not hide the others
        print(f"[{op} {shape} {variant}] failed: {type(exc).__name__}: {exc}")
        if args.verbose:
            traceback.print_exc()
        rows.append(Row(op, shape, variant, None, nbytes, note=f"error: {type(exc).__name__}"))


def silu_mul(x: mx.array, gate: mx.array) -> mx.array:
    return nn.silu(gate) * x


def modulate_ops(x: mx.array, shift: mx.array, scale: mx.array) -> mx.array:
    return mx.fast.layer_norm(x, None, None, 1e-6) * (1 + scale) + shift


def modulate_plain(x: mx.array, shift: mx.array, scale: mx.array) -> mx.array:
    mean = mx.mean(x, axis=-1, keepdims=True)
    var = mx.var(x, axis=-1, keepdims=True)
    return (x - mean) * mx.rsqrt(var + 1e-6) * (1 + scale) + shift


def bench_swiglu(rows: list[Row], shape: tuple[int, ...], dtype: mx.Dtype, args: argparse.Namespace) -> None:
    x = mx.random.normal(shape).astype(dtype)
    gate = mx.random.normal(shape).astype(dtype)
    mx.eval(x, gate)
    n = x.size * x.itemsize
    label = "x".join(map(str, shape))
    compiled = mx.compile(silu_mul)
    chain = args.chain if x.size > 1 << 16 else args.small_chain
    measure(rows, "copy", label, "x * 1 (bandwidth anchor)", 2 * n, lambda y: y * 1, x, args, chain)
    measure(rows, "swiglu", label, "separate ops", 3 * n, lambda y: silu_mul(y, gate), x, args, chain)
    measure(rows, "swiglu", label, "mx.compile", 3 * n, lambda y: compiled(y, gate), x, args, chain)
    measure(
        rows,
        "swiglu",
        label,
        "ours fallback",
        3 * n,
        lambda y: fused_swiglu(y, gate, backend="fallback"),
        x,
        args,
        chain,
    )
    measure(
        rows,
        "swiglu",
        label,
        f"ours fused ({backend(dtype)})",
        3 * n,
        lambda y: fused_swiglu(y, gate),
        x,
        args,
        chain,
    )


def bench_modulate(
    rows: list[Row], shape: tuple[int, int, int], dtype: mx.Dtype, args: argparse.Namespace
) -> None:
    b, _, d = shape
    x = mx.random.normal(shape).astype(dtype)
    shift = mx.random.normal((b, 1, d)).astype(dtype)
    scale = (0.1 * mx.random.normal((b, 1, d))).astype(dtype)
    mx.eval(x, shift, scale)
    n = x.size * x.itemsize + shift.nbytes + scale.nbytes
    label = "x".join(map(str, shape))
    chain = args.chain
    compiled = mx.compile(modulate_ops)
    measure(
        rows,
        "modulate",
        label,
        "plain ops",
        n + x.nbytes,
        lambda y: modulate_plain(y, shift, scale),
        x,
        args,
        chain,
    )
    measure(
        rows,
        "modulate",
        label,
        "fast.layer_norm + ops",
        n + x.nbytes,
        lambda y: modulate_ops(y, shift, scale),
        x,
        args,
        chain,
    )
    measure(
        rows,
        "modulate",
        label,
        "mx.compile",
        n + x.nbytes,
        lambda y: compiled(y, shift, scale),
        x,
        args,
        chain,
    )
    measure(
        rows,
        "modulate",
        label,
        "ours fallback",
        n + x.nbytes,
        lambda y: fused_modulate(y, shift, scale, backend="fallback"),
        x,
        args,
        chain,
    )
    measure(
        rows,
        "modulate",
        label,
        f"ours fused ({backend(dtype)})",
        n + x.nbytes,
        lambda y: fused_modulate(y, shift, scale),
        x,
        args,
        chain,
    )


def bench_decode_attention(
    rows: list[Row], batch: int, length: int, dtype: mx.Dtype, args: argparse.Namespace
) -> None:
    if decode_attention is None:
        return
    hq, hkv, d = 32, 8, 128
    q = mx.random.normal((batch, hq, 1, d)).astype(dtype)
    k = mx.random.normal((batch, hkv, length, d)).astype(dtype)
    v = mx.random.normal((batch, hkv, length, d)).astype(dtype)
    mx.eval(q, k, v)
    scale = 1.0 / math.sqrt(d)
    nbytes = k.nbytes + v.nbytes + 2 * q.nbytes
    label = f"B{batch} Lk{length}"
    chain = args.attn_chain

    # Chain through q so each call depends on the previous one (the output has q's shape).
    def sdpa(y: mx.array) -> mx.array:
        return mx.fast.scaled_dot_product_attention(y, k, v, scale=scale)

    def ours(y: mx.array) -> mx.array:
        return decode_attention(y, k, v, scale)

    # A caller-owned counter buffer (as a StaticKVCache supplies) lets the kernel merge its splits itself.
    counters = mx.zeros((batch * hkv,), dtype=mx.int32)
    mx.eval(counters)

    def ours_one_launch(y: mx.array) -> mx.array:
        return decode_attention(y, k, v, scale, counters=counters)

    measure(rows, "decode_attn", label, "mx.fast sdpa", nbytes, sdpa, q, args, chain)
    measure(rows, "decode_attn", label, f"ours ({backend(dtype)})", nbytes, ours, q, args, chain)
    one_launch = "ours, one launch (counters)"
    measure(rows, "decode_attn", label, one_launch, nbytes, ours_one_launch, q, args, chain)
    # The same chains inside one mx.compile'd function: no Python per call (as in a compiled decode step).
    for variant, step in (
        ("mx.fast sdpa, compiled", sdpa),
        (f"ours ({backend(dtype)}), compiled", ours),
        (f"{one_launch}, compiled", ours_one_launch),
    ):
        measure(rows, "decode_attn", label, variant, nbytes, compiled_chain(step, chain), q, args, 1, chain)
    if backend(dtype) != "cuda":
        return
    from mlx_core.kernels.decode_attention import _full_lengths, _mma_covers, decode_attention_cuda

    lengths = _full_lengths(batch, length)

    def simt(y: mx.array) -> mx.array:
        return decode_attention_cuda(y, k, v, scale, lengths, mma=False)

    measure(rows, "decode_attn", label, "ours, SIMT key loop", nbytes, simt, q, args, chain)
    if not args.attn_sweep:
        return
    mma = _mma_covers(dtype, hq // hkv, d)  # the launches below take the tensor-core loop
    for warps, rows_in_flight, splits in attention_launch_shapes(batch, hkv, length, mma):

        def swept(y: mx.array, shape: tuple[int, int, int] = (warps, rows_in_flight, splits)) -> mx.array:
            w, r, s = shape
            return decode_attention_cuda(y, k, v, scale, lengths, splits=s, warps=w, rows_in_flight=r)

        variant = f"ours w{warps} s{splits}" + ("" if mma else f" r{rows_in_flight}")
        measure(rows, "decode_attn", label, variant, nbytes, swept, q, args, chain)


def attention_launch_shapes(batch: int, kv_heads: int, length: int, mma: bool) -> list[tuple[int, int, int]]:
    """(warps per block, key rows in flight per warp, splits) for ``--attn-sweep``.

    The tensor-core loop (``mma``): 1, 2, 4 or 8 warps and every split count from 4 to 256 that leaves >= 16
    keys per warp. The SIMT loop: 2, 4 or 8 warps, 1, 2 or 4 rows in flight, >= 8 keys per warp.
    """
    shapes = []
    for splits in (4, 8, 16, 33, 66, 132, 256):
        if batch * kv_heads * splits > 8192:
            continue
        for warps in (1, 2, 4, 8) if mma else (2, 4, 8):
            for rows_in_flight in (1,) if mma else (1, 2, 4):
                if length // splits >= (16 if mma else 8) * warps:
                    shapes.append((warps, rows_in_flight, splits))
    return shapes


def bench_greedy(rows: list[Row], batch: int, vocab: int, dtype: mx.Dtype, args: argparse.Namespace) -> None:
    """Greedy token from raw logits. Each call's token is added back to the logits (one small add, the
    same in every variant) so that the chained calls depend on each other.
    """
    logits = mx.random.normal((batch, vocab)).astype(dtype)
    mx.eval(logits)
    n = logits.size * logits.itemsize
    label = f"{batch}x{vocab}"
    # The ops a decode step runs without the kernel (log-softmax, then argmax): greedy_tokens' fallback.
    greedy_ops = functools.partial(greedy_tokens, backend="fallback")
    compiled = mx.compile(greedy_ops)

    def chained(pick: Callable[[mx.array], mx.array]) -> Callable[[mx.array], mx.array]:
        return lambda y: y + pick(y)[:, None].astype(y.dtype)

    measure(
        rows, "greedy", label, "logsumexp+argmax ops", n, chained(greedy_ops), logits, args, args.attn_chain
    )
    measure(rows, "greedy", label, "ops, mx.compile", n, chained(compiled), logits, args, args.attn_chain)
    measure(
        rows,
        "greedy",
        label,
        f"ours ({backend(dtype)})",
        n,
        chained(greedy_tokens),
        logits,
        args,
        args.attn_chain,
    )
    measure(
        rows, "greedy", label, "add only (chain overhead)", n, lambda y: y + 1, logits, args, args.attn_chain
    )


def bench_mlp(
    rows: list[Row],
    hidden: int,
    intermediate: int,
    bits: int | None,
    dtype: mx.Dtype,
    args: argparse.Namespace,
) -> None:
    """A decoder block's MLP for one token (``x + down(swiglu(gate_up(rms_norm(x))))``): MLX ops, the same
    compiled, two `fused_matvec` launches, and `fused_mlp` in one launch (with counters)."""

    def projection(out: int, inp: int) -> MatvecWeights:
        w = (mx.random.normal((out, inp)) * inp**-0.5).astype(dtype)
        if bits is None:
            return MatvecWeights(w)
        packed, scales, biases = mx.quantize(w, group_size=64, bits=bits)
        return MatvecWeights(packed, scales, biases, bits, 64)

    gate_up, down = projection(2 * intermediate, hidden), projection(hidden, intermediate)
    norm = (1.0 + 0.1 * mx.random.normal((hidden,))).astype(dtype)
    x = mx.random.normal((1, 1, hidden)).astype(dtype)
    counters = mx.zeros((3,), dtype=mx.int32)
    mx.eval(gate_up.weight, down.weight, norm, x, counters)
    nbytes = sum(a.nbytes for w in (gate_up, down) for a in (w.weight, w.scales, w.biases) if a is not None)
    label = f"{hidden}x{intermediate} {'dense' if bits is None else f'q{bits}'}"

    def ops(y: mx.array) -> mx.array:  # the unfused graph: fused_mlp's fallback (RMSNorm, matmuls, SwiGLU)
        return fused_mlp(y, gate_up, down, norm_weight=norm, backend="fallback")

    measure(rows, "mlp", label, "MLX ops", nbytes, ops, x, args)
    measure(rows, "mlp", label, "ops, mx.compile", nbytes, mx.compile(ops), x, args)
    measure(
        rows,
        "mlp",
        label,
        "two fused_matvec",
        nbytes,
        lambda y: fused_mlp(y, gate_up, down, norm_weight=norm),
        x,
        args,
    )
    measure(
        rows,
        "mlp",
        label,
        f"ours, one launch ({backend(dtype)})",
        nbytes,
        lambda y: fused_mlp(y, gate_up, down, norm_weight=norm, counters=counters),
        x,
        args,
    )


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'op':<12} {'shape':<16} {'variant':<38} {'us/call':>10} {'GB/s':>9} {'x vs base':>10} "
        f"{'% copy BW':>10}"
    )
    print(head)
    print("-" * len(head))
    base: dict[tuple[str, str], float] = {}
    copy_bw: dict[str, float] = {}
    for r in rows:
        if r.seconds is None:
            print(f"{r.op:<12} {r.shape:<16} {r.variant:<38} {r.note:>10}")
            continue
        gbs = r.nbytes / r.seconds / 1e9
        key = (r.op, r.shape)
        if r.op == "copy":
            copy_bw[r.shape] = gbs
        if key not in base:
            base[key] = r.seconds
        ratio = base[key] / r.seconds
        ref_bw = copy_bw.get(r.shape) or (max(copy_bw.values()) if copy_bw else None)
        frac = f"{100 * gbs / ref_bw:9.0f}%" if ref_bw else f"{'-':>10}"
        us = 1e6 * r.seconds
        print(f"{r.op:<12} {r.shape:<16} {r.variant:<38} {us:10.1f} {gbs:9.1f} {ratio:9.2f}x {frac}")
    print("'x vs base' = speed-up over the first variant of the same op and shape (separate/plain ops).")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    parser.add_argument("--reps", type=int, default=30, help="timed runs per variant (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--chain", type=int, default=20, help="calls per mx.eval for large shapes")
    parser.add_argument("--small-chain", type=int, default=50, help="calls per mx.eval for tiny shapes")
    parser.add_argument("--attn-chain", type=int, default=20, help="calls per mx.eval for decode attention")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["swiglu", "modulate", "attention", "greedy", "mlp"]
    )
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failing variants")
    parser.add_argument(
        "--attn-sweep", action="store_true", help="also time decode attention under many launch shapes"
    )
    args = parser.parse_args()

    device = mx.default_device()
    on_gpu = device.type == mx.gpu
    dtype = getattr(mx, args.dtype) if args.dtype else (mx.bfloat16 if on_gpu else mx.float32)
    try:
        name = mx.device_info().get("device_name", "?")
    except Exception:  # pragma: no cover
        name = "?"
    print(
        f"mlx {mx.__version__} | device {device} ({name}) | dtype {dtype} | kernels backend {backend(dtype)}"
    )

    if on_gpu and not args.quick:
        swiglu_shapes: list[tuple[int, ...]] = [(4096, 11008), (1, 11008)]
        modulate_shapes = [(2, 4096, 3072)]
        attn = [(b, lk) for b in (1, 8) for lk in (1024, 4096, 16384, 65536)]
        greedy = [(1, 128256), (1, 151936), (8, 128256)]
        mlps = [(2048, 8192, None), (2048, 8192, 4), (1024, 3072, 4)]
    elif on_gpu:
        swiglu_shapes = [(512, 11008), (1, 11008)]
        modulate_shapes = [(2, 512, 3072)]
        attn = [(1, 4096), (8, 4096)]
        greedy = [(1, 128256)]
        mlps = [(1024, 3072, 4)]
    elif not args.quick:
        swiglu_shapes = [(256, 11008), (1, 11008)]
        modulate_shapes = [(2, 256, 3072)]
        attn = [(1, 1024), (1, 4096)]
        greedy = [(1, 128256)]
        mlps = [(1024, 3072, None)]
    else:
        args.chain, args.small_chain, args.attn_chain = min(args.chain, 5), min(args.small_chain, 10), 2
        swiglu_shapes = [(32, 2048), (1, 11008)]
        modulate_shapes = [(2, 64, 512)]
        attn = [(1, 1024)]
        greedy = [(1, 4096)]
        mlps = [(256, 512, None)]

    print(
        f"median of {args.reps} runs after {args.warmup} warm-up runs; "
        f"calls per eval {args.chain}/{args.small_chain}/{args.attn_chain}"
    )
    rows: list[Row] = []
    if "swiglu" not in args.skip:
        for shape in swiglu_shapes:
            bench_swiglu(rows, shape, dtype, args)
    if "modulate" not in args.skip:
        for mshape in modulate_shapes:
            bench_modulate(rows, mshape, dtype, args)
    if "attention" not in args.skip:
        for b, lk in attn:
            bench_decode_attention(rows, b, lk, dtype, args)
    if "greedy" not in args.skip:
        for b, vocab in greedy:
            bench_greedy(rows, b, vocab, dtype, args)
    if "mlp" not in args.skip:
        for hidden, intermediate, bits in mlps:
            bench_mlp(rows, hidden, intermediate, bits, dtype, args)
    print()
    print_table(rows)


if __name__ == "__main__":
    main()
