"""Windows: periodic by default, equal to the float64 definitions."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import hamming, hann
from mlx_core.audio.windows import window_array


@pytest.mark.parametrize("n", [1, 2, 7, 400, 1024])
def test_hann_periodic_and_symmetric_match_definitions(n: int) -> None:
    k = np.arange(n)
    periodic = 0.5 - 0.5 * np.cos(2 * np.pi * k / n) if n > 1 else np.ones(1)
    np.testing.assert_allclose(np.array(hann(n)), periodic, atol=1e-7)
    if n > 1:
        np.testing.assert_allclose(np.array(hann(n, periodic=False)), np.hanning(n), atol=1e-7)
        np.testing.assert_allclose(np.array(hamming(n, periodic=False)), np.hamming(n), atol=1e-7)
        np.testing.assert_allclose(np.array(hamming(n)), np.hamming(n + 1)[:-1], atol=1e-7)


def test_hann_differs_from_mlx_symmetric_window() -> None:
    assert not np.allclose(np.array(hann(400)), np.array(mx.hanning(400)), atol=1e-4)


def test_short_window_is_centred_in_n_fft() -> None:
    w = window_array("hann", 6, 10)
    np.testing.assert_array_equal(w[:2], 0)
    np.testing.assert_array_equal(w[-2:], 0)
    np.testing.assert_allclose(w[2:8], np.array(hann(6)))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_lengths_raise(bad: object) -> None:
    with pytest.raises(ValueError, match="positive int"):
        hann(bad)  # type: ignore[arg-type]


def test_unknown_window_and_wrong_array_length_raise() -> None:
    with pytest.raises(ValueError, match="unknown window"):
        window_array("kaiser", 8, 8)
    with pytest.raises(ValueError, match="shape"):
        window_array(np.ones(5), 8, 8)
    with pytest.raises(ValueError, match="win_length"):
        window_array("hann", 16, 8)
