"""Whisper-exact log-mel, vocoder mel, STFT, audio loading and resampling in MLX."""

from mlx_core.audio.errors import (
    AudioDecodeError,
    AudioError,
    InvalidAudioError,
    UnsupportedAudioFormatError,
)
from mlx_core.audio.filters import BandedFilterbank, banded_filterbank, hz_to_mel, mel_filters, mel_to_hz
from mlx_core.audio.io import load_audio
from mlx_core.audio.mel import apply_filterbank, mel_spectrogram, power_spectrum
from mlx_core.audio.preprocess import pad_or_trim, peak_normalize
from mlx_core.audio.resample import resample
from mlx_core.audio.samples import as_float_audio
from mlx_core.audio.stft import frame_signal, istft, pad_signal, stft
from mlx_core.audio.streaming import StreamingLogMel
from mlx_core.audio.vocoder import vocoder_mel_spectrogram
from mlx_core.audio.whisper import HOP_LENGTH, N_FFT, N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_spectrogram
from mlx_core.audio.windows import hamming, hann

__all__ = [
    "HOP_LENGTH",
    "N_FFT",
    "N_FRAMES",
    "N_SAMPLES",
    "SAMPLE_RATE",
    "AudioDecodeError",
    "AudioError",
    "BandedFilterbank",
    "InvalidAudioError",
    "StreamingLogMel",
    "UnsupportedAudioFormatError",
    "apply_filterbank",
    "as_float_audio",
    "banded_filterbank",
    "frame_signal",
    "hamming",
    "hann",
    "hz_to_mel",
    "istft",
    "load_audio",
    "log_mel_spectrogram",
    "mel_filters",
    "mel_spectrogram",
    "mel_to_hz",
    "pad_or_trim",
    "pad_signal",
    "peak_normalize",
    "power_spectrum",
    "resample",
    "stft",
    "vocoder_mel_spectrogram",
]
