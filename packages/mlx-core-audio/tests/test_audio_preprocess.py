"""pad_or_trim and peak normalisation."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import pad_or_trim, peak_normalize


def test_pad_or_trim_numpy_and_mlx() -> None:
    x = np.random.default_rng(0).standard_normal((2, 100)).astype(np.float32)
    np.testing.assert_array_equal(pad_or_trim(x, 60), x[:, :60])
    padded = pad_or_trim(mx.array(x), 130)
    assert isinstance(padded, mx.array) and padded.shape == (2, 130)
    np.testing.assert_array_equal(np.array(padded)[:, :100], x)
    np.testing.assert_array_equal(np.array(padded)[:, 100:], 0)
    assert pad_or_trim(x, 5, axis=0).shape == (5, 100)
    assert pad_or_trim(np.zeros(10), 10).shape == (10,)
    with pytest.raises(ValueError, match="length"):
        pad_or_trim(x, -1)


def test_peak_normalize_per_row_and_silence() -> None:
    rng = np.random.default_rng(1)
    x = np.stack([rng.standard_normal(50) * 3, np.zeros(50), rng.standard_normal(50) * 1e-3]).astype(
        np.float32
    )
    y = np.array(peak_normalize(x, peak=0.9))
    np.testing.assert_allclose(np.abs(y).max(axis=1), [0.9, 0.0, 0.9], rtol=1e-6)
    np.testing.assert_allclose(y[0], x[0] * 0.9 / np.abs(x[0]).max(), rtol=1e-6)
    with pytest.raises(ValueError, match="peak"):
        peak_normalize(x, peak=0)
