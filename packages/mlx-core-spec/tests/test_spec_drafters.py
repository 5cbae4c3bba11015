"""Drafters: prompt lookup against a brute-force search; the draft model's cache rollback against
from-scratch greedy decoding of the draft model."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.generate import make_sampler
from mlx_core.spec import Drafter, DraftError, DraftModelDrafter, PromptLookupDrafter
from spec_helpers import TinyLM


def _lookup_ref(history: list[int], max_ngram: int, k: int) -> list[int]:
    """Brute force: longest n-gram suffix first, its most recent earlier occurrence, what followed."""
    for n in range(min(max_ngram, len(history) - 1), 0, -1):
        suffix = history[-n:]
        for end in range(len(history) - 1, n - 1, -1):
            if history[end - n : end] == suffix:
                return history[end : end + k]
    return []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=40),
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 8),
)
def test_prompt_lookup_matches_brute_force(
    history: list[int], max_ngram: int, num_tokens: int, k: int
) -> None:
    drafter = PromptLookupDrafter(max_ngram=max_ngram, num_tokens=num_tokens)
    fresh = drafter.propose(history, k)
    assert fresh == _lookup_ref(history, max_ngram, min(k, num_tokens))
    # incremental use over growing histories gives the same answers as fresh ones
    inc = PromptLookupDrafter(max_ngram=max_ngram, num_tokens=num_tokens)
    for cut in range(1, len(history) + 1):
        assert inc.propose(history[:cut], k) == _lookup_ref(history[:cut], max_ngram, min(k, num_tokens))


def test_prompt_lookup_draft_object_and_validation() -> None:
    d = PromptLookupDrafter(max_ngram=2, num_tokens=3)
    assert isinstance(d, Drafter) and d.deterministic
    out = d.draft([5, 6, 7, 8, 9, 5, 6], 10)
    assert out.tokens.tolist() == [7, 8, 9] and out.probs is None
    assert len(d.draft([1, 2, 3], 4)) == 0
    with pytest.raises(ValueError, match="max_ngram"):
        PromptLookupDrafter(max_ngram=0)
    with pytest.raises(ValueError, match="num_tokens"):
        PromptLookupDrafter(num_tokens=0)


def _greedy_from_scratch(model: TinyLM, history: list[int], k: int) -> list[int]:
    seq = list(history)
    for _ in range(k):
        logits = model(mx.array(seq)[None])[0, -1]
        seq.append(int(mx.argmax(logits).item()))
    return seq[len(history) :]


def test_draft_model_rollback_matches_from_scratch() -> None:
    """Simulate rounds where a random prefix of each draft is kept plus a random correction token."""
    model = TinyLM(seed=3, n_layers=1)
    drafter = DraftModelDrafter(model)
    drafter.reset(make_sampler(0.0))
    rng = np.random.default_rng(0)
    history = [int(x) for x in rng.integers(0, 64, 9)]
    for _ in range(8):
        k = int(rng.integers(1, 5))
        draft = drafter.draft(history, k)
        got = draft.tokens.tolist()
        assert got == _greedy_from_scratch(model, history, k)
        # the cache holds the history and every draft token but the last (never fed)
        assert drafter.caches[0].offset == len(history) + k - 1
        keep = int(rng.integers(0, k + 1))
        history = history + got[:keep] + [int(rng.integers(0, 64))]


def test_draft_model_rollback_distributions_match_from_scratch() -> None:
    """Every q row equals the sampler's distribution after the exact history (a stale cache would not)."""
    model = TinyLM(seed=4, n_layers=1, scale=1.0)
    sampler = make_sampler(1.0)
    drafter = DraftModelDrafter(model)
    drafter.reset(sampler)
    rng = np.random.default_rng(1)
    mx.random.seed(1)
    history = [int(x) for x in rng.integers(0, 64, 7)]
    for _ in range(6):
        k = int(rng.integers(1, 5))
        draft = drafter.draft(history, k)
        got, q = draft.tokens.tolist(), np.array(draft.probs)
        logits = model(mx.array(history + got[:-1])[None])[0, len(history) - 1 :]
        ref = np.array(sampler.probabilities(logits - mx.logsumexp(logits, axis=-1, keepdims=True)))
        np.testing.assert_allclose(q, ref, rtol=1e-4, atol=1e-6)
        keep = int(rng.integers(0, k + 1))
        history = history + got[:keep] + [int(rng.integers(0, 64))]


def test_draft_model_sampling_returns_q_rows() -> None:
    model = TinyLM(seed=3, n_layers=1)
    drafter = DraftModelDrafter(model)
    sampler = make_sampler(0.8, top_k=5)
    drafter.reset(sampler)
    mx.random.seed(0)
    draft = drafter.draft([1, 2, 3], 3)
    q = np.array(draft.probs)
    assert q.shape == (3, 64)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-5)
    assert ((q > 0).sum(-1) == 5).all()  # top-k applied to the draft distribution too
    toks = draft.tokens.tolist()
    assert all(q[i, t] > 0 for i, t in enumerate(toks))
    # first row equals the sampler's distribution of the draft model's next-token logits
    logits = model(mx.array([[1, 2, 3]]))[:, -1]
    ref = np.array(sampler.probabilities(logits - mx.logsumexp(logits, axis=-1, keepdims=True)))[0]
    np.testing.assert_allclose(q[0], ref, rtol=1e-5, atol=1e-7)


def test_draft_model_vocab_mismatch_fails_clearly() -> None:
    drafter = DraftModelDrafter(TinyLM(vocab_size=32, seed=1, n_layers=1))
    with pytest.raises(DraftError, match="vocabulary"):
        drafter.check_vocab(64)
    with pytest.raises(DraftError, match="reset"):
        DraftModelDrafter(TinyLM(seed=1, n_layers=1)).draft([1], 2)
    with pytest.raises(TypeError, match="callable"):
        DraftModelDrafter(3)
