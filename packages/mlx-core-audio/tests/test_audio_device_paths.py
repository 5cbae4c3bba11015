"""The accelerator code path (whole batch flattened, one filterbank group) run on CPU against references."""

import mlx.core as mx
import mlx_core.audio.mel as mel_module
import numpy as np
import pytest
from mlx_core.audio import StreamingLogMel, log_mel_spectrogram, mel_filters, vocoder_mel_spectrogram


@pytest.fixture
def accelerator_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mel_module, "on_cpu", lambda: False)


def _reference(batch: np.ndarray, per_example: bool) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    bank = np.array(mel_filters(16000, 400, 80), dtype=np.float64)
    out = []
    for row in batch.astype(np.float64):
        padded = np.pad(row, 200, mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, 400)[::160][: len(row) // 160]
        out.append(np.log10(np.maximum(bank @ (np.abs(np.fft.rfft(frames * w, axis=-1)) ** 2).T, 1e-10)))
    spec = np.stack(out)
    peak = spec.max(axis=(1, 2), keepdims=True) if per_example else spec.max()
    return (np.maximum(spec, peak - 8.0) + 4.0) / 4.0


@pytest.mark.usefixtures("accelerator_path")
@pytest.mark.parametrize("method", ["banded", "dense"])
def test_whisper_batched_and_single_on_flat_path(method: str) -> None:
    rng = np.random.default_rng(0)
    batch = (rng.standard_normal((3, 4800)) * np.array([[1.0], [0.1], [0.01]])).astype(np.float32)
    # On a CUDA device "dense" is a TF32-class matmul (the GPU tests allow 2e-4 for it).
    tf32 = method == "dense" and mx.default_device().type == mx.gpu and mx.cuda.is_available()
    atol = 2e-4 if tf32 else 5e-5
    ours = np.array(log_mel_spectrogram(batch, normalize="per_example", method=method))
    np.testing.assert_allclose(ours, _reference(batch, True), atol=atol)
    ff = np.array(log_mel_spectrogram(batch, layout="frames_first", method=method))
    np.testing.assert_allclose(ff, _reference(batch, False).transpose(0, 2, 1), atol=atol)
    one = np.array(log_mel_spectrogram(batch[1], layout="frames_first", method=method))
    np.testing.assert_allclose(one, _reference(batch[1:2], True)[0].T, atol=atol)


@pytest.mark.usefixtures("accelerator_path")
def test_streaming_is_exact_on_flat_path() -> None:
    rng = np.random.default_rng(1)
    x = (0.2 * rng.standard_normal((2, 7000))).astype(np.float32)
    assert mel_module.on_cpu() is False
    offline = np.array(log_mel_spectrogram(x[0], normalize=None, layout="frames_first"))
    ex = StreamingLogMel()
    parts = [np.array(ex.push(x[0][i : i + 999])) for i in range(0, 7000, 999)] + [np.array(ex.flush())]
    np.testing.assert_array_equal(np.concatenate(parts), offline)


def test_cpu_and_flat_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    x = (0.2 * np.random.default_rng(2).standard_normal((2, 7000))).astype(np.float32)
    cpu = np.array(vocoder_mel_spectrogram(x))
    monkeypatch.setattr(mel_module, "on_cpu", lambda: False)
    np.testing.assert_allclose(np.array(vocoder_mel_spectrogram(x)), cpu, atol=2e-6)
