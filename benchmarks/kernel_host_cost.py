"""Host cost of one ``mx.fast.cuda_kernel`` launch against its number of inputs and outputs (CUDA only).

A compiled chain of 50 dependent one-thread kernels is evaluated twice per round, pipelined as a decode loop
is (``async_eval`` of the next chain before waiting): the kernels do almost no GPU work, so the time per
kernel is the host's (building, encoding, launching). Compare with a chain of elementwise ops (which
``mx.compile`` fuses) and of reshapes. Median of 20 rounds after 5 warm-up ones.

    python benchmarks/kernel_host_cost.py              # on the lent GPU; MLX_USE_CUDA_GRAPHS=0 to compare

Call 92 (H100, CUDA graphs on): 4.0 µs with 1 input and 1 output, 13.2 µs with 15 inputs, 11.4 µs with 5
outputs, 14.8 µs with both: ~0.65 µs per input and ~1.8 µs per output (each output is allocated at every
launch). ``mlx_core.kernels``' decode-attention launch had 15 inputs and 5 outputs (now 9-11 and 3).
This script as committed, call 112 (H100, a different machine): 4.8 µs (1 in, 1 out), 6.5 (15 in), 9.8
(5 out), 20.9 (both); elementwise link 1.3 µs, reshape-multiply-reshape link 5.7 µs. One run each: the
host's state moves these by tens of percent.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx

CHAIN = 50
CASES = [(1, 1, False), (4, 1, False), (8, 1, False), (15, 1, False), (1, 5, False), (15, 5, False),
         (8, 1, True), (15, 5, True)]  # fmt: skip


def chain_kernel(inputs: int, outputs: int, strides: bool) -> Any:
    """A one-thread kernel reading element 0 of every input (and, ``strides``, its strides)."""
    body = "if (threadIdx.x == 0 && blockIdx.x == 0) { float v = x0[0]"
    body += "".join(f" + x{i}[0]" for i in range(1, inputs))
    if strides:
        body += "".join(f" + (float)x{i}_strides[0]" for i in range(inputs))
    body += "; y0[0] = v * 0.5f;" + "".join(f" y{j}[0] = v;" for j in range(1, outputs)) + " }"
    return mx.fast.cuda_kernel(
        name=f"host_cost_{inputs}_{outputs}_{int(strides)}",
        input_names=[f"x{i}" for i in range(inputs)],
        output_names=[f"y{j}" for j in range(outputs)],
        source=body,
    )


def per_op_us(step: Callable[[mx.array], mx.array], x0: mx.array) -> float:
    fn = mx.compile(step)
    y = fn(x0)
    mx.eval(y)
    times = []
    for _ in range(25):
        t0 = time.perf_counter()
        y = fn(y)
        mx.async_eval(y)
        y2 = fn(y)
        mx.async_eval(y2)
        mx.eval(y2)
        times.append((time.perf_counter() - t0) / (2 * CHAIN) * 1e6)
        y = y2
    return statistics.median(times[5:])


def main() -> None:
    x0 = mx.ones((4,), dtype=mx.float32)
    extras = [mx.ones((16,), dtype=mx.float32) for _ in range(16)]
    mx.eval(x0, *extras)
    for inputs, outputs, strides in CASES:
        kernel = chain_kernel(inputs, outputs, strides)

        def step(x: mx.array, kernel: Any = kernel, inputs: int = inputs, outputs: int = outputs) -> mx.array:
            for _ in range(CHAIN):
                x = kernel(
                    inputs=[x, *extras[: inputs - 1]],
                    grid=(32, 1, 1),
                    threadgroup=(32, 1, 1),
                    output_shapes=[(4,)] * outputs,
                    output_dtypes=[mx.float32] * outputs,
                )[0]
            return x

        label = f"cuda_kernel, {inputs} inputs, {outputs} outputs" + (", strides read" if strides else "")
        print(f"{label:45s} {per_op_us(step, x0):6.2f} µs per kernel", flush=True)

    def elementwise(x: mx.array) -> mx.array:
        for _ in range(CHAIN):
            x = x * 0.5 + extras[0][:4]
        return x

    def reshapes(x: mx.array) -> mx.array:
        for _ in range(CHAIN):
            x = (x.reshape(2, 2) * 0.5).reshape(4)
        return x

    print(f"{'elementwise chain (compile fuses it)':45s} {per_op_us(elementwise, x0):6.2f} µs per link")
    print(f"{'reshape, multiply, reshape':45s} {per_op_us(reshapes, x0):6.2f} µs per link")


if __name__ == "__main__":
    main()
