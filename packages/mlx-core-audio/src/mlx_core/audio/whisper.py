"""OpenAI Whisper's log-mel features, exactly (``whisper/audio.py``; HF ``WhisperFeatureExtractor``).

Recipe: 16 kHz, n_fft 400, hop 160, periodic Hann, reflect-centred STFT, |X|², drop the last frame,
Slaney filterbank (fmax 8 kHz), log10(max(x, 1e-10)), floor at max - 8, then (x + 4) / 4.
"""

from __future__ import annotations

import os
from typing import Any

import mlx.core as mx
from mlx_core.audio.gpu import gpu_backend
from mlx_core.audio.mel import check_choice, mel_on_gpu, mel_spectrogram, raise_if_non_finite

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_LENGTH = 30
N_SAMPLES = CHUNK_LENGTH * SAMPLE_RATE  # 480000 samples in a 30-second chunk
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 frames in a mel spectrogram input

_NORMALIZE = ("global", "per_example", None)


def log_mel_spectrogram(
    audio: Any,
    n_mels: int = 80,
    padding: int = 0,
    layout: str = "mels_first",
    normalize: str | None = "global",
    method: str = "banded",
) -> mx.array:
    """Whisper log-mel of 16 kHz ``audio`` [T] or [B, T] (or a file path) -> [..., n_mels, T // 160].

    ``padding`` appends that many zero samples first (Whisper pads 30 s this way). ``normalize="global"``
    takes the max over the whole tensor (OpenAI, also over a batch); ``"per_example"`` per clip (HF);
    ``None`` returns the raw clamped log10 mel. ``layout="frames_first"`` gives [..., frames, n_mels].
    """
    check_choice("n_mels", n_mels, (80, 128))
    check_choice("normalize", normalize, _NORMALIZE)
    check_choice("layout", layout, ("mels_first", "frames_first"))
    if isinstance(audio, (str, os.PathLike)):
        from mlx_core.audio.io import load_audio

        audio = load_audio(audio, sample_rate=SAMPLE_RATE)
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int (samples); got {padding!r}")
    if padding:
        from mlx_core.audio.samples import as_float_audio

        audio = as_float_audio(audio)
        audio = mx.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, padding)])
    backend = gpu_backend() if method == "banded" else None
    if backend is not None:  # three launches + one fused normalise; one device round trip in all
        key = (float(SAMPLE_RATE), N_FFT, int(n_mels), 0.0, None, "slaney", "slaney")
        mel, deferred_check = mel_on_gpu(
            audio, key, HOP_LENGTH, N_FFT, "hann", True, "reflect", 2.0, 0.0, "log10", 1e-10, True,
            "mels_first", backend,
        )  # fmt: skip
        if normalize is not None:
            mel = _normalize_global(mel) if normalize == "global" else _normalize_per_example(mel)
        if deferred_check:
            raise_if_non_finite(mx.sum(mel * 0.0))
        return mx.swapaxes(mel, -1, -2) if layout == "frames_first" else mel
    mel = mel_spectrogram(
        audio,
        sample_rate=SAMPLE_RATE,
        n_fft=N_FFT,
        hop_length=HOP_LENGTH,
        n_mels=n_mels,
        log="log10",
        log_floor=1e-10,
        drop_last=True,
        method=method,
    )
    if normalize is not None:
        mel = _normalize_global(mel) if normalize == "global" else _normalize_per_example(mel)
    return mx.swapaxes(mel, -1, -2) if layout == "frames_first" else mel


@mx.compile
def _normalize_global(mel: mx.array) -> mx.array:
    """Whisper's floor at (max over everything) - 8, then (x + 4) / 4; compiled into one fused pass."""
    return (mx.maximum(mel, mel.max() - 8.0) + 4.0) / 4.0


@mx.compile
def _normalize_per_example(mel: mx.array) -> mx.array:
    """HF's variant: the max is taken per clip (last two axes)."""
    return (mx.maximum(mel, mel.max(axis=(-2, -1), keepdims=True) - 8.0) + 4.0) / 4.0
