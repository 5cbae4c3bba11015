"""Temperature > 0: the distribution of whole generated sequences equals the target's, exactly.

A tiny-vocabulary `LookupLM` (history-dependent through its KV cache) lets us enumerate the exact
probability of every 3-token continuation in float64 numpy; thousands of seeded `SpeculativeGenerate` runs
must pass a chi-square goodness-of-fit test against it, and sampling from the draft alone must fail it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.generate import Generate, make_sampler
from mlx_core.spec import DraftModelDrafter, PromptLookupDrafter, SpeculativeGenerate
from spec_helpers import LookupLM, chi_square_pvalue, filtered_probs_np, sequence_probs_np

TARGET = LookupLM(vocab_size=4, seed=0)
DRAFT = LookupLM(vocab_size=4, seed=11)
PROMPT = [0, 1, 2, 3, 0, 1]  # "0 1" recurs: prompt lookup proposes "2 3" (then "0 1 ...")
LENGTH = 3
RUNS = 1500
RUNS_E2E = 800

FILTERS = {
    "plain": {"temperature": 1.0},
    "topk_topp": {"temperature": 0.8, "top_k": 3, "top_p": 0.9},
}


def _counts(make: Any) -> Counter:
    counts: Counter = Counter()
    for seed in range(RUNS):
        counts[tuple(make(seed))] += 1
    return counts


def _sampler(cfg: dict[str, float]) -> Any:
    return make_sampler(cfg["temperature"], top_p=cfg.get("top_p", 1.0), top_k=int(cfg.get("top_k", 0)))


def test_reference_model_matches_numpy() -> None:
    """The enumerated probabilities rest on logits_np; check it against the cached MLX forward."""
    seq = [*PROMPT, 3, 2, 2, 1]
    logits = np.array(TARGET(mx.array(seq)[None])[0])
    for t in range(len(seq)):
        np.testing.assert_allclose(logits[t], TARGET.logits_np(seq[: t + 1]), rtol=1e-5, atol=1e-5)
    probs = sequence_probs_np(TARGET, PROMPT, LENGTH, **FILTERS["plain"])
    assert len(probs) == 4**LENGTH and sum(probs.values()) == pytest.approx(1.0)
    # the filtered reference drops entries exactly like the sampler
    lp = TARGET.logits_np(PROMPT)
    ref = filtered_probs_np(lp, 0.8, top_k=3, top_p=0.9)
    lp_mx = mx.array(lp.astype(np.float32))[None]
    got = np.array(_sampler(FILTERS["topk_topp"]).probabilities(lp_mx - mx.logsumexp(lp_mx, axis=-1)))[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    assert (ref == 0).sum() >= 1


@pytest.mark.slow
@pytest.mark.parametrize("drafter_kind", ["draft_model", "prompt_lookup"])
@pytest.mark.parametrize("filters", sorted(FILTERS))
def test_speculative_sampling_matches_exact_distribution(drafter_kind: str, filters: str) -> None:
    cfg = FILTERS[filters]
    sampler = _sampler(cfg)
    expected = sequence_probs_np(TARGET, PROMPT, LENGTH, **cfg)

    def run(seed: int) -> list[int]:
        drafter = DraftModelDrafter(DRAFT) if drafter_kind == "draft_model" else PromptLookupDrafter(3, 10)
        gen = SpeculativeGenerate(
            TARGET, PROMPT, max_tokens=LENGTH, sampler=sampler, drafter=drafter, num_draft_tokens=2, seed=seed
        )
        tokens = list(gen)
        run.accepted += gen.metrics.accepted  # type: ignore[attr-defined]
        run.drafted += gen.metrics.drafted  # type: ignore[attr-defined]
        return tokens

    run.accepted = run.drafted = 0  # type: ignore[attr-defined]
    counts = _counts(run)
    assert chi_square_pvalue(counts, expected) > 1e-3
    # the rejection path and the accept path were both exercised
    assert 0 < run.accepted < run.drafted  # type: ignore[attr-defined]


@pytest.mark.slow
def test_negative_control_sampling_from_draft_fails() -> None:
    sampler = _sampler(FILTERS["plain"])
    counts = _counts(
        lambda seed: list(Generate(DRAFT, PROMPT, max_tokens=LENGTH, sampler=sampler, seed=seed))
    )
    expected = sequence_probs_np(TARGET, PROMPT, LENGTH, **FILTERS["plain"])
    assert chi_square_pvalue(counts, expected) < 1e-6
    # while the same test accepts the draft's own distribution (the test is calibrated, not just strict)
    assert chi_square_pvalue(counts, sequence_probs_np(DRAFT, PROMPT, LENGTH, **FILTERS["plain"])) > 1e-3


def test_end_to_end_acceptance_is_sum_min_not_sum_pq() -> None:
    """One draft token per run (k = 1, max_tokens = 2): acceptance ≈ Σ min(p, q) of the first step."""
    sampler = make_sampler(1.0)
    p = filtered_probs_np(TARGET.logits_np(PROMPT), 1.0)
    q = filtered_probs_np(DRAFT.logits_np(PROMPT), 1.0)
    sum_min, sum_pq = np.minimum(p, q).sum(), (p * q).sum()
    runs, accepted = RUNS_E2E, 0
    for seed in range(runs):
        gen = SpeculativeGenerate(
            TARGET, PROMPT, max_tokens=2, sampler=sampler, draft_model=DRAFT, num_draft_tokens=1, seed=seed
        )
        gen.run()
        assert gen.metrics.drafted == 1
        accepted += gen.metrics.accepted
    sigma = np.sqrt(sum_min * (1 - sum_min) / runs)
    assert abs(accepted / runs - sum_min) < 4 * sigma
    assert abs(sum_min - sum_pq) > 8 * sigma  # the two hypotheses are far apart for this pair
