"""Inverse-CDF draft draws: the reported q is the input distribution, and draws follow it."""

from __future__ import annotations

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.spec import inverse_cdf_draw
from spec_helpers import chi_square_pvalue


def test_reported_q_matches_normalised_input() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(50), size=3) * rng.uniform(0.5, 2.0, size=(3, 1))  # unnormalised rows
    probs[:, ::7] = 0.0
    _, q = inverse_cdf_draw(mx.array(probs.astype(np.float32)))
    ref = probs / probs.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.array(q), ref, rtol=1e-5, atol=1e-7)
    assert (np.array(q)[:, ::7] == 0.0).all()


def test_draws_follow_q_and_never_hit_zero_mass() -> None:
    """Chi-square over 20k draws against q; zero-mass entries (incl. a zero tail) never drawn."""
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(6) * 0.7)
    p = np.concatenate([p[:3], [0.0], p[3:], [0.0, 0.0]])  # a zero inside and a zero tail
    n = 20_000
    mx.random.seed(3)
    tokens, q = inverse_cdf_draw(mx.broadcast_to(mx.array(p.astype(np.float32)), (n, p.size)))
    counts = Counter((int(t),) for t in np.array(tokens))
    expected = {(i,): float(x) for i, x in enumerate(np.array(q)[0]) if x > 0}
    assert chi_square_pvalue(counts, expected) > 1e-3
    assert all(p[t] > 0 for (t,) in counts)
    # Negative control: the same draws judged against a slightly different distribution fail.
    shifted = np.array(q)[0].astype(np.float64)
    shifted[np.argmax(shifted)] -= 0.02
    shifted[np.argmin(np.where(shifted > 0, shifted, 9))] += 0.02
    assert chi_square_pvalue(counts, {(i,): float(x) for i, x in enumerate(shifted) if x > 0}) < 1e-3


def test_seeded_draws_reproduce_and_key_is_honoured() -> None:
    probs = mx.array(np.random.default_rng(2).dirichlet(np.ones(30), size=8).astype(np.float32))
    mx.random.seed(7)
    a = np.array(inverse_cdf_draw(probs)[0])
    mx.random.seed(7)
    b = np.array(inverse_cdf_draw(probs)[0])
    np.testing.assert_array_equal(a, b)
    key = mx.random.key(5)
    np.testing.assert_array_equal(
        np.array(inverse_cdf_draw(probs, key=key)[0]), np.array(inverse_cdf_draw(probs, key=key)[0])
    )


def test_shape_is_validated() -> None:
    with pytest.raises(ValueError, match="2-D"):
        inverse_cdf_draw(mx.ones((4,)))
