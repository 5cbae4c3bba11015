"""Where a decode step's time goes on CUDA: per-primitive cost, and one compiled step of a Qwen3-0.6B model.

    python benchmarks/decode_step_profile.py ops    # chains of dependent ops: µs per op, graph building
    python benchmarks/decode_step_profile.py step   # compiled step (mlx-lm model + mlx_core.attn):
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


def compiled_step(mode: str) -> None:
    """Time (or bracket for ncu) the compiled decode step of a Qwen3-0.6B-shaped bf16 model."""
    from mlx_core.cache import StaticKVCache
    from mlx_core.generate import CompiledDecodeStep, make_sampler, prefill

    cfg = decode_gpu.GPU_CONFIGS[0]
    model = decode_gpu.build_mlx_lm_model(cfg)
    prompt = mx.array(np.random.default_rng(1).integers(0, cfg.vocab, size=512).astype(np.int32))
    with decode_gpu.attn_sdpa_in(model):
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
        f"[step, graphs={graphs}] synchronous: build {statistics.median(build) * 1e6:.0f} µs + device/sync "
        f"{statistics.median(device) * 1e6:.0f} µs; pipelined {per_token:.0f} µs/token "
        f"({1e6 / per_token:.0f} tok/s)"
    )


def main() -> None:
    if not mx.cuda.is_available():
        raise SystemExit("needs MLX's CUDA backend")
    what = sys.argv[1] if len(sys.argv) > 1 else "step"
    if what == "ops":
        per_op_costs()
    elif what in ("step", "step-ncu"):
        with contextlib.suppress(KeyboardInterrupt):
            compiled_step(what)
    else:
        raise SystemExit(f"unknown mode {what!r}; use ops, step or step-ncu")


if __name__ == "__main__":
    main()
