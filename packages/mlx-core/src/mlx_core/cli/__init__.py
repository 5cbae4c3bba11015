"""The ``mlx-core`` command-line interface."""
