"""Where the fused decode's attention launch spends its time, step by step (CUDA only).

`decode_attention_qkv` with a folded o_proj is one launch per layer: attention blocks (one per kv head and
key split) prepare the token, run the key loop, write their partials and elect the last block per head,
which merges; o_proj blocks wait for every head's merge and apply o_proj. This script wraps
``mx.fast.cuda_kernel`` so that the partial kernel is built with ``%globaltimer`` stamps (thread 0 of each
block; an extra int64 output, 8 per block) and prints, for a Llama-3.2-1B bf16 layer, the median over
launches of when each step is done, in µs from the first block's entry. Each launch gets its own layer's
cache and o_proj weights (16 layers, cycled), so the weights come from HBM as in a decode step.

    python benchmarks/attention_timeline.py [POSITION ...]        # default: 640 3000; capacity 4096

Fourteenth session (calls 108 and 112, H100, position 640 of 1600): token prepared 3.6-3.8, key loops done
5.4 (last 6.1), partials 6.7, merges done 10.2, o_proj done 12.8-13.1, launch done 13.3 µs. The timer
ticks in 0.26 µs steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from kernel_timeline import STAMPS, WRITE_STAMPS, apply_edits, entry, set_kind, stamp, stamped_wait, stamping

PARTIAL_KERNEL = "mlx_core_decode_attention_partial"
KIND_ATTENTION, KIND_MERGE, KIND_OUTPUT = 2, 1, 3


def instrumented(source: str) -> str:
    """``decode_attention_partial.cu`` with the stamps (and the final write to ``times``) inserted; fails
    loudly if the source no longer has the places it anchors on."""
    edits = [
        ("constexpr int DD = EPL * 32;", entry(KIND_ATTENTION) + "constexpr int DD = EPL * 32;"),
        ("  blk = mck_block_ticket(launch_ctr);\n", "  blk = mck_block_ticket(launch_ctr);\n" + stamp(1)),
        stamped_wait("wait_for_heads", "mck_block_wait_for(launch_ctr + 1, B * Hkv)"),
        (
            "    mck_block_finish(launch_ctr, O_BLOCKS);\n    return;",
            "    "
            + stamp(4)
            + "    mck_block_finish(launch_ctr, O_BLOCKS);\n"
            + set_kind(KIND_OUTPUT)
            + WRITE_STAMPS
            + "    return;",
        ),
        ("// The query rows hold T values here", stamp(2) + "// The query rows hold T values here"),
        ("// Merge the NS slots of this block", stamp(3) + "// Merge the NS slots of this block"),
        (
            "// FOLD: the merge of pass 2 in the same launch.",
            stamp(4) + "// FOLD: the merge of pass 2 in the same launch.",
        ),
        (
            "  __syncthreads();\n  if (last_block) {\n",
            "  __syncthreads();\n  if (threadIdx.x == 0) { mck_stamp_[5] = mck_timer_();"
            f" if (last_block) {{ mck_kind_ = {KIND_MERGE}; }} }}\n  if (last_block) {{\n",
        ),
    ]
    return apply_edits(source, edits, "decode_attention_partial.cu").rstrip() + "\n" + WRITE_STAMPS


def steps(times: np.ndarray) -> dict[str, tuple[float, ...]]:
    """One launch's stamps ([blocks, 8]) as the step table's values, µs from the first block's entry."""
    kind = times[:, 7]
    t = (times[:, :7].astype(np.float64) - times[:, 0].min()) / 1e3
    attention = t[(kind == KIND_ATTENTION) | (kind == KIND_MERGE)]
    merge, output = t[kind == KIND_MERGE], t[kind == KIND_OUTPUT]

    def median_last(column: np.ndarray) -> tuple[float, float]:
        return float(np.median(column)), float(column.max())

    return {
        "blocks: attention / merging / o_proj": (
            float(len(attention)),
            float(len(merge)),
            float(len(output)),
        ),
        "attention: ticket taken (median)": (float(np.median(attention[:, 1])),),
        "attention: token prepared (median)": (float(np.median(attention[:, 2])),),
        "attention: key loop done (median / last)": median_last(attention[:, 3]),
        "attention: partials written (median / last)": median_last(attention[:, 4]),
        "attention: election done (median / last)": median_last(attention[:, 5]),
        "merges done (first / last)": (float(merge[:, 6].min()), float(merge[:, 6].max())),
        "o_proj: starts waiting (median)": (float(np.median(output[:, 2])),),
        "o_proj: sees every head merged (first / last)": (
            float(output[:, 3].min()),
            float(output[:, 3].max()),
        ),
        "o_proj: done (median / last)": median_last(output[:, 4]),
        "launch done": (float(t[:, 6].max()),),
    }


def main() -> None:
    if not mx.cuda.is_available():
        raise SystemExit("needs MLX's CUDA backend")
    collected: list[mx.array] = []
    # before the kernels are first built
    mx.fast.cuda_kernel = stamping(mx.fast.cuda_kernel, PARTIAL_KERNEL, instrumented, collected)
    from mlx_core.kernels import MatvecWeights
    from mlx_core.kernels.decode_attention import OutputProjection, decode_attention_qkv

    positions = [int(a) for a in sys.argv[1:]] or [640, 3000]
    if not all(0 <= p < 4096 for p in positions):
        raise SystemExit(f"positions must lie in [0, 4096), the cache's capacity; got {positions}")
    dtype, heads, kv_heads, head_dim, hidden, capacity, layers = mx.bfloat16, 32, 8, 64, 2048, 4096, 16
    caches = [
        tuple(mx.random.normal((1, kv_heads, capacity, head_dim)).astype(dtype) for _ in range(2))
        for _ in range(layers)
    ]
    o_weights = [(mx.random.normal((hidden, heads * head_dim)) * 0.02).astype(dtype) for _ in range(layers)]
    inv_freq = 1.0 / (500000 ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim))
    counters = mx.zeros((kv_heads + 3,), dtype=mx.int32)  # left zero by every launch
    mx.eval(caches, o_weights, inv_freq, counters)
    for position in positions:
        # the fused decode's position: a 16-byte buffer's first element (see mlx_core.kernels._scalars)
        pos = mx.array([position, 0, 0, 0], dtype=mx.int32)[:1].reshape(())
        collected.clear()
        for i in range(4 * layers):
            keys, values = caches[i % layers]
            qkv = mx.random.normal((1, 1, (heads + 2 * kv_heads) * head_dim)).astype(dtype)
            x = mx.random.normal((1, 1, hidden)).astype(dtype)
            out = decode_attention_qkv(
                qkv,
                keys,
                values,
                pos,
                head_dim**-0.5,
                n_heads=heads,
                rope_inv_freq=inv_freq,
                counters=counters,
                output_projection=OutputProjection(MatvecWeights(o_weights[i % layers]), residual=x),
            )
            mx.eval(out[0], collected[-1])
        table: dict[str, list[tuple[float, ...]]] = {}
        for times in collected[layers:]:  # the first round compiles
            for step, done in steps(np.array(times).reshape(-1, STAMPS)).items():
                table.setdefault(step, []).append(done)
        launches = len(collected) - layers
        print(
            f"Llama-3.2-1B bf16 layer, position {position} of {capacity}: median of {launches} launches,"
            " µs from the first block's entry"
        )
        for step, rows in table.items():
            print(f"  {step:46s} " + " / ".join(f"{v:6.2f}" for v in np.median(np.array(rows), axis=0)))


if __name__ == "__main__":
    main()
