"""Fused kernels (SwiGLU, LayerNorm-modulate, decode attention, decode matvec and MLP, greedy sampling)
for CUDA, Metal and CPU."""

from mlx_core.kernels.backend import ENV_VAR, Backend, backend, clear_backend_cache
from mlx_core.kernels.decode_attention import (
    OutputProjection,
    decode_attention,
    decode_attention_append,
    decode_attention_qkv,
)
from mlx_core.kernels.greedy import greedy_tokens
from mlx_core.kernels.matvec import MatvecWeights, fused_matvec
from mlx_core.kernels.mlp import fused_mlp
from mlx_core.kernels.modulate import fused_modulate
from mlx_core.kernels.swiglu import fused_swiglu

__all__ = [
    "ENV_VAR",
    "Backend",
    "MatvecWeights",
    "OutputProjection",
    "backend",
    "clear_backend_cache",
    "decode_attention",
    "decode_attention_append",
    "decode_attention_qkv",
    "fused_matvec",
    "fused_mlp",
    "fused_modulate",
    "fused_swiglu",
    "greedy_tokens",
]
