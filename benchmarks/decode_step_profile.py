"""Where a decode step's time goes on CUDA: per-primitive cost, and one compiled step of a Qwen3-0.6B model.

    python benchmarks/decode_step_profile.py ops    # chains of dependent ops: µs per op, graph building
    python benchmarks/decode_step_profile.py kernels  # fused decode kernels per launch shape (run under ncu)
    python benchmarks/decode_step_profile.py step [mlx-lm|fused] [SHAPE]   # compiled step (mlx-lm model +
                                    # mlx_core.attn, or the reference model's fused decode path):
                                    # synchronous build/device split, pipelined µs/token
    python benchmarks/decode_step_profile.py loop [SHAPE] [ONLY]  # one process, interleaved: mlx-lm, Generate
                                    # (fused decode) on the default, a plain and a thread-local stream, and
                                    # a bare loop of the compiled step: build / encode / wait per token
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


def compiled_step(mode: str, which: str = "mlx-lm", shape: str = "Qwen3-0.6B bf16") -> None:
    """Time (or bracket for ncu) the compiled decode step of one of `decode_gpu.GPU_CONFIGS` (``shape``,
    by name): mlx-lm's model code with mlx_core.attn (``which="mlx-lm"``), or mlx_core.models.llama with
    fused projections, i.e. the fused decode path (``which="fused"``).
    """
    from mlx_core.cache import StaticKVCache
    from mlx_core.generate import CompiledDecodeStep, make_sampler, prefill
    from mlx_core.kernels import greedy_tokens

    by_name = {c.name: c for c in decode_gpu.GPU_CONFIGS}
    if shape not in by_name:
        raise SystemExit(f"unknown shape {shape!r}; one of: {', '.join(by_name)}")
    cfg = by_name[shape]
    model = decode_gpu.build_mlx_lm_model(cfg)
    prompt = mx.array(np.random.default_rng(1).integers(0, cfg.vocab, size=512).astype(np.int32))
    context: contextlib.AbstractContextManager[None]
    if which == "fused":
        from mlx_core.models import fuse_projections

        model = fuse_projections(decode_gpu.build_reference_model(cfg, model))
        context = contextlib.nullcontext()
    else:
        context = decode_gpu.attn_sdpa_in(model)
    # the fused path samples as the CLI does: greedy steps through mlx_core.kernels.greedy_tokens
    sampler = make_sampler(0.0, greedy=greedy_tokens if which == "fused" else None)
    with context:
        caches = [StaticKVCache(1600) for _ in model.layers]
        prefill(model, prompt[None, :-1], caches)
        step = CompiledDecodeStep(model, caches, sampler)
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
        f"[step {which} {shape}, graphs={graphs}] synchronous: build {statistics.median(build) * 1e6:.0f} µs "
        f"+ device/sync {statistics.median(device) * 1e6:.0f} µs; pipelined {per_token:.0f} µs/token "
        f"({1e6 / per_token:.0f} tok/s)"
    )


def primitive_census(model: Any, prompt: mx.array) -> str:
    """Primitives per type in the graph of one decode step (built eagerly, not evaluated): an upper
    bound on what the compiled tape encodes per token (compile fuses elementwise chains further).
    """
    import collections
    import re
    import tempfile

    from mlx_core.cache import StaticKVCache
    from mlx_core.generate import CompiledDecodeStep, make_sampler, prefill

    caches = [StaticKVCache(768) for _ in model.layers]
    prefill(model, prompt[None, :-1], caches)
    step = CompiledDecodeStep(model, caches, make_sampler(0.0))
    trace = step._trace
    for p, c in zip(trace.proxies, caches, strict=True):
        p.max_size, p._layout = c.max_size, c._layout
        p.compile_state[:] = c.compile_state
    y = trace._step(prompt[-1:])
    outputs = [y] + [a for p in trace.proxies for a in p.compile_state if a is not None]
    with tempfile.NamedTemporaryFile("r", suffix=".dot") as f:
        mx.export_to_dot(f.name, *outputs)
        labels = re.findall(r'label ="(\w+)"', f.read())
    for p in trace.proxies:
        p.reset()
    counts = collections.Counter(labels)
    return f"{sum(counts.values())} in all: " + ", ".join(f"{k} {v}" for k, v in counts.most_common())


def loop_compare(shape: str, tokens: int = 256, runs: int = 5, only: str = "") -> None:
    """mlx-lm and `Generate` (fused decode) on the default, a plain and a thread-local stream, and a bare
    pipelined loop of the same compiled step, in one process and interleaved. For the bare loop a token's
    host time is split into building the step (the compiled call), encoding it (``async_eval``) and
    waiting for the previous token (``item``). ``only``: ``;``-separated substrings of the variants to
    run besides mlx-lm's own.
    """
    import importlib

    from mlx_core.cache import StaticKVCache
    from mlx_core.generate import CompiledDecodeStep, clear_compiled_steps, make_sampler, prefill
    from mlx_core.models import fuse_projections

    by_name = {c.name: c for c in decode_gpu.GPU_CONFIGS}
    cfg = by_name[shape]
    source = decode_gpu.build_mlx_lm_model(cfg)
    model = fuse_projections(decode_gpu.build_reference_model(cfg, source))
    prompt = mx.array(np.random.default_rng(1).integers(0, cfg.vocab, size=512).astype(np.int32))
    splits: dict[str, list[tuple[float, float, float]]] = {}

    def bare(name: str, stream: Any) -> tuple[list[int], float]:
        with mx.stream(stream):
            caches = [StaticKVCache(768) for _ in model.layers]
            prefill(model, prompt[None, :-1], caches)
            step = CompiledDecodeStep(model, caches, make_sampler(0.0))
            y = step(prompt[-1:])
            mx.async_eval(y)
            out, parts = [], []
            start = 0.0
            for i in range(tokens):
                t0 = time.perf_counter()
                nxt = step(y)
                t1 = time.perf_counter()
                mx.async_eval(nxt)
                t2 = time.perf_counter()
                out.append(y.item())
                t3 = time.perf_counter()
                if i == 0:
                    start = t3
                else:
                    parts.append((t1 - t0, t2 - t1, t3 - t2))
                y = nxt
            mx.eval(y)
        splits.setdefault(name, []).extend(parts)
        return out, (tokens - 1) / (t3 - start)

    print(f"[primitives of one {shape} step, uncompiled graph] {primitive_census(model, prompt)}")
    mlx_lm_generate = importlib.import_module("mlx_lm.generate")  # the module, not mlx_lm.generate()
    device = mx.default_device()
    streams = {
        "thread-local": mx.new_thread_local_stream(device),  # mlx-lm's generation stream
        "default": mx.default_stream(device),
        "plain": mx.new_stream(device),
    }

    def ours_on(kind: str) -> tuple[list[int], float]:
        clear_compiled_steps()  # trace under this stream
        with mx.stream(streams[kind]):  # Generate decodes on the caller's stream
            return decode_gpu.run_ours(model, prompt, tokens, True)

    def mlx_lm_on(kind: str) -> tuple[list[int], float]:
        original = mlx_lm_generate.generation_stream
        mlx_lm_generate.generation_stream = streams[kind]
        try:
            return decode_gpu.run_mlx_lm(source, prompt, tokens)
        finally:
            mlx_lm_generate.generation_stream = original

    def bare_on(kind: str) -> tuple[list[int], float]:
        clear_compiled_steps()
        return bare(f"bare loop, {kind} stream", streams[kind])

    variants: list[decode_gpu.Variant] = [
        ("mlx-lm generate_step", lambda: decode_gpu.run_mlx_lm(source, prompt, tokens)),
        ("mlx-lm, default stream", lambda: mlx_lm_on("default")),
        ("Generate, fused decode", lambda: ours_on("default")),
        ("Generate, thread-local stream", lambda: ours_on("thread-local")),
        ("Generate, plain new stream", lambda: ours_on("plain")),
        ("bare loop, default stream", lambda: bare_on("default")),
        ("bare loop, thread-local stream", lambda: bare_on("thread-local")),
    ]
    if only:
        keep = [k.strip() for k in only.split(";") if k.strip()]
        variants = [v for v in variants if v[0] == "mlx-lm generate_step" or any(k in v[0] for k in keep)]
    measured = decode_gpu.measure_interleaved(variants, runs)
    env = {k: os.environ.get(k, "-") for k in ("MLX_USE_CUDA_GRAPHS", "MLX_MAX_OPS_PER_BUFFER")}
    print(f"[loop {shape}, {env}]")
    base = measured["mlx-lm generate_step"]
    for name, result in measured.items():
        if isinstance(result, Exception):
            print(f"  {name:30s} FAILED {result!r}")
            continue
        toks, tps, all_tps = result
        same = "identical" if toks == base[0] else "DIFFERS"
        spread = ", ".join(f"{t:.0f}" for t in all_tps)
        line = f"  {name:30s} {tps:7.1f} tok/s {tps / base[1]:5.2f}x {same} [{spread}]"
        if name in splits:
            b, e, w = (statistics.median(p[i] for p in splits[name]) * 1e6 for i in range(3))
            line += f"  build {b:.0f} + encode {e:.0f} + wait {w:.0f} µs"
        print(line, flush=True)


#: Distinct weights per launch configuration in ``kernels`` mode (cycled twice; nothing stays in L2).
_TUNE_N = int(os.environ.get("TUNE_N", "6"))
#: Launch shapes (warps per block, rows per warp) the ``kernels`` sweep runs for every matvec case.
_LAUNCH_SHAPES = ((4, 1), (8, 1), (16, 1), (8, 2), (4, 4), (8, 4))
#: 512-thread blocks are skipped for dense weights: some instantiations need more than the 128 registers per
#: thread such a block allows (cudaGraphInstantiate: "too many resources requested for launch").
_DENSE_LAUNCH_SHAPES = tuple(shape for shape in _LAUNCH_SHAPES if shape[0] * 32 < 512)


def _bf16(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> mx.array:
    return mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(mx.bfloat16)


def _matvec_sweep(inp: int, rows: int, bits: int | None, norm: bool, swiglu: bool, res: bool) -> None:
    """Launch the fused matvec of one decode shape under every launch shape (and the MLX ops once)."""
    from mlx_core.kernels.matvec import fused_matvec, matvec_cuda

    n, rng = _TUNE_N, np.random.default_rng(0)
    dense = [_bf16(rng, rows, inp, scale=inp**-0.5) for _ in range(n)]
    weights = (
        [mx.quantize(w, group_size=64, bits=bits) for w in dense]
        if bits
        else [(w, None, None) for w in dense]
    )
    x, norm_w, residual = _bf16(rng, 1, inp), _bf16(rng, inp), _bf16(rng, 1, rows // 2 if swiglu else rows)
    mx.eval(weights, x, norm_w, residual)
    kw: dict[str, Any] = {
        "bits": bits,
        "group_size": 64,
        "norm_weight": norm_w if norm else None,
        "eps": 1e-6,
        "residual": residual if res else None,
        "swiglu": swiglu,
    }
    mx.eval([fused_matvec(x, *weights[i % n], backend="fallback", **kw) for i in range(2 * n)])
    for warps, rpw in _LAUNCH_SHAPES if bits else _DENSE_LAUNCH_SHAPES:
        mx.eval([matvec_cuda(x, *weights[i % n], warps=warps, rows_per_warp=rpw, **kw) for i in range(2 * n)])


def _attention_sweep(length: int, capacity: int) -> None:
    """Launch the packed decode attention (partial + merge) at one length for several split counts."""
    from mlx_core.kernels.decode_attention import TokenPrep, decode_attention_cuda

    n, rng = _TUNE_N, np.random.default_rng(1)
    caches = [(_bf16(rng, 1, 8, capacity, 128), _bf16(rng, 1, 8, capacity, 128)) for _ in range(n)]
    qkv, q_norm, k_norm = _bf16(rng, 1, 1, 32 * 128), _bf16(rng, 128), _bf16(rng, 128)
    inv = mx.array((1.0 / (1e6 ** (np.arange(0, 128, 2) / 128))).astype(np.float32))
    prep = TokenPrep(q_norm, k_norm, 1e-6, 1, inv, 1.0)
    position = mx.array([length - 1, 0, 0, 0], dtype=mx.int32)[:1]  # packed launches take the write position
    mx.eval(caches, qkv, q_norm, k_norm, inv, position)
    for splits in (None, 8, 16, 32, 64, 128, 256):
        mx.eval(
            [
                decode_attention_cuda(
                    qkv, *caches[i % n], 128**-0.5, position, packed=(16, prep), splits=splits
                )
                for i in range(2 * n)
            ]
        )


def kernel_sweep(only: str = "") -> None:
    """Launch the fused decode kernels at Qwen3-0.6B shapes (and Llama-3.2-1B's MLP), bf16 and 4-bit,
    under several launch shapes, for ncu to time on the device (kernel names carry the launch shape):

        ncu --clock-control none --print-summary per-kernel --metrics gpu__time_duration.sum \\
            -k regex:mlx_core python benchmarks/decode_step_profile.py kernels [FILTER]

    FILTER keeps the cases whose "name kind" contains it (e.g. "llama", "bf16", "down (residual) q4").
    (Host-side timing of single launches measures the launch path, ~15–20 µs each, not the kernels.)
    """
    cases = [  # name, in, rows of W, norm, swiglu, residual
        ("qkv (norm)", 1024, 4096, True, False, False),
        ("gate_up (norm, swiglu)", 1024, 6144, True, True, False),
        ("o_proj (residual)", 2048, 1024, False, False, True),
        ("down (residual)", 3072, 1024, False, False, True),
        ("llama gate_up (norm, swiglu)", 2048, 16384, True, True, False),
        ("llama down (residual)", 8192, 2048, False, False, True),
    ]
    for name, inp, rows, norm, swiglu, res in cases:
        for bits in (None, 4):
            kind = "q4" if bits else "bf16"
            if only not in f"{name} {kind}":
                continue
            _matvec_sweep(inp, rows, bits, norm, swiglu, res)
            print(f"launched {name} {kind}", flush=True)
    for length, capacity in ((768, 1600), (4096, 8192), (16384, 16384)):
        if only not in f"attention L={length}":
            continue
        _attention_sweep(length, capacity)
        print(f"launched attention L={length}: 7 split counts", flush=True)


def main() -> None:
    if not mx.cuda.is_available():
        raise SystemExit("needs MLX's CUDA backend")
    what = sys.argv[1] if len(sys.argv) > 1 else "step"
    which = sys.argv[2] if len(sys.argv) > 2 else "mlx-lm"
    shape = sys.argv[3] if len(sys.argv) > 3 else "Qwen3-0.6B bf16"
    if what == "ops":
        per_op_costs()
    elif what == "kernels":
        kernel_sweep(sys.argv[2] if len(sys.argv) > 2 else "")
    elif what == "loop":
        loop_shape = sys.argv[2] if len(sys.argv) > 2 else "Llama-3.2-1B 4-bit"
        loop_compare(loop_shape, only=sys.argv[3] if len(sys.argv) > 3 else "")
    elif what in ("step", "step-ncu"):
        with contextlib.suppress(KeyboardInterrupt):
            compiled_step(what, which, shape)
    else:
        raise SystemExit(f"unknown mode {what!r}; use ops, step or step-ncu")


if __name__ == "__main__":
    main()
