"""Short-time Fourier transform and its inverse, in MLX, for [T] or [B, T] signals.

Conventions follow torch.stft / librosa: frames start every ``hop_length`` samples; with ``center=True``
the signal is padded by ``n_fft // 2`` on both sides (reflect or constant) so frame t is centred on
sample ``t * hop_length``; a window shorter than ``n_fft`` is zero-padded to ``n_fft`` (centred).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
from mlx_core.audio.errors import InvalidAudioError
from mlx_core.audio.samples import as_float_audio
from mlx_core.audio.windows import window_array


def pad_signal(x: mx.array, left: int, right: int, mode: str = "reflect") -> mx.array:
    """Pad the last axis of ``x`` [..., T]; ``reflect`` mirrors without repeating the edge sample."""
    if mode not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant'; got {mode!r}")
    if left == 0 and right == 0:
        return x
    if mode == "constant":
        return mx.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, right)])
    t = x.shape[-1]
    if left >= t or right >= t:
        raise InvalidAudioError(
            f"reflect padding by {max(left, right)} samples needs a longer signal; got {t} samples. "
            "Pad the audio first (pad_or_trim) or use pad_mode='constant'"
        )
    parts = []
    if left:
        parts.append(x[..., 1 : left + 1][..., ::-1])
    parts.append(x)
    if right:
        parts.append(x[..., t - right - 1 : t - 1][..., ::-1])
    return mx.concatenate(parts, axis=-1)


def frame_signal(x: mx.array, n_fft: int, hop_length: int, n_frames: int | None = None) -> mx.array:
    """Strided frames [..., n_frames, n_fft] of an already padded [..., T] signal (a view, no copy)."""
    t = x.shape[-1]
    if t < n_fft:
        raise InvalidAudioError(
            f"signal of {t} samples is shorter than n_fft={n_fft}; with center=False the signal must hold at "
            "least one full frame (pad it, lower n_fft, or use center=True)"
        )
    available = 1 + (t - n_fft) // hop_length
    n_frames = available if n_frames is None else n_frames
    if not 0 <= n_frames <= available:
        raise ValueError(f"asked for {n_frames} frames; the signal holds {available}")
    x = mx.contiguous(x)
    batch = x.shape[:-1]
    strides: list[int] = []
    step = t
    for d in reversed(batch):
        strides.insert(0, step)
        step *= d
    return mx.as_strided(x, (*batch, n_frames, n_fft), (*strides, hop_length, 1))


def _resolve(n_fft: int, hop_length: int | None, win_length: int | None) -> tuple[int, int]:
    if not isinstance(n_fft, (int, np.integer)) or n_fft < 2:
        raise ValueError(f"n_fft must be an int >= 2; got {n_fft!r}")
    hop = n_fft // 4 if hop_length is None else hop_length
    if not isinstance(hop, (int, np.integer)) or hop < 1:
        raise ValueError(f"hop_length must be a positive int; got {hop!r}")
    return int(hop), int(n_fft if win_length is None else win_length)


def stft(
    x: Any,
    n_fft: int = 400,
    hop_length: int | None = None,
    win_length: int | None = None,
    window: Any = "hann",
    center: bool = True,
    pad_mode: str = "reflect",
) -> mx.array:
    """Complex STFT [..., frames, n_fft // 2 + 1] of ``x`` [T] or [B, T] (complex64).

    ``window`` is a name ("hann", "hamming"; periodic) or an array of ``win_length`` samples.
    """
    hop, win_length = _resolve(n_fft, hop_length, win_length)
    x = as_float_audio(x)
    w = mx.array(window_array(window, win_length, n_fft))
    if center:
        x = pad_signal(x, n_fft // 2, n_fft // 2, pad_mode)
    frames = frame_signal(x, n_fft, hop)
    return mx.fft.rfft(frames * w, axis=-1)


def istft(
    stft_matrix: mx.array,
    hop_length: int | None = None,
    win_length: int | None = None,
    n_fft: int | None = None,
    window: Any = "hann",
    center: bool = True,
    length: int | None = None,
) -> mx.array:
    """Inverse of :func:`stft` by weighted overlap-add: [..., frames, n_fft // 2 + 1] -> [..., T].

    Divides by the summed squared window (where it is non-negligible), so ``istft(stft(x))`` returns ``x``
    for any window satisfying the NOLA condition. ``length`` trims or zero-pads the result.
    """
    s = mx.array(stft_matrix)
    if s.ndim not in (2, 3):
        raise ValueError(
            f"stft_matrix must be [frames, bins] or [B, frames, bins]; got shape {tuple(s.shape)}"
        )
    n_fft = 2 * (s.shape[-1] - 1) if n_fft is None else n_fft
    if n_fft // 2 + 1 != s.shape[-1]:
        raise ValueError(f"stft_matrix has {s.shape[-1]} bins; n_fft={n_fft} needs {n_fft // 2 + 1}")
    hop, win_length = _resolve(n_fft, hop_length, win_length)
    w_np = window_array(window, win_length, n_fft)
    n_frames = s.shape[-2]
    frames = mx.fft.irfft(s, n=n_fft, axis=-1) * mx.array(w_np)
    out_len = n_fft + hop * (n_frames - 1)
    pos = (np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]).reshape(-1)
    wss = np.zeros(out_len, dtype=np.float64)
    np.add.at(wss, pos, np.tile(w_np.astype(np.float64) ** 2, n_frames))
    batch = frames.shape[:-2]
    flat = frames.reshape(-1, n_frames * n_fft)
    y = mx.zeros((flat.shape[0], out_len), dtype=mx.float32)
    y = y.at[:, mx.array(pos.astype(np.int32))].add(flat)
    tiny = np.finfo(np.float32).tiny
    scale = np.where(wss > tiny, 1.0 / np.maximum(wss, tiny), 1.0).astype(np.float32)
    y = (y * mx.array(scale)).reshape(*batch, out_len)
    if center:
        y = y[..., n_fft // 2 :]
        end = y.shape[-1] - n_fft // 2 if length is None else None
        y = y[..., :end]
    if length is not None:
        if y.shape[-1] >= length:
            y = y[..., :length]
        else:
            y = mx.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, length - y.shape[-1])])
    return y
