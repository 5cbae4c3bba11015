"""Reference model family built only from mlx-core parts."""

__all__: list[str] = []
