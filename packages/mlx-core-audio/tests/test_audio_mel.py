"""mel_spectrogram against librosa.feature.melspectrogram and a float64 numpy pipeline."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import mel_filters, mel_spectrogram

SIGNAL = (0.3 * np.random.default_rng(5).standard_normal((2, 6000))).astype(np.float32)


@pytest.mark.parity
@pytest.mark.parametrize(
    ("power", "pad_mode", "htk", "norm", "win_length"),
    [
        (2.0, "constant", False, "slaney", None),
        (1.0, "reflect", True, None, None),
        (2.0, "reflect", False, None, 400),
    ],
)
def test_matches_librosa_melspectrogram(power: float, pad_mode: str, htk: bool, norm, win_length) -> None:
    librosa = pytest.importorskip("librosa")
    kw = {"n_fft": 512, "hop_length": 128, "n_mels": 64, "fmin": 20.0, "fmax": 7000.0}
    ref = librosa.feature.melspectrogram(
        y=SIGNAL.astype(np.float64),
        sr=16000,
        power=power,
        pad_mode=pad_mode,
        htk=htk,
        norm=norm,
        win_length=win_length,
        dtype=np.float64,
        **kw,
    )
    ours = np.array(
        mel_spectrogram(
            SIGNAL,
            16000,
            power=power,
            pad_mode=pad_mode,
            mel_scale="htk" if htk else "slaney",
            norm=norm,
            win_length=win_length,
            **kw,
        )
    )
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=1e-6 * np.abs(ref).max())


def test_log_variants_layout_and_methods() -> None:
    x = SIGNAL[0]
    base = np.array(mel_spectrogram(x, n_mels=40), dtype=np.float64)
    ln = np.array(mel_spectrogram(x, n_mels=40, log="ln", log_floor=1e-5, layout="frames_first"))
    np.testing.assert_allclose(ln, np.log(np.maximum(base, 1e-5)).T, atol=2e-6)
    dense = np.array(mel_spectrogram(x, n_mels=40, method="dense"))
    tf32 = mx.default_device().type == mx.gpu and mx.cuda.is_available()  # CUDA float32 matmul: TF32-class
    np.testing.assert_allclose(dense, base, rtol=2e-3 if tf32 else 1e-5, atol=1e-9)
    mag = np.array(mel_spectrogram(x, n_mels=40, power=1.0, magnitude_eps=1e-3))
    padded = np.pad(x.astype(np.float64), 200, mode="reflect")
    frames = np.stack([padded[i * 160 : i * 160 + 400] for i in range(1 + (len(padded) - 400) // 160)])
    spec = np.abs(np.fft.rfft(frames * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)), axis=-1)) ** 2
    ref = np.array(mel_filters(16000, 400, 40), dtype=np.float64) @ np.sqrt(spec + 1e-3).T
    np.testing.assert_allclose(mag, ref, rtol=2e-5)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="layout"):
        mel_spectrogram(SIGNAL, layout="ft")
    with pytest.raises(ValueError, match="log"):
        mel_spectrogram(SIGNAL, log="log2")
    with pytest.raises(ValueError, match="Nyquist"):
        mel_spectrogram(SIGNAL, fmax=9000.0)
    with pytest.raises(ValueError, match="shorter than n_fft"):
        mel_spectrogram(mx.ones((300,)), center=False)
    with pytest.raises(ValueError, match="no frame"):
        mel_spectrogram(np.ones(250, np.float32), drop_last=True, center=False)
