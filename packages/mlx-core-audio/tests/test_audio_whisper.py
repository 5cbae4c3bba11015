"""Whisper log-mel equals a float64 numpy reference written from the recipe and HF's extractor."""

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import N_SAMPLES, load_audio, log_mel_spectrogram, mel_filters, pad_or_trim

ATOL = 5e-5


def dense_atol() -> float:
    """The dense filterbank is a float32 matmul: CUDA runs it at TF32-class precision (9.6e-5 seen)."""
    return 2e-4 if mx.default_device().type == mx.gpu and mx.cuda.is_available() else ATOL


FIXTURE = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "jfk.flac"


def reference_log_mel(audio: np.ndarray, n_mels: int = 80, per_example: bool = False) -> np.ndarray:
    """OpenAI recipe in float64: periodic Hann, reflect-centred STFT, |X|², drop last, log10, max-8, /4."""
    x = np.atleast_2d(np.asarray(audio, dtype=np.float64))
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    bank = np.array(mel_filters(16000, 400, n_mels), dtype=np.float64)
    out = []
    for row in x:
        padded = np.pad(row, 200, mode="reflect")
        n = 1 + (len(padded) - 400) // 160
        frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160][:n]
        power = np.abs(np.fft.rfft(frames * w, axis=-1)) ** 2
        out.append(np.log10(np.maximum(bank @ power[:-1].T, 1e-10)))
    spec = np.stack(out)
    peak = spec.max(axis=(1, 2), keepdims=True) if per_example else spec.max()
    spec = (np.maximum(spec, peak - 8.0) + 4.0) / 4.0
    return spec if np.ndim(audio) == 2 else spec[0]


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    tone = 0.3 * np.sin(2 * np.pi * (220 + 80 * np.sin(2 * np.pi * 0.5 * t)) * t)
    env = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float64)
    return (tone * env + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def jfk16k() -> np.ndarray:
    if not FIXTURE.exists():
        pytest.skip(f"fixture {FIXTURE} absent (CI keeps ../shared next to the clone)")
    return np.array(load_audio(FIXTURE, sample_rate=16000))


@pytest.mark.parametrize("n_mels", [80, 128])
def test_synthetic_matches_float64_reference(n_mels: int) -> None:
    x = _speechlike(3.3, seed=n_mels)
    ours = np.array(log_mel_spectrogram(x, n_mels=n_mels))
    assert ours.shape == (n_mels, len(x) // 160)
    np.testing.assert_allclose(ours, reference_log_mel(x, n_mels), atol=ATOL, rtol=0)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_jfk_matches_reference_and_padding_argument(jfk16k: np.ndarray, n_mels: int) -> None:
    ours = np.array(log_mel_spectrogram(jfk16k, n_mels=n_mels, padding=N_SAMPLES - len(jfk16k)))
    assert ours.shape == (n_mels, 3000)
    np.testing.assert_allclose(ours, reference_log_mel(pad_or_trim(jfk16k), n_mels), atol=ATOL, rtol=0)


@pytest.mark.parity
@pytest.mark.parametrize("n_mels", [80, 128])
def test_jfk_matches_hf_whisper_feature_extractor(jfk16k: np.ndarray, n_mels: int) -> None:
    transformers = pytest.importorskip("transformers")
    fe = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    hf = fe(jfk16k, sampling_rate=16000, return_tensors="np")["input_features"][0]
    ours = np.array(log_mel_spectrogram(pad_or_trim(jfk16k), n_mels=n_mels))
    np.testing.assert_allclose(ours, hf, atol=ATOL, rtol=0)


@pytest.mark.parity
def test_batch_per_example_matches_hf_and_frames_first_layout() -> None:
    transformers = pytest.importorskip("transformers")
    clips = [_speechlike(2.0, seed=1), 0.05 * _speechlike(2.0, seed=2)]
    fe = transformers.WhisperFeatureExtractor(feature_size=80, n_samples=32000, chunk_length=2)
    hf = fe(clips, sampling_rate=16000, return_tensors="np")["input_features"]
    batch = np.stack(clips)
    ours = np.array(log_mel_spectrogram(batch, normalize="per_example"))
    np.testing.assert_allclose(ours, hf, atol=ATOL, rtol=0)
    ff = np.array(log_mel_spectrogram(batch, normalize="per_example", layout="frames_first"))
    np.testing.assert_array_equal(ff, ours.transpose(0, 2, 1))


def test_global_vs_per_example_normalisation() -> None:
    loud, quiet = _speechlike(1.5, 3), 1e-3 * _speechlike(1.5, 4)
    batch = np.stack([loud, quiet])
    glob = np.array(log_mel_spectrogram(batch, normalize="global"))
    per = np.array(log_mel_spectrogram(batch, normalize="per_example"))
    np.testing.assert_allclose(glob, reference_log_mel(batch), atol=ATOL)
    np.testing.assert_allclose(per, reference_log_mel(batch, per_example=True), atol=ATOL)
    np.testing.assert_allclose(glob[0], per[0], atol=1e-6)  # loud clip holds the global max
    assert np.abs(glob[1] - per[1]).max() > 0.5  # the quiet clip is no longer floored at its own max - 8
    single = np.array(log_mel_spectrogram(quiet))
    np.testing.assert_allclose(single, per[1], atol=1e-6)


def test_raw_log_mel_and_dense_method_agree() -> None:
    x = _speechlike(1.0, 5)
    raw = np.array(log_mel_spectrogram(x, normalize=None))
    np.testing.assert_allclose((np.maximum(raw, raw.max() - 8) + 4) / 4, reference_log_mel(x), atol=ATOL)
    dense = np.array(log_mel_spectrogram(x, method="dense"))
    np.testing.assert_allclose(dense, reference_log_mel(x), atol=dense_atol())


def test_int16_pcm_is_scaled_like_whisper() -> None:
    x = _speechlike(1.0, 6)
    pcm = np.round(x * 32767).astype(np.int16)
    ours = np.array(log_mel_spectrogram(mx.array(pcm)))
    np.testing.assert_allclose(ours, reference_log_mel(pcm.astype(np.float64) / 32768.0), atol=ATOL)


def test_accepts_a_path(jfk16k: np.ndarray) -> None:
    np.testing.assert_array_equal(
        np.array(log_mel_spectrogram(FIXTURE)), np.array(log_mel_spectrogram(jfk16k))
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_mels": 64}, "n_mels"),
        ({"layout": "tf"}, "layout"),
        ({"normalize": "max"}, "normalize"),
        ({"padding": -1}, "padding"),
        ({"method": "sparse"}, "method"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log_mel_spectrogram(_speechlike(0.5, 7), **kwargs)


def test_too_short_and_nan_raise() -> None:
    with pytest.raises(ValueError, match="reflect padding"):
        log_mel_spectrogram(np.ones(150, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        log_mel_spectrogram(mx.array([0.1, float("nan")] * 500))


@pytest.mark.gpu
@pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend")
@pytest.mark.parametrize("method", ["banded", "dense"])
def test_gpu_matches_reference(method: str) -> None:
    batch = np.stack([_speechlike(30.0, 8), 0.1 * _speechlike(30.0, 9)])
    with mx.stream(mx.gpu):
        ours = np.array(log_mel_spectrogram(batch, normalize="per_example", method=method))
    # The dense filterbank is a float32 matmul, which CUDA runs at TF32-class precision: on the H100 it
    # differed from float64 by up to 9.6e-5. That is why "banded" (exact float32 sums) is the default.
    atol = ATOL if method == "banded" else 2e-4
    np.testing.assert_allclose(ours, reference_log_mel(batch, per_example=True), atol=atol)


def test_traceable_under_mx_compile() -> None:
    batch = np.stack([_speechlike(1.0, 10), 0.2 * _speechlike(1.0, 11)])
    compiled = mx.compile(lambda a: log_mel_spectrogram(a, normalize="per_example"))
    ours = np.array(compiled(mx.array(batch)))
    np.testing.assert_allclose(ours, reference_log_mel(batch, per_example=True), atol=ATOL)
