"""Small signal helpers: Whisper's pad_or_trim and peak normalisation."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
from mlx_core.audio.samples import as_float_audio


def pad_or_trim(audio: Any, length: int = 480000, axis: int = -1) -> Any:
    """Zero-pad or trim ``audio`` along ``axis`` to ``length`` samples (Whisper's 30 s = 480000).

    Works on ``mx.array`` and numpy arrays and returns the same kind.
    """
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length must be a non-negative int; got {length!r}")
    is_mx = isinstance(audio, mx.array)
    x = audio if is_mx else np.asarray(audio)
    if x.ndim == 0:
        raise ValueError("pad_or_trim needs an array with at least one axis")
    axis = axis % x.ndim
    n = x.shape[axis]
    if n > length:
        index = [slice(None)] * x.ndim
        index[axis] = slice(0, length)
        return x[tuple(index)]
    if n < length:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, length - n)
        return mx.pad(audio, widths) if is_mx else np.pad(x, widths)
    return x


def peak_normalize(audio: Any, peak: float = 1.0, axis: int = -1) -> mx.array:
    """Scale each signal along ``axis`` so that max |x| == ``peak``; silent signals are left as zeros."""
    if not peak > 0:
        raise ValueError(f"peak must be positive; got {peak}")
    x = as_float_audio(audio)
    top = mx.max(mx.abs(x), axis=axis, keepdims=True)
    return mx.where(top > 0, x * (peak / mx.maximum(top, 1e-30)), x)
