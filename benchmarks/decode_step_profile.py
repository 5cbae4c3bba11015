"""Where a decode step's time goes on CUDA: per-primitive cost, and one compiled step of a Qwen3-0.6B model.

    python benchmarks/decode_step_profile.py ops    # chains of dependent ops: µs per op, graph building
    python benchmarks/decode_step_profile.py kernels  # fused decode kernels per launch shape vs MLX ops
    python benchmarks/decode_step_profile.py step [mlx-lm|fused]   # compiled step (mlx-lm model +
                                    # mlx_core.attn, or the reference model's fused decode path):
                                    # synchronous build/device split, pipelined µs/token
    ncu --clock-control none --profile-from-start off --print-summary per-kernel \\
        --metrics gpu__time_duration.sum python benchmarks/decode_step_profile.py step-ncu   # kernel census

Run once with ``MLX_USE_CUDA_GRAPHS=0`` to compare MLX's CUDA graphs off. ``step-ncu`` brackets two decode
steps with ``cuProfilerStart``/``Stop`` so only they are profiled. Needs a CUDA GPU and mlx-lm.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import decode_gpu
from kernels import time_chain


def per_op_costs() -> None:
    """µs per op for chains of dependent elementwise ops, gemvs and custom kernels, plus Python building."""
    tag = "graphs-off" if os.environ.get("MLX_USE_CUDA_GRAPHS") == "0" else "graphs-on"
    x = mx.random.normal((1, 1024)).astype(mx.bfloat16)
    w = mx.random.normal((1024, 1024)).astype(mx.bfloat16) * 0.03
    mx.eval(x, w)
    copy = mx.fast.cuda_kernel(
        name="profile_copy",
        input_names=["a"],
        output_names=["out"],
        source="int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < a_shape[1]) out[i] = a[i];",
    )

    def elementwise(y: mx.array) -> mx.array:
        return y * 1.0001 + 0.0001

    def custom(y: mx.array) -> mx.array:
        (out,) = copy(
            inputs=[y], grid=(1024, 1, 1), threadgroup=(256, 1, 1), output_shapes=[(1, 1024)],
            output_dtypes=[mx.bfloat16],
        )  # fmt: skip
        return out

    def per_op_us(step: Callable[[mx.array], mx.array], ops_per_step: int = 1) -> float:
        return time_chain(step, x, chain=400, reps=7, warmup=2) / ops_per_step * 1e6

    print(f"[{tag}] elementwise: {per_op_us(elementwise, 2):.2f} µs/op")
    print(f"[{tag}] gemv 1024x1024: {per_op_us(lambda y: y @ w):.2f} µs/op")
    print(f"[{tag}] custom kernel: {per_op_us(custom):.2f} µs/op")
    start = time.perf_counter()
    y = x
    for _ in range(4000):
        y = elementwise(y)
    print(f"[{tag}] Python graph building: {(time.perf_counter() - start) / 8000 * 1e6:.2f} µs/op")


def compiled_step(mode: str, which: str = "mlx-lm") -> None:
    """Time (or bracket for ncu) the compiled decode step of a Qwen3-0.6B-shaped bf16 model: mlx-lm's
    model code with mlx_core.attn (``which="mlx-lm"``), or mlx_core.models.llama with fused projections,
    i.e. the fused decode path (``which="fused"``).
    """
    from mlx_core.cache import StaticKVCache
    from mlx_core.generate import CompiledDecodeStep, make_sampler, prefill

    cfg = decode_gpu.GPU_CONFIGS[0]
    model = decode_gpu.build_mlx_lm_model(cfg)
    prompt = mx.array(np.random.default_rng(1).integers(0, cfg.vocab, size=512).astype(np.int32))
    context: contextlib.AbstractContextManager[None]
    if which == "fused":
        from mlx_core.models import fuse_projections

        model = fuse_projections(decode_gpu.build_reference_model(cfg, model))
        context = contextlib.nullcontext()
    else:
        context = decode_gpu.attn_sdpa_in(model)
    with context:
        caches = [StaticKVCache(1600) for _ in model.layers]
        prefill(model, prompt[None, :-1], caches)
        step = CompiledDecodeStep(model, caches, make_sampler(0.0))
        y = step(prompt[-1:])
        for _ in range(20):
            y = step(y)
            mx.eval(y)
        if mode == "step-ncu":
            cuda = ctypes.CDLL("libcuda.so.1")
            mx.synchronize()
            cuda.cuProfilerStart()
            for _ in range(2):
                y = step(y)
                mx.eval(y)
            mx.synchronize()
            cuda.cuProfilerStop()
            return
        build, device = [], []
        for _ in range(64):
            t0 = time.perf_counter()
            y = step(y)
            t1 = time.perf_counter()
            mx.eval(y)
            build.append(t1 - t0)
            device.append(time.perf_counter() - t1)

        def pipelined(n: int = 128) -> float:
            nonlocal y
            y = step(y)
            mx.async_eval(y)
            start = time.perf_counter()
            for _ in range(n):
                nxt = step(y)
                mx.async_eval(nxt)
                y.item()
                y = nxt
            y.item()
            return (time.perf_counter() - start) / n

        pipelined(16)
        per_token = statistics.median(pipelined() for _ in range(3)) * 1e6
    graphs = os.environ.get("MLX_USE_CUDA_GRAPHS", "1")
    print(
        f"[step {which}, graphs={graphs}] synchronous: build {statistics.median(build) * 1e6:.0f} µs "
        f"+ device/sync {statistics.median(device) * 1e6:.0f} µs; pipelined {per_token:.0f} µs/token "
        f"({1e6 / per_token:.0f} tok/s)"
    )


#: Repeats and distinct weights per timing in ``kernels`` mode (small under ncu: each launch is profiled).
_TUNE_REPS = int(os.environ.get("TUNE_REPS", "15"))
_TUNE_N = int(os.environ.get("TUNE_N", "28"))


def _per_launch_us(launch: Callable[[int], mx.array], n: int, reps: int = _TUNE_REPS) -> float:
    """Median µs per launch of ``launch(i)`` for i < n, all n queued back to back and evaluated together."""
    times = []
    for r in range(reps + 3):
        t0 = time.perf_counter()
        mx.eval([launch(i) for i in range(n)])
        if r >= 3:
            times.append((time.perf_counter() - t0) / n)
    return statistics.median(times) * 1e6


def _matvec_row(name: str, inp: int, rows: int, bits: int | None, norm: bool, swiglu: bool, res: bool) -> str:
    """One tuning line: MLX ops, then the fused kernel under several launch shapes, over 28 weights."""
    from mlx_core.kernels.matvec import fused_matvec, matvec_cuda

    n, rng = _TUNE_N, np.random.default_rng(0)

    def rnd(*shape: int, scale: float = 1.0) -> mx.array:
        return mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(mx.bfloat16)

    dense = [rnd(rows, inp, scale=inp**-0.5) for _ in range(n)]
    weights = (
        [mx.quantize(w, group_size=64, bits=bits) for w in dense]
        if bits
        else [(w, None, None) for w in dense]
    )
    x, norm_w, residual = rnd(1, inp), rnd(inp), rnd(1, rows // 2 if swiglu else rows)
    mx.eval(weights, x, norm_w, residual)
    kw: dict[str, Any] = {
        "bits": bits,
        "group_size": 64,
        "norm_weight": norm_w if norm else None,
        "eps": 1e-6,
        "residual": residual if res else None,
        "swiglu": swiglu,
    }
    line = f"{name:24s} {'q4' if bits else 'bf16':5s}"
    line += f" ops {_per_launch_us(lambda i: fused_matvec(x, *weights[i], backend='fallback', **kw), n):6.1f}"
    for warps, rpw in ((4, 1), (8, 1), (4, 2), (8, 2), (8, 4)):
        us = _per_launch_us(
            lambda i, w=warps, r=rpw: matvec_cuda(x, *weights[i], warps=w, rows_per_warp=r, **kw), n
        )
        line += f" | {warps}w×{rpw}r {us:6.1f}"
    return line + "  (µs per launch)"


def _attention_row(length: int, capacity: int) -> str:
    """One tuning line: the packed decode attention (partial + merge) for several split counts."""
    from mlx_core.kernels.decode_attention import TokenPrep, decode_attention_cuda, decode_attention_qkv

    n, rng = _TUNE_N, np.random.default_rng(1)

    def rnd(*shape: int) -> mx.array:
        return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(mx.bfloat16)

    caches = [(rnd(1, 8, capacity, 128), rnd(1, 8, capacity, 128)) for _ in range(n)]
    qkv, q_norm, k_norm = rnd(1, 1, 32 * 128), rnd(128), rnd(128)
    inv = mx.array((1.0 / (1e6 ** (np.arange(0, 128, 2) / 128))).astype(np.float32))
    prep = TokenPrep(q_norm, k_norm, 1e-6, 1, inv, 1.0)
    position = mx.array([length - 1], dtype=mx.int32)  # packed launches take the write position
    mx.eval(caches, qkv, q_norm, k_norm, inv)
    line = f"attention qkv L={length:5d}"
    for splits in (None, 8, 16, 32, 64, 128):
        us = _per_launch_us(
            lambda i, s=splits: decode_attention_cuda(
                qkv, caches[i][0], caches[i][1], 128**-0.5, position, packed=(16, prep), splits=s
            ),
            n,
        )
        line += f" | splits {splits or 'auto'} {us:6.1f}"
    ops = _per_launch_us(
        lambda i: decode_attention_qkv(
            qkv,
            caches[i][0],
            caches[i][1],
            length - 1,
            128**-0.5,
            n_heads=16,
            q_norm=q_norm,
            k_norm=k_norm,
            rope_inv_freq=inv,
            backend="fallback",
        )[0],
        n,
    )
    return f"{line} | ops {ops:6.1f}  (µs per launch, partial + merge)"


def kernel_tuning() -> None:
    """µs per launch of the fused decode kernels at Qwen3-0.6B shapes (bf16), over 28 distinct weights
    (as in a real step: nothing stays in L2), for several launch shapes, next to the unfused MLX ops.
    """
    cases = [  # name, in, rows of W, norm, swiglu, residual
        ("qkv (norm)", 1024, 4096, True, False, False),
        ("gate_up (norm, swiglu)", 1024, 6144, True, True, False),
        ("o_proj (residual)", 2048, 1024, False, False, True),
        ("down (residual)", 3072, 1024, False, False, True),
    ]
    for name, inp, rows, norm, swiglu, res in cases:
        for bits in (None, 4):
            print(_matvec_row(name, inp, rows, bits, norm, swiglu, res), flush=True)
    print(_attention_row(768, 1600), flush=True)
    print(_attention_row(4096, 8192), flush=True)


def main() -> None:
    if not mx.cuda.is_available():
        raise SystemExit("needs MLX's CUDA backend")
    what = sys.argv[1] if len(sys.argv) > 1 else "step"
    which = sys.argv[2] if len(sys.argv) > 2 else "mlx-lm"
    if what == "ops":
        per_op_costs()
    elif what == "kernels":
        kernel_tuning()
    elif what in ("step", "step-ncu"):
        with contextlib.suppress(KeyboardInterrupt):
            compiled_step(what, which)
    else:
        raise SystemExit(f"unknown mode {what!r}; use ops, step or step-ncu")


if __name__ == "__main__":
    main()
