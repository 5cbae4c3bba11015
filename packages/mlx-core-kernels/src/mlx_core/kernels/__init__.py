"""Fused kernels (SwiGLU, LayerNorm-modulate, decode attention) for CUDA, Metal and CPU."""

__all__: list[str] = []
