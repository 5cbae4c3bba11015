"""KV caches for autoregressive decoding with MLX, drop-in for mlx-lm models."""

__all__: list[str] = []
