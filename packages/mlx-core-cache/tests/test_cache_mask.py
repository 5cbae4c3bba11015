"""create_causal_mask against a float64 numpy construction and mlx-lm's own mask."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.cache import attention_mask_for_offset, create_causal_mask


def naive_mask(N: int, offset: int, window: int | None) -> np.ndarray:
    m = np.zeros((N, offset + N), dtype=bool)
    for i in range(N):
        for j in range(offset + N):
            m[i, j] = j <= offset + i and (window is None or j > offset + i - window)
    return m


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 20), st.one_of(st.none(), st.integers(1, 10)))
def test_causal_mask_matches_naive(N: int, offset: int, window: int | None) -> None:
    got = np.array(create_causal_mask(N, offset, window_size=window))
    assert got.shape == (N, offset + N)
    np.testing.assert_array_equal(got, naive_mask(N, offset, window))


def test_lengths_hide_right_padding() -> None:
    m = np.array(create_causal_mask(3, 2, lengths=mx.array([5, 3])))
    assert m.shape == (2, 1, 3, 5)
    np.testing.assert_array_equal(m[0, 0], naive_mask(3, 2, None))
    expect = naive_mask(3, 2, None)
    expect[:, 3:] = False
    np.testing.assert_array_equal(m[1, 0], expect)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="window_size"):
        create_causal_mask(2, 0, window_size=0)
    with pytest.raises(ValueError, match="offset"):
        create_causal_mask(2, -1)
    with pytest.raises(ValueError, match="lengths"):
        create_causal_mask(2, 0, lengths=mx.array([[1]]))


def test_attention_mask_for_offset_shortcuts() -> None:
    assert attention_mask_for_offset(1, 5) is None
    assert attention_mask_for_offset(4, 5) == "causal"
    assert attention_mask_for_offset(4, 5, return_array=True).shape == (4, 9)
    assert attention_mask_for_offset(1, 5, window_size=3).shape == (1, 6)


@pytest.mark.parity
def test_matches_mlx_lm_create_causal_mask() -> None:
    base = pytest.importorskip("mlx_lm.models.base")
    for N, off, w in [(1, 0, None), (5, 7, None), (6, 3, 4), (1, 9, 2)]:
        assert mx.array_equal(
            create_causal_mask(N, off, window_size=w), base.create_causal_mask(N, off, window_size=w)
        )
