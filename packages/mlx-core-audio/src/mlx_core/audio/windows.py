"""Analysis windows. Periodic by default, like torch.hann_window and scipy's ``sym=False``.

``mx.hanning`` is the symmetric window; Whisper and every STFT reference use the periodic one, and the
difference costs up to ~0.25 in Whisper's log-mel units.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import mlx.core as mx
import numpy as np


def _check_length(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"window length must be a positive int; got {n!r}")


@lru_cache(maxsize=64)
def _cosine_window_np(n: int, a0: float, periodic: bool) -> np.ndarray:
    if n == 1:
        return np.ones(1, dtype=np.float32)
    denom = n if periodic else n - 1
    k = np.arange(n, dtype=np.float64)
    w = (a0 - (1.0 - a0) * np.cos(2.0 * np.pi * k / denom)).astype(np.float32)
    w.setflags(write=False)
    return w


def hann(n: int, periodic: bool = True) -> mx.array:
    """Hann window [n] (float32). ``periodic=True`` is the DFT-even window STFTs use."""
    _check_length(n)
    return mx.array(_cosine_window_np(int(n), 0.5, bool(periodic)))


def hamming(n: int, periodic: bool = True) -> mx.array:
    """Hamming window [n] (float32), 0.54 - 0.46 cos, periodic by default."""
    _check_length(n)
    return mx.array(_cosine_window_np(int(n), 0.54, bool(periodic)))


_WINDOWS = {"hann": 0.5, "hanning": 0.5, "hamming": 0.54}


def window_array(window: Any, win_length: int, n_fft: int) -> np.ndarray:
    """Resolve ``window`` (name or array) to a float32 numpy array of length ``n_fft``.

    A window shorter than ``n_fft`` is zero-padded on both sides (centred), like librosa/torch.
    """
    _check_length(win_length)
    if win_length > n_fft:
        raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
    if isinstance(window, str):
        if window not in _WINDOWS:
            raise ValueError(f"unknown window {window!r}; use one of {sorted(_WINDOWS)} or pass an array")
        w = _cosine_window_np(int(win_length), _WINDOWS[window], True)
    else:
        w = np.asarray(window, dtype=np.float32)
        if w.ndim != 1 or w.shape[0] != win_length:
            raise ValueError(f"window array must have shape [{win_length}] (win_length); got {w.shape}")
    if win_length < n_fft:
        left = (n_fft - win_length) // 2
        w = np.pad(w, (left, n_fft - win_length - left))
    return np.ascontiguousarray(w, dtype=np.float32)
