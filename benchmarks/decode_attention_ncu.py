"""Kernel time of decode attention under Nsight Compute: ours in two launches, ours in one, ``mx.fast``.

``run`` launches, per ``BxL`` config (32 q / 8 kv heads, D = 128, bf16), three rounds of: our kernel plus
the merge kernel, our kernel with caller-owned counters (the merge in the same launch), and
``mx.fast.scaled_dot_product_attention``. A one-thread marker kernel precedes every launch group and a
``SEG`` line on stdout names it, so ``summarize`` can split ncu's kernel list (last round, µs summed per
group). Run it on the GPU machine::

    MLX_USE_CUDA_GRAPHS=0 ncu --clock-control base --cache-control none --csv \\
        --metrics gpu__time_duration.sum \\
        python3 benchmarks/decode_attention_ncu.py run 1x4096 8x16384 > out.csv
    python3 benchmarks/decode_attention_ncu.py summarize out.csv

The valid lengths are a 16-byte array on purpose: MLX keeps arrays of at most 8 bytes in a managed-memory
pool the host also writes, and a kernel reading one can wait ~20 µs on a page migration (this script's
first version, with a 4-byte lengths array at B = 1, measured that instead of the kernel).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from ncu_segments import segment_marker, segments

ROUNDS = 3
VARIANTS = ("two launches", "one launch", "mx.fast")


def run(configs: list[str]) -> None:
    mark = segment_marker()
    for spec in configs:
        launch_config(spec, mark)
    mark("end")


def launch_config(spec: str, mark: Callable[[str], None]) -> None:
    """``ROUNDS`` rounds of the three variants at one ``BxL`` config, each launch group marked."""
    import mlx.core as mx
    from mlx_core.kernels.decode_attention import decode_attention_cuda

    b, length = (int(x) for x in spec.split("x"))
    mark(f"{spec} setup")
    q = mx.random.normal((b, 32, 1, 128)).astype(mx.bfloat16)
    k = mx.random.normal((b, 8, length, 128)).astype(mx.bfloat16)
    v = mx.random.normal((b, 8, length, 128)).astype(mx.bfloat16)
    lengths = mx.array([length] * max(b, 4), dtype=mx.int32)  # >= 16 bytes: see the module docstring
    counters = mx.zeros((b * 8,), dtype=mx.int32)
    mx.eval(q, k, v, lengths, counters)
    scale = 128**-0.5
    launches: dict[str, Callable[[], mx.array]] = {
        "two launches": lambda: decode_attention_cuda(q, k, v, scale, lengths),
        "one launch": lambda: decode_attention_cuda(q, k, v, scale, lengths, counters=counters),
        "mx.fast": lambda: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale),
    }
    for round_ in range(ROUNDS):
        for name, launch in launches.items():
            mark(f"{spec}|{name}|{round_}")
            mx.eval(launch())


def summarize(path: str) -> None:
    last: dict[str, dict[str, list[tuple[str, float]]]] = {}
    for label, kernels in segments(path):
        parts = label.split("|")
        if len(parts) == 3 and parts[2] == str(ROUNDS - 1):
            last.setdefault(parts[0], {})[parts[1]] = [(n[:48], t) for n, t in kernels]
    print("| B x L | variant | kernel µs | mx.fast ÷ this | K/V TB/s | kernels |")
    print("|---|---|---:|---:|---:|---|")
    for spec, by_variant in last.items():
        b, length = (int(x) for x in spec.split("x"))
        terabytes = 2 * b * 8 * length * 128 * 2 / 1e6  # MB of K and V; MB / µs = TB/s
        fast = sum(t for _, t in by_variant.get("mx.fast", []))
        for variant in VARIANTS:
            kernels = by_variant.get(variant, [])
            total = sum(t for _, t in kernels)
            if not total:
                continue
            parts = " + ".join(f"{n} {t:.2f}" for n, t in kernels)
            ratio, rate = fast / total, terabytes / total
            print(f"| {spec} | {variant} | {total:.1f} | {ratio:.2f}× | {rate:.2f} | {parts} |")


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in ("run", "summarize"):
        sys.exit(__doc__)
    if sys.argv[1] == "run":
        run(sys.argv[2:])
    else:
        summarize(sys.argv[2])


if __name__ == "__main__":
    main()
