"""Input checks shared by the fused ops: fail before launch with errors that say what to do."""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
from mlx_core.kernels.backend import FLOAT_DTYPES


def require_array(name: str, value: object) -> mx.array:
    """``value`` as an ``mx.array``, or TypeError naming the argument."""
    if not isinstance(value, mx.array):
        raise TypeError(f"{name} must be an mx.array, got {type(value).__name__}.")
    return value


def require_float(name: str, value: mx.array) -> None:
    """TypeError unless ``value`` is float32, float16 or bfloat16."""
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} has dtype {value.dtype}; fused kernels support float32, float16 and bfloat16 "
            f"(cast with {name}.astype(mx.float32))."
        )


def require_eps(eps: object) -> float:
    """``eps`` as a finite, non-negative float, or ValueError/TypeError."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a Python float, got {type(eps).__name__}.")
    value = float(eps)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"eps must be finite and >= 0, got {eps!r}.")
    return value


def optional_counters(counters: Any, minimum: int, requirement: str) -> mx.array | None:
    """A kernel's caller-owned counter buffer: ``None``, or a 1-D int32 array of at least ``minimum`` entries
    (ValueError naming ``requirement``, e.g. ``"a zeroed int32 [N] array with N >= 8"``, otherwise)."""
    if counters is None:
        return None
    counters = require_array("counters", counters)
    if counters.dtype != mx.int32 or counters.ndim != 1 or counters.size < minimum:
        raise ValueError(f"counters must be {requirement}, got {tuple(counters.shape)} {counters.dtype}.")
    return counters
