"""Verification rules: greedy prefix, modified rejection sampling (lossless, Σmin(p, q) acceptance)."""

from __future__ import annotations

from collections import Counter

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.spec import greedy_verify, point_mass, rejection_verify, residual_distribution
from spec_helpers import chi_square_pvalue


def _greedy_ref(draft: np.ndarray, logits: np.ndarray) -> tuple[int, int]:
    choice = logits.argmax(-1)
    n = 0
    while n < len(draft) and draft[n] == choice[n]:
        n += 1
    return n, int(choice[n])


@pytest.mark.parametrize("seed", range(20))
def test_greedy_verify_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k, v = int(rng.integers(0, 7)), 5
    logits = rng.normal(size=(k + 1, v)).astype(np.float32)
    # Make the draft agree with the argmax for a random prefix, then (maybe) disagree.
    draft = logits.argmax(-1)[:k].copy()
    cut = int(rng.integers(0, k + 1))
    if cut < k:
        draft[cut] = (draft[cut] + 1 + rng.integers(0, v - 1)) % v
    n, t = greedy_verify(mx.array(draft), mx.array(logits))
    assert (int(n), int(t)) == _greedy_ref(draft, logits)
    assert int(n) == cut


def test_shapes_are_validated() -> None:
    with pytest.raises(ValueError, match="k \\+ 1"):
        greedy_verify(mx.array([1, 2]), mx.zeros((2, 4)))
    with pytest.raises(ValueError, match="vocabularies"):
        rejection_verify(mx.array([1]), mx.ones((2, 4)) / 4, mx.ones((1, 5)) / 5)
    with pytest.raises(ValueError, match="1-D"):
        greedy_verify(mx.array([[1]]), mx.zeros((2, 4)))


def test_residual_and_point_mass_against_numpy() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), size=3)
    q = rng.dirichlet(np.ones(6), size=3)
    ref = np.maximum(p - q, 0)
    ref /= ref.sum(-1, keepdims=True)
    got = np.array(residual_distribution(mx.array(p.astype(np.float32)), mx.array(q.astype(np.float32))))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # Identical rows have no residual mass: fall back to p.
    same = np.array(
        residual_distribution(mx.array(p[:1].astype(np.float32)), mx.array(p[:1].astype(np.float32)))
    )
    np.testing.assert_allclose(same, p[:1], rtol=1e-5)
    np.testing.assert_array_equal(np.array(point_mass(mx.array([2, 0]), 4)), np.eye(4)[[2, 0]])


# Controlled distributions: Σ min(p, q) = 0.70 while Σ p·q = 0.205 — mlx-lm's rule would accept 20.5%.
P0 = np.array([0.40, 0.30, 0.15, 0.10, 0.05])
Q0 = np.array([0.10, 0.30, 0.35, 0.20, 0.05])
P1 = np.array([0.05, 0.10, 0.50, 0.25, 0.10])
Q1 = np.array([0.25, 0.05, 0.30, 0.30, 0.10])
P2 = np.array([0.20, 0.20, 0.20, 0.20, 0.20])


def _run_rule(n_runs: int, verify) -> tuple[Counter, int]:
    """Draw d ~ q, verify, and return counts of the first two emitted tokens plus the #accepted at pos 0."""
    p = mx.array(np.stack([P0, P1, P2]).astype(np.float32))
    q = mx.array(np.stack([Q0, Q1]).astype(np.float32))
    mx.random.seed(1234)
    logq = mx.log(q)
    counts: Counter = Counter()
    accepted0 = 0
    for _ in range(n_runs):
        d = mx.random.categorical(logq).astype(mx.int32)
        n, t = verify(d, p, q)
        mx.eval(n, t, d)
        emitted = [*d.tolist()[: int(n)], int(t)]
        accepted0 += int(n) >= 1
        if len(emitted) >= 2:
            counts[tuple(emitted[:2])] += 1
        else:
            counts[(emitted[0], "*")] += 1
    return counts, accepted0


def _expected() -> dict[tuple, float]:
    """First token ~ P0; the second is only emitted in the same round when the first was accepted.

    P(first = a and d1 accepted) = min(P0[a], Q0[a]); then the second token ~ P1 exactly.
    """
    exp: dict[tuple, float] = {}
    for a in range(5):
        acc = min(P0[a], Q0[a])
        exp[(a, "*")] = P0[a] - acc
        for b in range(5):
            exp[(a, b)] = acc * P1[b]
    return exp


def test_rejection_sampling_is_lossless_and_accepts_sum_min() -> None:
    n_runs = 4000
    counts, accepted0 = _run_rule(n_runs, lambda d, p, q: rejection_verify(d, p, q))
    assert chi_square_pvalue(counts, _expected()) > 1e-3
    first = Counter()
    for (a, _), c in counts.items():
        first[a] += c
    assert chi_square_pvalue({(a,): c for a, c in first.items()}, {(a,): P0[a] for a in range(5)}) > 1e-3
    sum_min, sum_pq = np.minimum(P0, Q0).sum(), (P0 * Q0).sum()
    rate = accepted0 / n_runs
    sigma = np.sqrt(sum_min * (1 - sum_min) / n_runs)
    assert abs(rate - sum_min) < 4 * sigma
    assert abs(rate - sum_pq) > 20 * sigma


def test_negative_control_resampling_from_p_fails() -> None:
    """A subtly wrong rule (resample from p, not from norm(max(0, p − q))) must fail the same test."""

    def wrong(d: mx.array, p: mx.array, q: mx.array) -> tuple[mx.array, mx.array]:
        n, _ = rejection_verify(d, p, q)
        return n, mx.random.categorical(mx.log(mx.take(p, n, axis=0)))

    counts, _ = _run_rule(4000, wrong)
    assert chi_square_pvalue(counts, _expected()) < 1e-6


def test_point_mass_draft_is_lossless() -> None:
    """Deterministic drafts (prompt lookup): accept with prob p(x), else sample p with x removed."""
    p = mx.array(np.stack([P0, P1]).astype(np.float32))
    mx.random.seed(7)
    counts: Counter = Counter()
    n_runs = 3000
    accepted = 0
    for _ in range(n_runs):
        n, t = rejection_verify(mx.array([0], dtype=mx.int32), p)
        n_i = int(n)
        accepted += n_i
        counts[(0,) if n_i else (int(t),)] += 1
    assert chi_square_pvalue(counts, {(a,): P0[a] for a in range(5)}) > 1e-3
    assert abs(accepted / n_runs - P0[0]) < 4 * np.sqrt(P0[0] * (1 - P0[0]) / n_runs)


def test_bonus_token_when_all_accepted() -> None:
    """q == p: every draft is accepted and the bonus comes from the last row."""
    p = mx.array(np.stack([P0, P1, np.eye(5)[3]]).astype(np.float32))
    for seed in range(20):
        mx.random.seed(seed)
        d = mx.random.categorical(mx.log(p[:2])).astype(mx.int32)
        n, t = rejection_verify(d, p, p[:2])
        assert (int(n), int(t)) == (2, 3)


def test_explicit_key_is_reproducible() -> None:
    p = mx.array(np.stack([P0, P1]).astype(np.float32))
    q = mx.array(Q0[None].astype(np.float32))
    key = mx.random.key(3)
    outs = {tuple(int(x) for x in rejection_verify(mx.array([2]), p, q, key=key)) for _ in range(5)}
    assert len(outs) == 1
