"""The same guarantees on MLX's CUDA backend (skipped without it)."""

from __future__ import annotations

from collections import Counter

import mlx.core as mx
import pytest
from mlx_core.generate import Generate, make_sampler
from mlx_core.spec import PromptLookupDrafter, SpeculativeGenerate
from spec_helpers import LookupLM, TinyLM, chi_square_pvalue, sequence_probs_np

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend"),
]


def test_greedy_identical_on_gpu() -> None:
    with mx.stream(mx.gpu):
        target, draft = TinyLM(seed=0), TinyLM(seed=1, n_layers=1)
        prompt = mx.random.randint(0, 64, (240,)).tolist()
        ref = list(Generate(target, prompt, max_tokens=40))
        for k in (1, 4, 8):
            for d in (target, draft):
                got = SpeculativeGenerate(target, prompt, max_tokens=40, draft_model=d, num_draft_tokens=k)
                assert list(got) == ref


def test_sampling_lossless_on_gpu() -> None:
    with mx.stream(mx.gpu):
        target = LookupLM(vocab_size=4, seed=0)
        prompt = [0, 1, 2, 3, 0, 1]
        sampler = make_sampler(1.0)
        counts: Counter = Counter()
        for seed in range(1000):
            gen = SpeculativeGenerate(
                target, prompt, max_tokens=3, sampler=sampler, drafter=PromptLookupDrafter(), seed=seed
            )
            counts[tuple(gen)] += 1
        assert chi_square_pvalue(counts, sequence_probs_np(target, prompt, 3, temperature=1.0)) > 1e-3
