"""Vocoder preset equals a float64 HiFi-GAN-style reference."""

import numpy as np
import pytest
from mlx_core.audio import mel_filters, vocoder_mel_spectrogram


def reference_vocoder_mel(x, sr, n_fft, hop, win, n_mels, fmin, fmax) -> np.ndarray:
    """HiFi-GAN mel_spectrogram(center=False) in float64."""
    x = np.asarray(x, dtype=np.float64)
    pad = (n_fft - hop) // 2
    x = np.pad(x, pad, mode="reflect")
    w = np.zeros(n_fft)
    left = (n_fft - win) // 2
    w[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    n = 1 + (len(x) - n_fft) // hop
    frames = np.stack([x[i * hop : i * hop + n_fft] for i in range(n)])
    mag = np.sqrt(np.abs(np.fft.rfft(frames * w, axis=-1)) ** 2 + 1e-9)
    bank = np.array(mel_filters(sr, n_fft, n_mels, fmin, fmax), dtype=np.float64)
    return np.log(np.maximum(bank @ mag.T, 1e-5))


@pytest.mark.parametrize(
    ("sr", "n_fft", "hop", "win", "n_mels", "fmin", "fmax"),
    [
        (24000, 1024, 256, 1024, 100, 0.0, None),
        (22050, 1024, 256, 1024, 80, 0.0, 8000.0),
        (32000, 2048, 640, 2048, 128, 0.0, None),
        (24000, 1024, 256, 800, 128, 50.0, 12000.0),
    ],
)
def test_vocoder_mel_matches_float64_reference(sr, n_fft, hop, win, n_mels, fmin, fmax) -> None:
    rng = np.random.default_rng(n_mels)
    t = np.arange(sr) / sr
    x = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(sr)).astype(np.float32)
    ours = np.array(vocoder_mel_spectrogram(x, sr, n_fft, hop, win, n_mels, fmin, fmax))
    ref = reference_vocoder_mel(x, sr, n_fft, hop, win, n_mels, fmin, fmax)
    assert ours.shape == ref.shape == (n_mels, sr // hop if sr % hop == 0 else ref.shape[1])
    np.testing.assert_allclose(ours, ref, atol=5e-5, rtol=0)


def test_vocoder_batched_and_frames_first() -> None:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, 12000))).astype(np.float32)
    batched = np.array(vocoder_mel_spectrogram(x, layout="frames_first"))
    for b in range(2):
        np.testing.assert_allclose(batched[b], np.array(vocoder_mel_spectrogram(x[b])).T, atol=1e-6)


def test_vocoder_errors() -> None:
    with pytest.raises(ValueError, match="hop_length"):
        vocoder_mel_spectrogram(np.ones(5000, np.float32), hop_length=2048)
    with pytest.raises(ValueError, match="reflect padding"):
        vocoder_mel_spectrogram(np.ones(300, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        vocoder_mel_spectrogram(np.full(5000, np.nan, np.float32))
