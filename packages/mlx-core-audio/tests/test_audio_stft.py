"""STFT against a float64 numpy STFT; istft round trips; padding/shape errors."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import InvalidAudioError, istft, pad_signal, stft


def _np_stft(x: np.ndarray, n_fft: int, hop: int, window: np.ndarray, center: bool, mode: str) -> np.ndarray:
    if center:
        x = np.pad(x, n_fft // 2, mode=mode)
    n = 1 + (len(x) - n_fft) // hop
    frames = np.stack([x[i * hop : i * hop + n_fft] for i in range(n)])
    return np.fft.rfft(frames * window, axis=-1)


@pytest.mark.parametrize(
    ("n_fft", "hop", "center", "mode"),
    [
        (400, 160, True, "reflect"),
        (256, 64, False, "reflect"),
        (64, 48, True, "constant"),
        (511, 100, True, "reflect"),
    ],
)
def test_stft_matches_float64_numpy(n_fft: int, hop: int, center: bool, mode: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3001)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    ours = np.array(stft(x.astype(np.float32), n_fft, hop, center=center, pad_mode=mode))
    ref = _np_stft(x, n_fft, hop, w, center, mode)
    assert ours.shape == ref.shape and ours.dtype == np.complex64
    np.testing.assert_allclose(ours, ref, atol=2e-4 * np.abs(ref).max())


def test_stft_batched_equals_per_row_and_short_window() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 2000)).astype(np.float32)
    batched = np.array(stft(x, 256, 64, win_length=200, window="hamming"))
    for b in range(3):
        np.testing.assert_allclose(
            batched[b], np.array(stft(x[b], 256, 64, win_length=200, window="hamming")), atol=1e-5
        )
    w = np.zeros(256)
    w[28:228] = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(200) / 200)
    ref = _np_stft(x[0].astype(np.float64), 256, 64, w, True, "reflect")
    np.testing.assert_allclose(batched[0], ref, atol=1e-3)


@pytest.mark.parametrize(
    ("n_fft", "hop", "window"), [(512, 128, "hann"), (400, 100, "hann"), (256, 64, "hamming")]
)
def test_istft_round_trip(n_fft: int, hop: int, window: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5000)).astype(np.float32)
    spec = stft(x, n_fft, hop, window=window)
    y = np.array(istft(spec, hop, n_fft=n_fft, window=window, length=5000))
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_istft_without_length_trims_centre_padding() -> None:
    x = np.random.default_rng(3).standard_normal(4096).astype(np.float32)
    y = np.array(istft(stft(x, 512, 128), 128))
    assert y.shape == (4096,)
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_pad_signal_reflect_equals_numpy() -> None:
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(np.array(pad_signal(mx.array(x), 3, 4)), np.pad(x, (3, 4), mode="reflect"))


def test_errors() -> None:
    with pytest.raises(InvalidAudioError, match="shorter than n_fft"):
        stft(np.ones(100, np.float32), 256, 64, center=False)
    with pytest.raises(InvalidAudioError, match="reflect padding"):
        stft(np.ones(100, np.float32), 256, 64)
    with pytest.raises(ValueError, match="pad_mode"):
        stft(np.ones(1000, np.float32), 256, 64, pad_mode="edge")
    with pytest.raises(ValueError, match="hop_length"):
        stft(np.ones(1000, np.float32), 256, 0)
    with pytest.raises(InvalidAudioError, match="NaN"):
        stft(np.array([0.0, np.nan] * 600, np.float32), 256)
    with pytest.raises(InvalidAudioError, match="empty"):
        stft(np.zeros(0, np.float32), 256)
    with pytest.raises(InvalidAudioError, match="1-D or 2-D"):
        stft(np.zeros((2, 2, 900), np.float32), 256)
    with pytest.raises(ValueError, match="bins"):
        istft(mx.zeros((10, 129), dtype=mx.complex64), 64, n_fft=512)
