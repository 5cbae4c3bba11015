"""How far the decode kernels are from a plain read of the same bytes (CUDA only, run under ncu).

For each Llama-3.2-1B bf16 weight size (o_proj, q/k/v, down, gate/up, the whole MLP, the head) a read-only
kernel streams that many bytes with 16-byte loads (4, 8 or 16 in flight per thread, 2, 4 or 8 blocks of 256
threads per SM): its best time is the floor a kernel of that size cannot beat (launch, ramp and drain
included). Then `fused_matvec` / `fused_mlp` run at the same sizes. Every size cycles over > 256 MB of
distinct buffers, so each launch reads HBM as a decode step does (the 50 MB L2 cannot hold them).

    MLX_USE_CUDA_GRAPHS=0 ncu --clock-control base --cache-control none --csv \\
        --metrics gpu__time_duration.sum python benchmarks/read_floor.py run > floor.csv
    python benchmarks/read_floor.py summarize floor.csv

Fourteenth session (call 96, H100, base clocks): floor / ours in µs: o 5.9 / 6.6, q/k/v 7.3 / 9.2, down
13.9 / 15.5, gate/up 24.7 / -, MLP 35.4 / 41.5, head 172.4 / 173.5.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from ncu_segments import segment_marker, segments

MIB = 1 << 20
CYCLE_BYTES = 256 * MIB
H100_SMS = 132  # the read kernel's grid: 2, 4 or 8 blocks per SM of the lent card
SIZES = {  # Llama-3.2-1B bf16 projections, bytes
    "o 8.4 MB": 2048 * 2048 * 2,
    "q/k/v 12.6 MB": 3072 * 2048 * 2,
    "down 33.6 MB": 2048 * 8192 * 2,
    "gate/up 67 MB": 16384 * 2048 * 2,
    "MLP 101 MB": 3 * 8192 * 2048 * 2,
    "head 525 MB": 128256 * 2048 * 2,
}


def buffers_for(n_bytes: int) -> int:
    """How many distinct buffers of ``n_bytes`` make one cycle exceed the L2 by far."""
    return max(2, -(-CYCLE_BYTES // n_bytes))


def read_kernel(in_flight: int) -> Any:
    """A grid-stride read of ``w`` (uint32), ``in_flight`` 16-byte loads per thread per step, XOR-folded so
    the loads stay; the output is written only if the fold hits one value (never, in practice)."""
    import mlx.core as mx

    source = f"""
const uint4* p = reinterpret_cast<const uint4*>(w);
const long long n = static_cast<long long>(w_shape[0]) / 4;
unsigned int acc = 0;
const long long stride = static_cast<long long>(gridDim.x) * blockDim.x * {in_flight};
for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x * {in_flight} + threadIdx.x; i < n;
     i += stride) {{
  uint4 v[{in_flight}];
#pragma unroll
  for (int k = 0; k < {in_flight}; ++k) {{
    const long long j = i + static_cast<long long>(k) * blockDim.x;
    v[k] = j < n ? p[j] : make_uint4(0u, 0u, 0u, 0u);
  }}
#pragma unroll
  for (int k = 0; k < {in_flight}; ++k) {{
    acc ^= v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
  }}
}}
if (acc == 0x9E3779B9u) {{
  out[threadIdx.x & 3] = acc;
}}
"""
    return mx.fast.cuda_kernel(
        name=f"read_floor_{in_flight}", input_names=["w"], output_names=["out"], source=source
    )


def run() -> None:
    """Launch the read kernels and ours (a GPU run, meant for ncu)."""
    import mlx.core as mx
    from mlx_core.kernels import MatvecWeights, fused_matvec, fused_mlp

    mark = segment_marker()
    for label, n_bytes in SIZES.items():
        buffers = [
            mx.random.randint(0, 2**31 - 1, (n_bytes // 4,), dtype=mx.uint32)
            for _ in range(buffers_for(n_bytes))
        ]
        mx.eval(buffers)
        for blocks_per_sm in (2, 4, 8):
            for in_flight in (4, 8, 16):
                kernel = read_kernel(in_flight)
                mark(f"floor | {label} | {blocks_per_sm} blocks/SM, {in_flight} loads in flight")
                for i in range(2 * len(buffers)):
                    (out,) = kernel(
                        inputs=[buffers[i % len(buffers)]],
                        grid=(H100_SMS * blocks_per_sm * 256, 1, 1),
                        threadgroup=(256, 1, 1),
                        output_shapes=[(4,)],
                        output_dtypes=[mx.uint32],
                    )
                    mx.eval(out)
        del buffers

    dtype = mx.bfloat16
    x = mx.random.normal((1, 2048)).astype(dtype)
    hidden = (mx.random.normal((1, 8192)) * 0.1).astype(dtype)
    norm = (1 + 0.1 * mx.random.normal((2048,))).astype(dtype)
    mx.eval(x, hidden, norm)
    projections = {  # label: (out, in, how it is called)
        "o 8.4 MB": (2048, 2048, "residual"),
        "q/k/v 12.6 MB": (3072, 2048, "norm"),
        "down 33.6 MB": (2048, 8192, "residual"),
        "head 525 MB": (128256, 2048, "norm"),
    }
    for label, (out_features, in_features, kind) in projections.items():
        weights = [
            (mx.random.normal((out_features, in_features)) * 0.02).astype(dtype)
            for _ in range(buffers_for(out_features * in_features * 2))
        ]
        mx.eval(weights)
        inputs = hidden if in_features == 8192 else x
        mark(f"ours | {label} | fused_matvec ({kind})")
        for i in range(2 * len(weights)):
            w = weights[i % len(weights)]
            if kind == "norm":
                mx.eval(fused_matvec(inputs, w, norm_weight=norm))
            else:
                mx.eval(fused_matvec(inputs, w, residual=x))
        del weights
    mlps = [
        (
            MatvecWeights((mx.random.normal((16384, 2048)) * 0.02).astype(dtype)),
            MatvecWeights((mx.random.normal((2048, 8192)) * 0.01).astype(dtype)),
        )
        for _ in range(buffers_for(3 * 8192 * 2048 * 2))
    ]
    counters = mx.zeros((16,), dtype=mx.int32)
    mx.eval([(g.weight, d.weight) for g, d in mlps], counters)
    mark("ours | MLP 101 MB | fused_mlp (one launch)")
    for i in range(2 * len(mlps)):
        gate_up, down = mlps[i % len(mlps)]
        mx.eval(fused_mlp(x, gate_up, down, norm_weight=norm, counters=counters))


def summarize(path: str) -> None:
    """Per segment: the median kernel time; per size, the best read setting against ours."""
    measured = [
        (label, [t for name, t in kernels if name.startswith(("read_floor", "mlx_core"))])
        for label, kernels in segments(path)
    ]
    best: dict[str, float] = defaultdict(lambda: float("inf"))
    ours: dict[str, float] = {}
    for label, times in measured:
        if not times:
            continue
        kind, size, setting = (part.strip() for part in label.split("|"))
        median = statistics.median(times)
        print(f"{kind:5s} {size:15s} {setting:42s} median {median:8.2f} µs over {len(times)} launches")
        if kind == "floor":
            best[size] = min(best[size], median)
        else:
            ours[size] = median
    print("\n| bytes | floor (µs) | ours (µs) |\n|---|---:|---:|")
    for size in SIZES:
        floor = f"{best[size]:.1f}" if size in best else "-"
        mine = f"{ours[size]:.1f}" if size in ours else "-"
        print(f"| {size} | {floor} | {mine} |")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "run":
        run()
    elif len(sys.argv) == 3 and sys.argv[1] == "summarize":
        summarize(sys.argv[2])
    else:
        raise SystemExit(__doc__)
