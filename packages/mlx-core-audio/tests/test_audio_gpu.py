"""The GPU kernel path (mlx_core.audio.gpu): its tables on any machine, its kernels on CUDA.

The whole audio suite also runs on the lent H100, where MLX's default device is the GPU, so every
reference comparison in the other files exercises these kernels there too.
"""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import InvalidAudioError, log_mel_spectrogram, mel_filters, mel_spectrogram
from mlx_core.audio.gpu import band_tables

on_cuda = pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend")


@pytest.mark.parametrize(
    "key",
    [
        (16000.0, 400, 80, 0.0, None, "slaney", "slaney"),
        (16000.0, 400, 128, 0.0, None, "slaney", "slaney"),
        (24000.0, 1024, 100, 0.0, None, "slaney", "slaney"),
        (22050.0, 512, 64, 20.0, 7000.0, "htk", None),
        (8000.0, 64, 40, 0.0, None, "slaney", "slaney"),  # narrow bands, some possibly empty
    ],
)
def test_band_tables_rebuild_the_filterbank(key: tuple) -> None:
    starts, lengths, weights = (np.array(a) for a in band_tables(key))
    bank = np.array(mel_filters(*key))
    rebuilt = np.zeros_like(bank)
    for m, (s, n) in enumerate(zip(starts, lengths, strict=True)):
        rebuilt[m, s : s + n] = weights[m, :n]
        assert not weights[m, n:].any()
    np.testing.assert_array_equal(rebuilt, bank)
    assert weights.shape[1] == max(int(lengths.max()), 1)


def _reference(x: np.ndarray, n_fft: int, hop: int, center: bool, pad_mode: str, power: float, eps: float):
    """Float64 mel (Slaney, 16 kHz, 40 mels) of a [B, T] batch: frames, |X|^power, filterbank."""
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    bank = np.array(mel_filters(16000, n_fft, 40), dtype=np.float64)
    out = []
    for row in x.astype(np.float64):
        if center:
            row = np.pad(row, n_fft // 2, mode="reflect" if pad_mode == "reflect" else "constant")
        n = 1 + (len(row) - n_fft) // hop
        frames = np.stack([row[i * hop : i * hop + n_fft] for i in range(n)])
        p = np.abs(np.fft.rfft(frames * w, axis=-1)) ** 2
        p = p if power == 2.0 and not eps else (p + eps) ** (power / 2)
        out.append(bank @ p.T)
    return np.stack(out)


@pytest.mark.gpu
@on_cuda
@pytest.mark.parametrize(
    ("n_fft", "hop", "center", "pad_mode", "power", "eps"),
    [
        (400, 160, True, "reflect", 2.0, 0.0),
        (512, 128, True, "constant", 1.0, 0.0),
        (256, 100, False, "reflect", 1.0, 1e-6),
        (400, 160, True, "reflect", 1.5, 1e-4),
    ],
)
def test_gpu_mel_matches_float64(n_fft: int, hop: int, center: bool, pad_mode: str, power: float, eps: float):
    x = (0.3 * np.random.default_rng(n_fft + hop).standard_normal((3, 7001))).astype(np.float32)
    ref = _reference(x, n_fft, hop, center, pad_mode, power, eps)
    with mx.stream(mx.gpu):
        kw = {"n_fft": n_fft, "hop_length": hop, "n_mels": 40, "center": center, "pad_mode": pad_mode}
        ours = np.array(mel_spectrogram(x, power=power, magnitude_eps=eps, **kw))
        single = np.array(mel_spectrogram(x[1], power=power, magnitude_eps=eps, layout="frames_first", **kw))
        logged = np.array(mel_spectrogram(x, power=power, magnitude_eps=eps, log="ln", log_floor=1e-5, **kw))
    np.testing.assert_allclose(ours, ref, rtol=3e-5, atol=1e-7 * np.abs(ref).max())
    np.testing.assert_allclose(single, ref[1].T, rtol=3e-5, atol=1e-7 * np.abs(ref).max())
    np.testing.assert_allclose(logged, np.log(np.maximum(ref, 1e-5)), atol=5e-5)


@pytest.mark.gpu
@on_cuda
def test_gpu_non_finite_input_raises() -> None:
    x = (0.1 * np.random.default_rng(3).standard_normal(16000)).astype(np.float32)
    for bad in (float("nan"), float("inf")):
        y = x.copy()
        y[9000] = bad
        with mx.stream(mx.gpu):
            with pytest.raises(InvalidAudioError, match="NaN or infinite"):
                log_mel_spectrogram(mx.array(y))
            with pytest.raises(InvalidAudioError, match="NaN or infinite"):
                mel_spectrogram(mx.array(y), log="log10")
            with pytest.raises(InvalidAudioError, match="NaN or infinite"):
                log_mel_spectrogram(y)  # numpy input: checked up front
