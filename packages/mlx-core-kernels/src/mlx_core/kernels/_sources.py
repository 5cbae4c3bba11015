"""Kernel source text (``sources/*.cu``, ``sources/*.metal``) loaded as package data."""

from __future__ import annotations

import functools
from importlib.resources import files


@functools.cache
def kernel_source(filename: str) -> str:
    """Return the text of ``sources/<filename>`` shipped inside this package."""
    return files("mlx_core.kernels").joinpath("sources").joinpath(filename).read_text(encoding="utf-8")
