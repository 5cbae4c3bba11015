"""Speculative decoding on the shipped demo model and draft: lossless at temperature 0, consistent metrics.

``SpeculativeGenerate`` (mlx_core.spec) drives the reference model family (mlx_core.models) with its caches
(mlx_core.cache); plain greedy ``Generate`` (mlx_core.generate) on the same target is the reference.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import pytest
from mlx_core.generate import Generate
from mlx_core.models import demo_model_path, load_model
from mlx_core.spec import (
    DraftModelDrafter,
    PromptLookupDrafter,
    SpecMetrics,
    SpeculativeError,
    SpeculativeGenerate,
)

PROMPTS = [
    "The built-in function",
    "Return a new list",
    'len(s) and the built-in function "len()" returns the',  # repeats itself: prompt lookup finds matches
]
MAX_TOKENS = 48


@pytest.fixture(scope="module")
def demo() -> tuple[Any, Any, Any]:
    """(target, draft, tokenizer), float32 (bf16 matmuls are very slow on CPU)."""
    target, tokenizer = load_model(demo_model_path(), dtype=mx.float32)
    draft, draft_tokenizer = load_model(demo_model_path(draft=True), dtype=mx.float32)
    assert draft_tokenizer.encode(PROMPTS[0]) == tokenizer.encode(PROMPTS[0])
    return target, draft, tokenizer


@pytest.fixture(scope="module")
def greedy(demo: tuple[Any, Any, Any]) -> dict[str, Any]:
    target, _, tokenizer = demo
    return {p: Generate(target, p, tokenizer=tokenizer, max_tokens=MAX_TOKENS).run() for p in PROMPTS}


def _check_metrics(metrics: SpecMetrics, generated: int) -> None:
    assert 0 <= metrics.accepted <= metrics.drafted
    assert metrics.target_forwards >= 1
    assert metrics.emitted == metrics.accepted + metrics.target_forwards
    # The last round may emit more than max_tokens allows; everything returned came from some round.
    assert metrics.emitted >= generated
    assert metrics.mean_accepted_length >= 1.0
    assert metrics.mean_accepted_length == pytest.approx(metrics.emitted / metrics.target_forwards)
    assert 0.0 <= metrics.acceptance_rate <= 1.0
    assert sum(metrics.accepted_per_position) == metrics.accepted
    for accepted, reached, drafted in zip(
        metrics.accepted_per_position,
        metrics.reached_per_position,
        metrics.drafted_per_position,
        strict=True,
    ):
        assert accepted <= reached <= drafted
    # Acceptance can only stop, never resume: reaching position i+1 requires accepting position i.
    for i in range(len(metrics.reached_per_position) - 1):
        assert metrics.reached_per_position[i + 1] <= metrics.accepted_per_position[i]


@pytest.mark.parametrize("num_draft_tokens", [2, 4])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_draft_model_speculation_equals_greedy(
    demo: tuple[Any, Any, Any], greedy: dict[str, Any], prompt: str, num_draft_tokens: int
) -> None:
    target, draft, tokenizer = demo
    result = SpeculativeGenerate(
        target,
        prompt,
        tokenizer=tokenizer,
        draft_model=draft,
        num_draft_tokens=num_draft_tokens,
        max_tokens=MAX_TOKENS,
    ).run()
    reference = greedy[prompt]
    assert result.tokens == reference.tokens
    assert result.text == reference.text
    assert result.finish_reason == reference.finish_reason
    _check_metrics(result.metrics, len(result.tokens))
    # A trained draft of the same data agrees with the target often: speculation actually saved forwards.
    assert result.metrics.accepted > 0
    assert result.metrics.target_forwards < len(result.tokens)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prompt_lookup_speculation_equals_greedy(
    demo: tuple[Any, Any, Any], greedy: dict[str, Any], prompt: str
) -> None:
    target, _, tokenizer = demo
    result = SpeculativeGenerate(
        target, prompt, tokenizer=tokenizer, drafter=PromptLookupDrafter(), max_tokens=MAX_TOKENS
    ).run()
    reference = greedy[prompt]
    assert result.tokens == reference.tokens
    assert result.text == reference.text
    _check_metrics(result.metrics, len(result.tokens))


def test_adaptive_draft_length_and_explicit_drafter_equal_greedy(
    demo: tuple[Any, Any, Any], greedy: dict[str, Any]
) -> None:
    target, draft, tokenizer = demo
    prompt = PROMPTS[1]
    result = SpeculativeGenerate(
        target,
        prompt,
        tokenizer=tokenizer,
        drafter=DraftModelDrafter(draft),
        num_draft_tokens="adaptive",
        max_tokens=MAX_TOKENS,
    ).run()
    assert result.tokens == greedy[prompt].tokens
    _check_metrics(result.metrics, len(result.tokens))


def test_stop_string_cuts_speculative_and_plain_text_identically(
    demo: tuple[Any, Any, Any], greedy: dict[str, Any]
) -> None:
    """Both stop at the same place when a stop string appears mid-generation (shared TextAssembler)."""
    target, draft, tokenizer = demo
    prompt = PROMPTS[0]
    full = greedy[prompt].text
    stop = full.strip().split()[3]  # a word that appears after a few tokens
    plain = Generate(target, prompt, tokenizer=tokenizer, max_tokens=MAX_TOKENS, stop=[stop]).run()
    spec = SpeculativeGenerate(
        target, prompt, tokenizer=tokenizer, draft_model=draft, max_tokens=MAX_TOKENS, stop=[stop]
    ).run()
    assert plain.finish_reason == "stop" and spec.finish_reason == "stop"
    assert spec.text == plain.text == full[: full.index(stop)]
    assert spec.tokens == plain.tokens


@pytest.mark.parametrize(
    "options", [{"kv_bits": 8}, {"max_kv_size": 128}], ids=["quantized", "window-unfilled"]
)
def test_speculation_with_model_caches_equals_greedy_with_the_same_caches(
    demo: tuple[Any, Any, Any], options: dict[str, Any]
) -> None:
    """Quantized KV caches, and rotating ones whose window never fills: still lossless."""
    target, draft, tokenizer = demo
    prompt = PROMPTS[0]
    plain = Generate(
        target, prompt, tokenizer=tokenizer, caches=target.make_cache(**options), max_tokens=MAX_TOKENS
    ).run()
    spec = SpeculativeGenerate(
        target,
        prompt,
        tokenizer=tokenizer,
        caches=target.make_cache(**options),
        draft_model=draft,
        num_draft_tokens=3,
        max_tokens=MAX_TOKENS,
    ).run()
    assert spec.tokens == plain.tokens


@pytest.mark.parametrize("drafting", ["draft-k1", "draft-k3", "prompt-lookup"])
def test_speculation_refuses_a_window_that_would_fill_and_is_exact_within_one(
    demo: tuple[Any, Any, Any], drafting: str
) -> None:
    target, draft, tokenizer = demo
    prompt, window, max_tokens = PROMPTS[0], 24, 60
    plain = list(
        Generate(
            target,
            prompt,
            tokenizer=tokenizer,
            caches=target.make_cache(max_kv_size=window),
            max_tokens=max_tokens,
            eos_token_ids=(),
        )
    )
    drafter: Any = PromptLookupDrafter() if drafting == "prompt-lookup" else DraftModelDrafter(draft)
    assert len(plain) == max_tokens
    # A window that would fill cannot be rolled back losslessly (tokens that slid out are gone), so the
    # run is refused up front with a clear error instead of silently diverging from plain decoding.
    with pytest.raises(SpeculativeError, match="sliding window"):
        SpeculativeGenerate(
            target,
            prompt,
            tokenizer=tokenizer,
            caches=target.make_cache(max_kv_size=window),
            drafter=drafter,
            num_draft_tokens=None if drafting == "prompt-lookup" else int(drafting[-1]),
            max_tokens=max_tokens,
            eos_token_ids=(),
        )
    # A window with room for the whole run (drafts are cut to fit it) stays token-identical.
    roomy = len(tokenizer.encode(prompt)) + max_tokens
    plain_roomy = list(
        Generate(
            target,
            prompt,
            tokenizer=tokenizer,
            caches=target.make_cache(max_kv_size=roomy),
            max_tokens=max_tokens,
            eos_token_ids=(),
        )
    )
    spec = SpeculativeGenerate(
        target,
        prompt,
        tokenizer=tokenizer,
        caches=target.make_cache(max_kv_size=roomy),
        drafter=PromptLookupDrafter() if drafting == "prompt-lookup" else DraftModelDrafter(draft),
        num_draft_tokens=None if drafting == "prompt-lookup" else int(drafting[-1]),
        max_tokens=max_tokens,
        eos_token_ids=(),
    ).run()
    assert spec.tokens == plain_roomy


def test_caches_after_speculative_and_plain_runs_continue_identically(demo: tuple[Any, Any, Any]) -> None:
    target, draft, tokenizer = demo
    prompt, k = tokenizer.encode(PROMPTS[1]), 16
    plain_caches, spec_caches = target.make_cache(), target.make_cache()
    first = list(Generate(target, prompt, caches=plain_caches, max_tokens=k, eos_token_ids=()))
    spec = SpeculativeGenerate(
        target, prompt, caches=spec_caches, draft_model=draft, max_tokens=k, eos_token_ids=()
    ).run()
    assert spec.tokens == first
    next_turn = tokenizer.encode(" Return the")
    a = list(Generate(target, next_turn, caches=plain_caches, max_tokens=16, eos_token_ids=()))
    b = list(Generate(target, next_turn, caches=spec_caches, max_tokens=16, eos_token_ids=()))
    assert spec_caches[0].offset == plain_caches[0].offset
    assert a == b
