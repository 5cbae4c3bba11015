"""Where the one-launch MLP (`fused_mlp`) spends its time, phase by phase (CUDA only).

`fused_mlp` with counters is one launch: gate/up blocks (RMSNorm, gate/up rows, SwiGLU into ``h``), then
down blocks that issue their first weight loads, wait until every gate/up block is done and finish
``x + W_down . h``. This script builds the kernel with ``%globaltimer`` stamps per block
(`kernel_timeline`) and prints, for one shape, the median over launches of when each step happens, in µs
from the first block's entry. Launches cycle over enough distinct weight sets (> 256 MB) that every launch
reads its weights from HBM, as a decode step does.

    python benchmarks/mlp_timeline.py [HIDDEN INTERMEDIATE BITS]   # default: 2048 8192 0 (Llama-3.2-1B bf16)

Fifteenth session (call 121, H100, an earlier version that reused one weight set; 101 MB, so mostly HBM):
gate/up blocks done 12.8 (first) / 16.8 (median) / 26.5 (last), down blocks see gate/up done 27.2-28.3,
down done 36.5 (median) / 38.1 (last) µs: gate/up runs in two waves, and the down phase starts only after a
launch-wide barrier.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlx.core as mx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from kernel_timeline import STAMPS, WRITE_STAMPS, apply_edits, entry, set_kind, stamp, stamped_wait, stamping

MLP_KERNEL = "mlx_core_mlp"
KIND_GATE_UP, KIND_DOWN = 1, 2
CYCLE_BYTES = 256 << 20


def instrumented(source: str) -> str:
    """``mlp.cu`` with stamps: 1 ticket taken; gate/up blocks 2 matvec done, 3 counted as done; down blocks
    2 wait begins, 3 wait ends, 4 matvec done; 6 exit (`kernel_timeline`)."""
    edits = [
        ("constexpr int GU_BLOCKS", entry(KIND_DOWN) + "constexpr int GU_BLOCKS"),
        ("const int blk = mck_block_ticket(ctr);\n", "const int blk = mck_block_ticket(ctr);\n" + stamp(1)),
        ("      h, [] {});\n", "      h, [] {});\n" + stamp(2)),
        (
            "  mck_block_signal(ctr + 1);  // the block's rows of h are visible before it counts as done\n"
            "  return;",
            "  mck_block_signal(ctr + 1);\n" + stamp(3) + set_kind(KIND_GATE_UP) + WRITE_STAMPS + "  return;",
        ),
        stamped_wait("wait_for_h", "mck_block_wait_for(ctr + 1, GU_BLOCKS)"),
        ("    x, params, y, wait_for_h);\n", "    x, params, y, wait_for_h);\n__syncthreads();\n" + stamp(4)),
    ]
    return apply_edits(source, edits, "mlp.cu").rstrip() + "\n" + WRITE_STAMPS


def steps(times: np.ndarray) -> dict[str, float]:
    """One launch's stamps ([blocks, 8]) as the step table's values, µs from the first block's entry."""
    kind = times[:, 7]
    t = (times[:, :7].astype(np.float64) - times[:, 0].min()) / 1e3
    gate_up, down = t[kind == KIND_GATE_UP], t[kind == KIND_DOWN]
    return {
        "gate/up blocks": float(len(gate_up)),
        "down blocks": float(len(down)),
        "gate/up: ticket taken (median)": float(np.median(gate_up[:, 1])),
        "gate/up: last ticket taken": float(gate_up[:, 1].max()),
        "gate/up: first block done": float(gate_up[:, 3].min()),
        "gate/up: median block done": float(np.median(gate_up[:, 3])),
        "gate/up: last block done": float(gate_up[:, 3].max()),
        "down: first starts waiting": float(down[:, 2].min()),
        "down: first sees gate/up done": float(down[:, 3].min()),
        "down: last sees gate/up done": float(down[:, 3].max()),
        "down: median matvec done": float(np.median(down[:, 4])),
        "launch done": float(t[:, 6].max()),
    }


def main() -> None:
    if not mx.cuda.is_available():
        raise SystemExit("needs MLX's CUDA backend")
    collected: list[mx.array] = []
    # before the kernels are first built
    mx.fast.cuda_kernel = stamping(mx.fast.cuda_kernel, MLP_KERNEL, instrumented, collected)
    from mlx_core.kernels import MatvecWeights, fused_mlp

    hidden, intermediate, bits = (int(a) for a in sys.argv[1:4]) if len(sys.argv) > 3 else (2048, 8192, 0)
    rng = np.random.default_rng(0)

    def bf16(*shape: int, scale: float = 1.0) -> mx.array:
        return mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(mx.bfloat16)

    def projection(out: int, inp: int) -> MatvecWeights:
        w = bf16(out, inp, scale=inp**-0.5)
        if not bits:
            return MatvecWeights(w)
        return MatvecWeights(*mx.quantize(w, group_size=64, bits=bits), bits, 64)

    def nbytes(w: MatvecWeights) -> int:
        return sum(a.nbytes for a in (w.weight, w.scales, w.biases) if a is not None)

    sets = []
    while not sets or len(sets) * sum(nbytes(w) for w in sets[0]) < CYCLE_BYTES:
        sets.append((projection(2 * intermediate, hidden), projection(hidden, intermediate)))
        mx.eval([w.weight for pair in sets[-1:] for w in pair])
    norm, x = bf16(hidden), bf16(1, 1, hidden)
    counters = mx.zeros((4,), dtype=mx.int32)
    mx.eval(norm, x, counters)
    for i in range(4 * len(sets)):
        gate_up, down = sets[i % len(sets)]
        y = fused_mlp(x, gate_up, down, norm_weight=norm, eps=1e-6, counters=counters)
        mx.eval(y, collected[-1])
    table: dict[str, list[float]] = {}
    for times in collected[len(sets) :]:  # the first round compiles
        for step, value in steps(np.array(times).reshape(-1, STAMPS)).items():
            table.setdefault(step, []).append(value)
    launches = len(collected) - len(sets)
    print(
        f"MLP {hidden} x {intermediate}, bits {bits or 'dense'}, {len(sets)} weight sets cycled: median of"
        f" {launches} launches, µs from the first block's entry"
    )
    for step, values in table.items():
        print(f"  {step:34s} {float(np.median(values)):7.2f}")


if __name__ == "__main__":
    main()
