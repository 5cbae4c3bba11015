"""Fused kernels (SwiGLU, LayerNorm-modulate, decode attention) for CUDA, Metal and CPU."""

from mlx_core.kernels.backend import ENV_VAR, Backend, backend, clear_backend_cache
from mlx_core.kernels.decode_attention import decode_attention, decode_attention_append
from mlx_core.kernels.modulate import fused_modulate
from mlx_core.kernels.swiglu import fused_swiglu

__all__ = [
    "ENV_VAR",
    "Backend",
    "backend",
    "clear_backend_cache",
    "decode_attention",
    "decode_attention_append",
    "fused_modulate",
    "fused_swiglu",
]
