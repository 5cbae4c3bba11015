"""Hugging Face checkpoints to MLX: streamed, quantized, loadable by mlx-lm."""

__all__: list[str] = []
