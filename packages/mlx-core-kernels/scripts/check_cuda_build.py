"""Compile the CUDA kernels this package launches, without a GPU: a development check before device time.

MLX builds each ``mx.fast.cuda_kernel`` launch into one CUDA source (its default header, our header, a
generated signature, template constants, our body) and compiles it with NVRTC on first use. This script
stands in for ``mx.fast.cuda_kernel``, runs our launchers on the CPU for the shapes of Llama-3.2-1B and
Qwen3-0.6B decode (dense and 4-bit; every decode-attention variant), writes the source MLX's CUDA backend
would build (following ``mlx/backend/cuda/custom_kernel.cpp`` of MLX 0.32: inputs with ``_shape`` /
``_strides`` / ``_ndim`` parameters where the body names them and the input has a dimension, then the
outputs) and compiles each with ``nvcc``, printing registers per thread. A stand-in header supplies MLX's
``Shape`` / ``Strides`` types. Errors here are errors on the GPU; passing here does not prove the
kernels right (run the ``gpu`` tests on the device for that).

    python packages/mlx-core-kernels/scripts/check_cuda_build.py [--arch sm_90] [--keep DIR]
"""

from __future__ import annotations

import argparse
import importlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

CUDA_TYPES = {
    mx.float32: "float",
    mx.float16: "__half",
    mx.bfloat16: "__nv_bfloat16",
    mx.int32: "int32_t",
    mx.uint32: "uint32_t",
    mx.int64: "int64_t",
    mx.uint8: "uint8_t",
    mx.bool_: "bool",
}
MLX_DEFAULT_HEADER = (
    '\n#include "mlx/backend/cuda/device/utils.cuh"\n\n#include <cooperative_groups.h>\n\n'
    "#define inf cuda::std::numeric_limits<float>::infinity()\n\n"
)
STAND_IN_UTILS = """#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>
#include <cuda/std/array>
#include <cuda/std/limits>
#define MAX_NDIM 10
using Shape = cuda::std::array<int32_t, MAX_NDIM>;
using Strides = cuda::std::array<int64_t, MAX_NDIM>;
"""


def template_hash_part(value: Any) -> str:
    """How MLX names a template argument in the kernel's name: ``t`` / ``f``, the int, the dtype's name."""
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value) if isinstance(value, int) else str(value).split(".")[-1]


class SourceRecorder:
    """Stands in for ``mx.fast.cuda_kernel``: every launch records the source MLX would build."""

    def __init__(self) -> None:
        self.sources: dict[str, str] = {}

    def __call__(
        self,
        name: str,
        input_names: list[str],
        output_names: list[str],
        source: str,
        header: str = "",
        ensure_row_contiguous: bool = True,
        atomic_outputs: bool = False,
    ) -> Any:
        flags = [tuple(f"{n}_{k}" in source for k in ("shape", "strides", "ndim")) for n in input_names]

        def launch(
            *, inputs: list[mx.array], output_shapes: Any, output_dtypes: Any, template: Any = (), **_: Any
        ) -> list[mx.array]:
            if len(inputs) != len(input_names):
                raise ValueError(f"{name}: {len(inputs)} inputs for {len(input_names)} names")
            suffix = "".join(f"_{template_hash_part(v)}" for _, v in template)
            params = []
            for n, a, (shape, strides, ndim) in zip(input_names, inputs, flags, strict=True):
                params.append(f"    const {CUDA_TYPES[a.dtype]}* {n}")
                if a.ndim > 0:
                    params += [f"    const __grid_constant__ Shape {n}_shape"] if shape else []
                    params += [f"    const __grid_constant__ Strides {n}_strides"] if strides else []
                    params += [f"    const __grid_constant__ int {n}_ndim"] if ndim else []
            params += [f"    {CUDA_TYPES[d]}* {n}" for n, d in zip(output_names, output_dtypes, strict=True)]
            constants = []
            for n, v in template:
                if isinstance(v, bool):
                    constants.append(f"  constexpr bool {n} = {'true' if v else 'false'};")
                elif isinstance(v, int):
                    constants.append(f"  constexpr int {n} = {v};")
                else:
                    constants.append(f"  using {n} = {CUDA_TYPES[v]};")
            kernel = f"custom_kernel_{name}{re.sub(r'[^A-Za-z0-9_]', '_', suffix)}"
            self.sources[kernel] = (
                MLX_DEFAULT_HEADER
                + header
                + "namespace mlx::core::cu {\n\nnamespace cg = cooperative_groups;\n\n"
                + f"__global__ void {kernel}(\n"
                + ",\n".join(params)
                + ") {\n"
                + "\n".join(constants)
                + "\n\n"
                + source
                + "\n}\n\n} // namespace mlx::core::cu\n"
            )
            return [mx.zeros(s, dtype=d) for s, d in zip(output_shapes, output_dtypes, strict=True)]

        return launch


def launch_decode_kernels() -> None:
    """Our public entry points at decode shapes, as the fused decode path calls them, on the CUDA branch
    (the kernels are only recorded; nothing runs)."""
    from mlx_core.kernels import (
        MatvecWeights,
        OutputProjection,
        decode_attention,
        decode_attention_append,
        decode_attention_qkv,
        fused_matvec,
        fused_mlp,
        greedy_tokens,
    )

    rng = np.random.default_rng(0)

    def bf16(*shape: int) -> mx.array:
        return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(mx.bfloat16)

    def q4(out: int, inp: int) -> MatvecWeights:
        return MatvecWeights(*mx.quantize(bf16(out, inp), group_size=64, bits=4), 4, 64)

    def zeros(n: int) -> mx.array:
        return mx.array(np.zeros(n, dtype=np.int32))

    x = bf16(1, 1, 2048)
    fused_matvec(x, bf16(3072, 2048), norm_weight=bf16(2048), eps=1e-5)  # dense q/k/v
    w = q4(2048, 2048)
    fused_matvec(x, w.weight, w.scales, w.biases, bits=4, residual=x)  # 4-bit o_proj
    for gate_up, down in ((MatvecWeights(bf16(16384, 2048)), MatvecWeights(bf16(2048, 8192))),
                          (q4(16384, 2048), q4(2048, 8192))):  # fmt: skip
        fused_mlp(x, gate_up, down, norm_weight=bf16(2048), eps=1e-5, counters=zeros(4))
    q, k, v = bf16(1, 32, 1, 128), bf16(1, 8, 4096, 128), bf16(1, 8, 4096, 128)
    decode_attention(q, k, v, 0.1, mx.array([4000] * 4, dtype=mx.int32)[:1])
    decode_attention(q, k, v, 0.1, 4000, counters=zeros(8))
    decode_attention_append(q, k, v, bf16(1, 8, 1, 128), bf16(1, 8, 1, 128), 3999, 0.1, counters=zeros(8))
    position = mx.array(500, dtype=mx.int32)  # a cache's scalar position
    inv_freq = mx.array(np.linspace(1e-3, 1.0, 32, dtype=np.float32))
    for o_proj in (MatvecWeights(bf16(2048, 2048)), q4(2048, 2048)):  # Llama-3.2-1B
        decode_attention_qkv(bf16(1, 1, 48 * 64), bf16(1, 8, 768, 64), bf16(1, 8, 768, 64), position, 0.125,
                             n_heads=32, rope_inv_freq=inv_freq, counters=zeros(32),
                             output_projection=OutputProjection(o_proj, residual=x))  # fmt: skip
    inv_freq = mx.array(np.linspace(1e-3, 1.0, 64, dtype=np.float32))
    decode_attention_qkv(
        bf16(1, 1, 32 * 128),
        bf16(1, 8, 768, 128),
        bf16(1, 8, 768, 128),
        position,
        0.1,
        n_heads=16,
        q_norm=bf16(128),
        k_norm=bf16(128),
        rope_inv_freq=inv_freq,
        counters=zeros(32),
        output_projection=OutputProjection(MatvecWeights(bf16(1024, 2048)), residual=bf16(1, 1, 1024)),
    )  # Qwen3-0.6B; fmt: skip
    greedy_tokens(bf16(1, 151936))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", help="nvcc -arch (the lent GPUs are sm_90)")
    parser.add_argument("--keep", type=Path, help="write the sources and cubins here instead of a temp dir")
    args = parser.parse_args()
    recorder = SourceRecorder()
    mx.fast.cuda_kernel = recorder  # type: ignore[assignment]
    backend = importlib.import_module("mlx_core.kernels.backend")
    backend._available = lambda name, device: name == "cuda"  # take the CUDA branches on this machine
    backend.clear_backend_cache()
    launch_decode_kernels()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        include = out / "include" / "mlx" / "backend" / "cuda" / "device"
        include.mkdir(parents=True, exist_ok=True)
        (include / "utils.cuh").write_text(STAND_IN_UTILS)
        failed = 0
        for kernel, text in recorder.sources.items():
            path = out / f"{kernel[:100]}.cu"
            path.write_text(text)
            run = subprocess.run(
                ["nvcc", f"-arch={args.arch}", "-std=c++17", f"-I{out / 'include'}", "-cubin",
                 "--resource-usage", str(path), "-o", str(path.with_suffix(".cubin"))],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            registers = ", ".join(re.findall(r"Used (\d+) registers", run.stderr)) or "-"
            print(f"{'ok ' if run.returncode == 0 else 'ERR'} {kernel[:96]:96s} registers {registers}")
            if run.returncode != 0:
                failed += 1
                print("\n".join(line for line in run.stderr.splitlines() if "error" in line)[:2000])
    print(f"{len(recorder.sources) - failed} of {len(recorder.sources)} kernels compile")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
