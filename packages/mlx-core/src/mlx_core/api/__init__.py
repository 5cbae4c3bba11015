"""Facade of mlx-core: every public name of the seven mlx-core packages in one namespace."""

__all__: list[str] = []
