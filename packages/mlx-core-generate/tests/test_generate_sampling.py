"""Samplers: filters vs a float64 numpy reference, chi-square of draws, seed-identity with mlx-lm."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.generate import (
    DefaultSampler,
    SamplerConfigError,
    apply_min_p,
    apply_top_k,
    apply_top_p,
    apply_xtc,
    make_sampler,
)

V = 12


def _logprobs(seed: int, rows: int = 1, vocab: int = V) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(rows, vocab)) * 1.5
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


# ---- float64 numpy references of mlx-lm's filter semantics ---------------------------------------
def ref_top_k(lp: np.ndarray, k: int) -> np.ndarray:
    out = np.full_like(lp, -np.inf)
    idx = np.argsort(-lp, axis=-1)[:, :k]
    np.put_along_axis(out, idx, np.take_along_axis(lp, idx, -1), -1)
    return out


def ref_top_p(lp: np.ndarray, p: float) -> np.ndarray:
    out = np.full_like(lp, -np.inf)
    for r in range(lp.shape[0]):
        order = np.argsort(-lp[r])
        probs = np.exp(lp[r][order])
        total = probs.sum()
        keep = 0
        mass = 0.0
        while keep < len(order) and mass < p * total:  # smallest prefix reaching p of the mass
            mass += probs[keep]
            keep += 1
        out[r, order[:keep]] = lp[r, order[:keep]]
    return out


def ref_min_p(lp: np.ndarray, min_p: float, keep: int = 1) -> np.ndarray:
    thresh = lp.max(-1, keepdims=True) + math.log(min_p)
    out = np.where(lp < thresh, -np.inf, lp)
    if keep > 1:
        idx = np.argsort(-lp, axis=-1)[:, :keep]
        np.put_along_axis(out, idx, np.take_along_axis(lp, idx, -1), -1)
    return out


def softmax(x: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = x / t
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def chi2_critical(dof: int, z: float = 3.719) -> float:
    """Wilson–Hilferty approximation of the chi-square quantile (z = 3.719 ↔ alpha = 1e-4)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    n = counts.sum()
    support = probs > 0
    assert counts[~support].sum() == 0, "drew a token outside the filtered support"
    exp = probs[support] * n
    return float(((counts[support] - exp) ** 2 / exp).sum()), int(support.sum() - 1)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_top_k_matches_reference(k: int) -> None:
    lp = _logprobs(k, rows=4)
    got = np.array(apply_top_k(mx.array(lp, mx.float32), k))
    np.testing.assert_allclose(got, ref_top_k(lp, k), rtol=1e-5)


@pytest.mark.parametrize("p", [0.3, 0.75, 0.95, 1.0])
def test_top_p_matches_reference(p: float) -> None:
    lp = _logprobs(int(p * 100), rows=4)
    got = np.array(apply_top_p(mx.array(lp, mx.float32), p))
    np.testing.assert_allclose(got, ref_top_p(lp, p), rtol=1e-5)


@pytest.mark.parametrize(("min_p", "keep"), [(0.05, 1), (0.3, 1), (0.9, 3)])
def test_min_p_matches_reference(min_p: float, keep: int) -> None:
    lp = _logprobs(7, rows=4)
    got = np.array(apply_min_p(mx.array(lp, mx.float32), min_p, keep))
    np.testing.assert_allclose(got, ref_min_p(lp, min_p, keep), rtol=1e-5)


def test_xtc_removes_all_top_choices_but_the_least_likely() -> None:
    lp = np.log(np.array([[0.4, 0.3, 0.2, 0.06, 0.04]]))
    got = np.array(apply_xtc(mx.array(lp, mx.float32), 1.0, 0.1, ()))
    assert np.isneginf(got[0, :2]).all() and np.isfinite(got[0, 2:]).all()
    kept = np.array(apply_xtc(mx.array(lp, mx.float32), 1.0, 0.1, (0,)))
    assert np.isfinite(kept[0, 0]) and np.isneginf(kept[0, 1])
    untouched = np.array(apply_xtc(mx.array(lp, mx.float32), 0.0, 0.1, ()))
    np.testing.assert_allclose(untouched, lp, rtol=1e-6)


CONFIGS = [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=4),
    dict(temperature=1.3, top_p=0.8),
    dict(temperature=0.9, min_p=0.1),
    dict(temperature=0.8, top_p=0.9, min_p=0.05, top_k=5),
    dict(temperature=1.0, top_p=0.6, top_k=3),
]


def _reference_probs(lp: np.ndarray, cfg: dict) -> np.ndarray:
    out = lp
    if cfg.get("top_p", 1.0) < 1.0:
        out = ref_top_p(out, cfg["top_p"])
    if cfg.get("min_p", 0.0):
        out = ref_min_p(out, cfg["min_p"])
    if cfg.get("top_k", 0):
        out = ref_top_k(out, cfg["top_k"])
    return softmax(out, cfg["temperature"])


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_probabilities_and_chi_square(cfg: dict) -> None:
    lp = _logprobs(42)
    sampler = make_sampler(**cfg)
    want = _reference_probs(lp, cfg)[0]
    probs = np.array(sampler.probabilities(mx.array(lp, mx.float32)))[0]
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-7)
    mx.random.seed(7)
    n = 20000
    draws = np.array(sampler(mx.broadcast_to(mx.array(lp, mx.float32), (n, V))))
    stat, dof = chi2(np.bincount(draws, minlength=V), want)
    assert dof == 0 or stat < chi2_critical(dof), (stat, dof)


def test_chi_square_detects_a_wrong_distribution() -> None:
    """Negative control: draws at temperature 1 must fail the test against the temperature-0.5 law."""
    lp = _logprobs(3)
    mx.random.seed(0)
    draws = np.array(make_sampler(1.0)(mx.broadcast_to(mx.array(lp, mx.float32), (20000, V))))
    stat, dof = chi2(np.bincount(draws, minlength=V), softmax(lp, 0.5)[0])
    assert stat > chi2_critical(dof)


def test_xtc_draws_follow_the_mixture() -> None:
    lp = np.log(np.array([[0.35, 0.25, 0.15, 0.1, 0.08, 0.07]]))
    xp, thr = 0.5, 0.12
    sampler = make_sampler(1.0, xtc_probability=xp, xtc_threshold=thr)
    filtered = lp.copy()
    filtered[0, :2] = -np.inf  # above 0.12: tokens 0..2; keep the least likely of them (token 2)
    want = (1 - xp) * softmax(lp)[0] + xp * softmax(filtered)[0]
    mx.random.seed(11)
    x = mx.array(lp, mx.float32)
    draws = [sampler(x) for _ in range(3000)]
    draws_np = np.array(mx.concatenate(draws))
    stat, dof = chi2(np.bincount(draws_np, minlength=6), want)
    assert stat < chi2_critical(dof), stat
    with pytest.raises(ValueError, match="XTC"):
        sampler.probabilities(x)


def test_greedy_is_argmax_and_one_hot() -> None:
    lp = mx.array(_logprobs(5, rows=3), mx.float32)
    s = make_sampler(0.0, top_k=2)
    assert np.array_equal(np.array(s(lp)), np.argmax(np.array(lp), -1))
    probs = np.array(s.probabilities(lp))
    assert np.array_equal(probs.argmax(-1), np.argmax(np.array(lp), -1)) and np.allclose(probs.sum(-1), 1)
    assert s.temperature == 0.0 and isinstance(s, DefaultSampler)


@pytest.mark.parity
@pytest.mark.parametrize(
    "cfg",
    [
        *CONFIGS,
        dict(temperature=1.0, xtc_probability=0.5, xtc_threshold=0.1),
        dict(temperature=0.8, top_p=0.9, min_p=0.02, top_k=6, xtc_probability=0.7, xtc_threshold=0.05),
    ],
    ids=str,
)
def test_identical_to_mlx_lm_for_fixed_seeds(cfg: dict) -> None:
    su = pytest.importorskip("mlx_lm.sample_utils")
    theirs = su.make_sampler(
        temp=cfg["temperature"],
        top_p=cfg.get("top_p", 0.0),
        min_p=cfg.get("min_p", 0.0),
        top_k=cfg.get("top_k", 0),
        xtc_probability=cfg.get("xtc_probability", 0.0),
        xtc_threshold=cfg.get("xtc_threshold", 0.0),
    )
    ours = make_sampler(**cfg)
    lp = mx.array(_logprobs(99, rows=64, vocab=50), mx.float32)
    for seed in range(5):
        mx.random.seed(seed)
        a = [ours(lp) for _ in range(3)]
        mx.random.seed(seed)
        b = [theirs(lp) for _ in range(3)]
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(np.array(x), np.array(y))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=-0.1),
        dict(temperature=float("nan")),
        dict(top_p=0.0),
        dict(top_p=1.5),
        dict(min_p=-0.1),
        dict(top_k=-1),
        dict(top_k=2.5),
        dict(min_tokens_to_keep=0),
        dict(xtc_probability=1.5),
        dict(xtc_threshold=0.7),
    ],
    ids=str,
)
def test_bad_sampler_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(SamplerConfigError):
        make_sampler(**kwargs)


def test_bad_filter_arguments_raise() -> None:
    lp = mx.array(_logprobs(1), mx.float32)
    with pytest.raises(ValueError, match="top_k"):
        apply_top_k(lp, V)
    with pytest.raises(ValueError, match="top_p"):
        apply_top_p(lp, 0.0)
    with pytest.raises(ValueError, match="min_p"):
        apply_min_p(lp, 2.0)


def test_sample_logits_matches_sampling_the_log_softmax() -> None:
    rng = np.random.default_rng(31)
    logits = mx.array(rng.standard_normal((3, 50)).astype(np.float32) * 3)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    greedy = make_sampler(0.0)
    np.testing.assert_array_equal(np.array(greedy.sample_logits(logits)), np.array(greedy(logprobs)))
    np.testing.assert_array_equal(
        np.array(greedy.sample_logits(logits)), np.argmax(np.array(logits), axis=-1)
    )
    hooked = make_sampler(0.0, greedy=lambda x: mx.argmin(x, axis=-1))
    np.testing.assert_array_equal(
        np.array(hooked.sample_logits(logits)), np.argmin(np.array(logits), axis=-1)
    )
    assert (
        np.array(hooked(logprobs)).tolist() == np.argmax(np.array(logits), axis=-1).tolist()
    )  # logprobs path
    with pytest.raises(SamplerConfigError, match="greedy must be a function"):
        make_sampler(0.0, greedy=3)  # type: ignore[arg-type]
