"""soxr resampling keeps a tone's frequency and level."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import resample


def _peak_frequency(x: np.ndarray, sr: int) -> float:
    """Tone frequency by a zero-padded windowed FFT peak with parabolic interpolation."""
    n = 1 << 20
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x)), n))
    k = int(mag.argmax())
    a, b, c = np.log(mag[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / n


@pytest.mark.parametrize("orig", [44100, 48000, 8000])
@pytest.mark.parametrize("target", [16000, 24000])
def test_tone_keeps_frequency_and_level(orig: int, target: int) -> None:
    freq, amp = 997.0, 0.5
    t = np.arange(orig) / orig  # 1 s
    x = (amp * np.sin(2 * np.pi * freq * t + 0.3)).astype(np.float32)
    y = resample(x, orig, target)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert abs(len(y) - target) <= 1
    core = y[target // 10 : -target // 10]  # skip filter edges
    assert _peak_frequency(core, target) == pytest.approx(freq, abs=0.05)
    rms = np.sqrt(np.mean(core.astype(np.float64) ** 2))
    assert 20 * np.log10(rms / (amp / np.sqrt(2))) == pytest.approx(0.0, abs=0.01)
    ref = amp * np.sin(2 * np.pi * freq * np.arange(len(y)) / target + 0.3)
    assert np.abs(core - ref[target // 10 : -target // 10]).max() < 1e-3  # phase/delay preserved too


def test_multichannel_resamples_along_time_and_keeps_mx_type() -> None:
    t = np.arange(48000) / 48000
    x = np.stack([np.sin(2 * np.pi * 300 * t), 0.5 * np.sin(2 * np.pi * 700 * t)]).astype(np.float32)
    y = resample(mx.array(x), 48000, 16000)
    assert isinstance(y, mx.array) and y.shape == (2, 16000)
    for ch in range(2):
        np.testing.assert_allclose(np.array(y[ch]), resample(x[ch], 48000, 16000), atol=1e-6)


def test_same_rate_is_identity_and_bad_rates_raise() -> None:
    x = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    np.testing.assert_array_equal(resample(x, 16000, 16000), x)
    with pytest.raises(ValueError, match="positive"):
        resample(x, 0, 16000)
    with pytest.raises(ValueError, match="quality"):
        resample(x, 8000, 16000, quality="best")
    with pytest.raises(ValueError, match="NaN"):
        resample(np.array([np.nan, 1.0], np.float32), 8000, 16000)
