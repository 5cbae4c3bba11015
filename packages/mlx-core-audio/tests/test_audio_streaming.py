"""Streaming log-mel is bit-identical to the offline computation for any chunking."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.audio import InvalidAudioError, StreamingLogMel, log_mel_spectrogram, mel_spectrogram

SIGNAL = (0.2 * np.random.default_rng(11).standard_normal(9000)).astype(np.float32)
OFFLINE = np.array(log_mel_spectrogram(SIGNAL, normalize=None, layout="frames_first"))


def _stream(extractor: StreamingLogMel, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    outs, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        outs.append(np.array(extractor.push(x[i : i + n])))
        i, k = i + n, k + 1
    outs.append(np.array(extractor.flush()))
    return np.concatenate(outs)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=2500), min_size=1, max_size=12))
def test_streaming_equals_offline_bit_exact(sizes: list[int]) -> None:
    streamed = _stream(StreamingLogMel(), SIGNAL, sizes)
    assert streamed.shape == OFFLINE.shape == (9000 // 160, 80)
    np.testing.assert_array_equal(streamed, OFFLINE)


@pytest.mark.parametrize(
    ("n_fft", "hop", "drop_last"), [(512, 400, True), (256, 64, False), (400, 160, False)]
)
def test_streaming_other_geometries(n_fft: int, hop: int, drop_last: bool) -> None:
    rng = np.random.default_rng(n_fft)
    x = (0.3 * rng.standard_normal(5000)).astype(np.float32)
    ex = StreamingLogMel(n_mels=40, n_fft=n_fft, hop_length=hop, drop_last=drop_last)
    offline = np.array(
        mel_spectrogram(
            x, 16000, n_fft, hop, n_mels=40, log="log10", drop_last=drop_last, layout="frames_first"
        )
    )
    for sizes in ([1, 7, 333], [hop], [4999, 1]):
        ex.reset()
        np.testing.assert_array_equal(_stream(ex, x, sizes), offline)


@pytest.mark.gpu
@pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend")
def test_streaming_equals_offline_on_gpu() -> None:
    # On the H100 (MLX 0.32.4) cuFFT rounds a frame differently depending on how many frames share the
    # call, so streaming matched offline to 1 ulp (max 2.4e-7), not bit for bit as on the CPU.
    with mx.stream(mx.gpu):
        offline = np.array(log_mel_spectrogram(SIGNAL, normalize=None, layout="frames_first"))
        for sizes in ([1, 7, 333], [160], [2500, 13]):
            np.testing.assert_allclose(_stream(StreamingLogMel(), SIGNAL, sizes), offline, rtol=0, atol=1e-6)
    np.testing.assert_allclose(offline, OFFLINE, atol=2e-5)


def test_streaming_state_errors_and_empty_chunks() -> None:
    ex = StreamingLogMel()
    assert ex.push(np.zeros(0, np.float32)).shape == (0, 80)
    ex.push(SIGNAL[:100])
    with pytest.raises(InvalidAudioError, match="reflect padding"):
        ex.flush()
    ex.reset()
    ex.push(mx.array(SIGNAL))
    ex.flush()
    with pytest.raises(RuntimeError, match="reset"):
        ex.push(SIGNAL[:10])
    ex.reset()
    with pytest.raises(InvalidAudioError, match="1-D"):
        ex.push(np.zeros((2, 10), np.float32))
