"""Vocoder / TTS mel preset (HiFi-GAN, VITS, BigVGAN, GPT-SoVITS family).

Recipe: reflect-pad (n_fft - hop) / 2 on each side, STFT with center=False and a periodic Hann window of
``win_length``, magnitude sqrt(|X|² + 1e-9), Slaney filterbank, ln(max(x, 1e-5)).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_core.audio.mel import check_choice, mel_spectrogram
from mlx_core.audio.samples import as_float_audio
from mlx_core.audio.stft import pad_signal


def vocoder_mel_spectrogram(
    audio: Any,
    sample_rate: int = 24000,
    n_fft: int = 1024,
    hop_length: int = 256,
    win_length: int | None = None,
    n_mels: int = 100,
    fmin: float = 0.0,
    fmax: float | None = None,
    magnitude_eps: float = 1e-9,
    log_floor: float = 1e-5,
    layout: str = "mels_first",
    method: str = "banded",
) -> mx.array:
    """Vocoder log-mel of ``audio`` [T] or [B, T] -> [..., n_mels, frames] (natural log).

    frames = 1 + (T + 2 * ((n_fft - hop) // 2) - n_fft) // hop, i.e. T // hop when hop divides T.
    """
    check_choice("layout", layout, ("mels_first", "frames_first"))
    if not isinstance(hop_length, int) or not 0 < hop_length <= n_fft:
        raise ValueError(f"hop_length must be an int in [1, n_fft={n_fft}]; got {hop_length!r}")
    x = as_float_audio(audio)
    pad = (n_fft - hop_length) // 2
    x = pad_signal(x, pad, pad, "reflect")
    return mel_spectrogram(
        x,
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        n_mels=n_mels,
        fmin=fmin,
        fmax=fmax,
        center=False,
        power=1.0,
        magnitude_eps=magnitude_eps,
        log="ln",
        log_floor=log_floor,
        layout=layout,
        method=method,
    )
