"""Mel filterbanks equal librosa's; the banded form equals the dense bank."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import apply_filterbank, banded_filterbank, hz_to_mel, mel_filters, mel_to_hz
from mlx_core.audio.mel import apply_banded

CASES = [
    (16000, 400, 80, 0.0, None, "slaney", "slaney"),
    (16000, 400, 128, 0.0, 8000.0, "slaney", "slaney"),
    (24000, 1024, 100, 0.0, 12000.0, "slaney", "slaney"),
    (22050, 2048, 128, 30.0, 8000.0, "slaney", None),
    (44100, 2048, 64, 50.0, 16000.0, "htk", "slaney"),
    (16000, 512, 40, 20.0, 7600.0, "htk", None),
    (8000, 256, 23, 0.0, None, "htk", None),
]


@pytest.mark.parity
@pytest.mark.parametrize("case", CASES)
def test_mel_filters_equal_librosa(case: tuple) -> None:
    librosa = pytest.importorskip("librosa")
    sr, n_fft, n_mels, fmin, fmax, scale, norm = case
    ref = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=scale == "htk", norm=norm
    )
    ours = np.array(mel_filters(sr, n_fft, n_mels, fmin, fmax, scale, norm))
    assert ours.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def _torchaudio_htk(n_freqs: int, f_min: float, f_max: float, n_mels: int, sr: int) -> np.ndarray:
    """torchaudio.functional.melscale_fbanks(norm=None, mel_scale='htk'), float64, as [n_mels, n_freqs]."""
    all_freqs = np.linspace(0, sr // 2, n_freqs)
    m_pts = np.linspace(2595 * np.log10(1 + f_min / 700), 2595 * np.log10(1 + f_max / 700), n_mels + 2)
    f_pts = 700 * (10 ** (m_pts / 2595) - 1)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0, np.minimum(down, up)).T


def test_htk_without_norm_matches_torchaudio_default() -> None:
    ours = np.array(mel_filters(16000, 400, 64, 0.0, 8000.0, mel_scale="htk", norm=None))
    np.testing.assert_allclose(ours, _torchaudio_htk(201, 0.0, 8000.0, 64, 16000), atol=1e-6)


def test_hz_mel_round_trip_and_slaney_break_point() -> None:
    f = np.array([0.0, 200.0, 999.0, 1000.0, 4000.0, 11025.0])
    for scale in ("slaney", "htk"):
        np.testing.assert_allclose(mel_to_hz(hz_to_mel(f, scale), scale), f, rtol=1e-12, atol=1e-9)
    assert hz_to_mel(1000.0) == pytest.approx(15.0)
    assert hz_to_mel(1000.0, "htk") == pytest.approx(2595 * np.log10(1 + 1000 / 700))


@pytest.mark.parametrize("overhead", [0, 64, 1 << 30])
@pytest.mark.parametrize("case", CASES[:4])
def test_banded_groupings_equal_dense_product(case: tuple, overhead: int) -> None:
    rng = np.random.default_rng(4)
    spec = rng.random((case[1] // 2 + 1, 29)).astype(np.float32) ** 4
    bank = banded_filterbank(case, overhead)
    ref = np.array(mel_filters(*case), dtype=np.float64) @ spec.astype(np.float64)
    np.testing.assert_allclose(np.array(apply_banded(mx.array(spec), bank)), ref, rtol=1e-5, atol=1e-9)
    if overhead == 1 << 30:
        assert len(bank.sizes) == 1


@pytest.mark.parametrize("case", CASES[:4])
def test_banded_filterbank_equals_dense_product(case: tuple) -> None:
    rng = np.random.default_rng(3)
    n_freqs = case[1] // 2 + 1
    spec = rng.random((2, n_freqs, 37)).astype(np.float32) ** 4
    banded = np.array(apply_filterbank(mx.array(spec), case, "banded"))
    bank64 = np.array(mel_filters(*case), dtype=np.float64)
    ref = np.einsum("mf,bft->bmt", bank64, spec.astype(np.float64))
    np.testing.assert_allclose(banded, ref, rtol=1e-5, atol=1e-9)
    bank = banded_filterbank(case)
    assert sum(n for n, _ in bank.sizes) == case[2]
    assert sum(n * k for n, k in bank.sizes) < case[2] * n_freqs / 3  # far fewer products than dense


def test_mel_filters_is_cached() -> None:
    assert mel_filters(16000, 400, 80) is mel_filters(16000, 400, 80)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"norm": "l2"}, "norm"),
        ({"fmax": 9000.0}, "Nyquist"),
        ({"fmin": 5000.0, "fmax": 4000.0}, "fmin < fmax"),
        ({"n_mels": 0}, "n_mels"),
    ],
)
def test_bad_filter_parameters_raise(kwargs: dict, match: str) -> None:
    args = {"sample_rate": 16000, "n_fft": 400, "n_mels": 80, **kwargs}
    with pytest.raises(ValueError, match=match):
        mel_filters(**args)
