"""Logits processors vs a numpy reference and vs mlx-lm's own processors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.generate import make_logits_processors, make_repetition_penalty

V = 30


def _case(seed: int, batch: int = 2, hist: int = 25) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, V)).astype(np.float32) * 3, rng.integers(0, 8, size=hist)


def ref(
    logits: np.ndarray, hist: np.ndarray, bias=None, rep=None, pres=None, freq=None, ctx=20
) -> np.ndarray:
    out = logits.astype(np.float64).copy()
    recent = hist[-ctx:]
    if bias:
        for k, v in bias.items():
            out[:, k] += v
    if rep:
        for t in set(recent.tolist()):
            out[:, t] = np.where(out[:, t] < 0, out[:, t] * rep, out[:, t] / rep)
    if pres:
        for t in set(recent.tolist()):
            out[:, t] -= pres
    if freq:
        for t in recent.tolist():
            out[:, t] -= freq
    return out


@pytest.mark.parametrize(
    "kw",
    [
        dict(bias={3: 2.5, 9: -1.0}),
        dict(rep=1.4),
        dict(pres=0.7),
        dict(freq=0.3),
        dict(bias={1: 1.0}, rep=1.2, pres=0.5, freq=0.2),
    ],
    ids=str,
)
def test_processors_match_numpy(kw: dict) -> None:
    logits, hist = _case(len(kw))
    procs = make_logits_processors(
        logit_bias=kw.get("bias"),
        repetition_penalty=kw.get("rep"),
        presence_penalty=kw.get("pres"),
        frequency_penalty=kw.get("freq"),
    )
    out = mx.array(logits)
    for p in procs:
        out = p(mx.array(hist), out)
    np.testing.assert_allclose(np.array(out), ref(logits, hist, **kw), rtol=1e-5, atol=1e-5)


def test_per_row_history_and_context_size() -> None:
    logits, _ = _case(1)
    hist = np.array([[1, 2, 3, 3], [4, 4, 4, 5]])
    out = np.array(
        make_logits_processors(frequency_penalty=1.0, frequency_context_size=3)[0](
            mx.array(hist), mx.array(logits)
        )
    )
    want = logits.astype(np.float64).copy()
    want[0, [2, 3, 3]] -= 1  # row 0 recent = [2, 3, 3]
    np.subtract.at(want[0], [3], 0)
    want[1, 4] -= 2
    want[1, 5] -= 1
    want0 = logits.astype(np.float64).copy()
    want0[0, 2] -= 1
    want0[0, 3] -= 2
    np.testing.assert_allclose(out[0], want0[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], want[1], rtol=1e-6)


def test_empty_history_is_identity_and_bad_penalty_raises() -> None:
    logits, _ = _case(2)
    p = make_repetition_penalty(1.5)
    np.testing.assert_array_equal(np.array(p(mx.array([], mx.int32), mx.array(logits))), logits)
    with pytest.raises(ValueError, match="repetition_penalty"):
        make_repetition_penalty(-1.0)
    with pytest.raises(ValueError, match="context"):
        make_logits_processors(presence_penalty=0.5, presence_context_size=0)


@pytest.mark.parity
def test_same_as_mlx_lm_processors() -> None:
    su = pytest.importorskip("mlx_lm.sample_utils")
    logits, hist = _case(5, batch=1)
    kw = dict(logit_bias={2: 1.5}, repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.2)
    a, b = mx.array(logits), mx.array(logits)
    for p in make_logits_processors(**kw):
        a = p(mx.array(hist), a)
    for p in su.make_logits_processors(**kw):
        b = p(mx.array(hist), b)
    np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6)
