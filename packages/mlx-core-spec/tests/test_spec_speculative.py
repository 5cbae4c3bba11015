"""SpeculativeGenerate at temperature 0: token-identical to greedy `Generate` of the target."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.cache import KVCache, RotatingKVCache
from mlx_core.generate import Generate, make_logits_processors, make_sampler
from mlx_core.spec import (
    AdaptiveDraftLength,
    DraftError,
    DraftModelDrafter,
    PromptLookupDrafter,
    SpeculativeError,
    SpeculativeGenerate,
    SpeculativeResponse,
    speculative_generate,
)
from spec_helpers import TinyLM

TARGET = TinyLM(seed=0)
UNRELATED = TinyLM(seed=1, n_layers=1)
# 236 + 36 tokens: the caches cross KVCache's 256-token growth step during decoding.
LONG_PROMPT = [int(x) for x in np.random.default_rng(0).integers(0, 64, 236)]
MAX_TOKENS = 36
_REF: dict[Any, list[int]] = {}


def _greedy_reference(prompt: list[int], max_tokens: int = MAX_TOKENS, **kw: Any) -> list[int]:
    key = (tuple(prompt), max_tokens, tuple(sorted((k, repr(v)) for k, v in kw.items())))
    if key not in _REF:
        _REF[key] = list(Generate(TARGET, prompt, max_tokens=max_tokens, **kw))
    return _REF[key]


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_draft_equal_to_target_accepts_everything(k: int) -> None:
    r = SpeculativeGenerate(
        TARGET, LONG_PROMPT, max_tokens=MAX_TOKENS, draft_model=TARGET, num_draft_tokens=k
    ).run()
    assert isinstance(r, SpeculativeResponse)
    assert r.tokens == _greedy_reference(LONG_PROMPT)
    assert r.metrics.acceptance_rate == 1.0
    assert r.metrics.mean_accepted_length == pytest.approx(MAX_TOKENS / r.metrics.target_forwards)
    assert r.metrics.target_forwards == -(-MAX_TOKENS // (k + 1))
    assert r.finish_reason == "length" and r.generation_tokens == MAX_TOKENS


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_unrelated_draft_mostly_rejected_still_identical(k: int) -> None:
    r = SpeculativeGenerate(
        TARGET, LONG_PROMPT, max_tokens=MAX_TOKENS, draft_model=UNRELATED, num_draft_tokens=k
    ).run()
    assert r.tokens == _greedy_reference(LONG_PROMPT)
    assert r.metrics.acceptance_rate < 0.5
    assert r.metrics.drafted > 0


def _repetitive_prompt() -> list[int]:
    rng = np.random.default_rng(5)
    passage = [int(x) for x in rng.integers(0, 64, 60)]
    return passage + passage[:30] + passage + passage[:50]  # 230 tokens


@pytest.mark.parametrize("num", [3, 10, "adaptive"])
def test_prompt_lookup_identical(num: Any) -> None:
    prompt = _repetitive_prompt()
    r = SpeculativeGenerate(TARGET, prompt, max_tokens=MAX_TOKENS, num_draft_tokens=num).run()
    assert r.tokens == _greedy_reference(prompt)
    assert r.metrics.drafted > 0


def test_rotating_kv_cache_on_both_models() -> None:
    caches = [RotatingKVCache(max_size=512, keep=4) for _ in TARGET.layers]
    draft_caches = [RotatingKVCache(max_size=512, keep=4) for _ in UNRELATED.layers]
    ref = list(
        Generate(
            TARGET,
            LONG_PROMPT,
            max_tokens=MAX_TOKENS,
            caches=[RotatingKVCache(512, keep=4) for _ in range(2)],
        )
    )
    drafter = DraftModelDrafter(UNRELATED, caches=draft_caches)
    r = SpeculativeGenerate(
        TARGET, LONG_PROMPT, max_tokens=MAX_TOKENS, caches=caches, drafter=drafter, num_draft_tokens=4
    ).run()
    assert r.tokens == ref
    # exactly the emitted tokens are cached (prompt + every emitted token), as Generate leaves them
    assert caches[0].offset == len(LONG_PROMPT) + MAX_TOKENS
    assert draft_caches[0].offset <= len(LONG_PROMPT) + MAX_TOKENS


def test_target_cache_holds_exactly_the_accepted_tokens() -> None:
    caches = [KVCache() for _ in TARGET.layers]
    r = SpeculativeGenerate(
        TARGET, LONG_PROMPT, max_tokens=MAX_TOKENS, caches=caches, draft_model=UNRELATED, num_draft_tokens=5
    ).run()
    assert caches[0].offset == len(LONG_PROMPT) + len(r.tokens)


def test_logits_processors_applied_like_generate() -> None:
    procs = make_logits_processors(logit_bias={5: 1.5}, repetition_penalty=1.5, repetition_context_size=8)
    prompt = LONG_PROMPT[:40]
    ref = list(Generate(TARGET, prompt, max_tokens=30, logits_processors=procs))
    for kw in ({"draft_model": TARGET}, {"draft_model": UNRELATED}, {}):
        r = SpeculativeGenerate(
            TARGET, prompt, max_tokens=30, logits_processors=procs, num_draft_tokens=4, **kw
        )
        assert list(r) == ref
    plain = list(Generate(TARGET, prompt, max_tokens=30))
    assert plain != ref  # the processors matter here


class CharTokenizer:
    """Token i ↔ one lowercase letter (mod 26) — enough for stop strings and streaming."""

    eos_token_ids = frozenset({63})

    def encode(self, text: str) -> list[int]:
        return [ord(c) - 97 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def test_stop_strings_eos_and_streaming_match_generate() -> None:
    tok = CharTokenizer()
    prompt = LONG_PROMPT[:30]
    full = list(Generate(TARGET, prompt, max_tokens=40))
    text = tok.decode(full)
    stop = text[20:23]  # a stop string that occurs mid-way
    for eos in ({63}, {full[12]}):
        ref = list(
            Generate(TARGET, prompt, tokenizer=tok, max_tokens=40, stop=[stop], eos_token_ids=eos).stream()
        )
        caches = [KVCache() for _ in TARGET.layers]
        got = list(
            SpeculativeGenerate(
                TARGET,
                prompt,
                tokenizer=tok,
                max_tokens=40,
                stop=[stop],
                eos_token_ids=eos,
                draft_model=TARGET,
                num_draft_tokens=5,
                caches=caches,
            ).stream()
        )
        # tokens drafted past the stop were rolled back: the cache ends with the last emitted token
        assert caches[0].offset == len(prompt) + len(got)
        assert [(c.text, c.token, c.finish_reason) for c in got] == [
            (c.text, c.token, c.finish_reason) for c in ref
        ]
        assert got[-1].finish_reason == "stop"


def test_builder_and_function_forms() -> None:
    prompt = LONG_PROMPT[:20]
    ref = _greedy_reference(prompt, 12)
    g = SpeculativeGenerate.builder().model(TARGET).prompt(prompt).max_tokens(12).draft_model(UNRELATED)
    assert list(g.num_draft_tokens(3).build()) == ref
    assert speculative_generate(TARGET, prompt, max_tokens=12, drafter=PromptLookupDrafter()).tokens == ref
    with pytest.raises(SpeculativeError, match="missing"):
        SpeculativeGenerate.builder().model(TARGET).build()
    r = SpeculativeGenerate(TARGET, prompt, max_tokens=0).run()
    assert r.tokens == [] and r.finish_reason == "length"
    policy = AdaptiveDraftLength(initial=2, maximum=6)
    r = SpeculativeGenerate(TARGET, prompt, max_tokens=30, draft_model=TARGET, num_draft_tokens=policy).run()
    assert policy.current == 6 and r.tokens == _greedy_reference(prompt, 30)


class _UntrimmableCache(KVCache):
    def is_trimmable(self) -> bool:
        return False


def test_clear_errors_up_front() -> None:
    prompt = LONG_PROMPT[:10]
    with pytest.raises(SpeculativeError, match="cannot be trimmed"):
        SpeculativeGenerate(TARGET, prompt, caches=[_UntrimmableCache() for _ in range(2)])
    with pytest.raises(DraftError, match="cannot be trimmed"):
        SpeculativeGenerate(
            TARGET, prompt, drafter=DraftModelDrafter(UNRELATED, caches=[_UntrimmableCache()])
        ).run()
    with pytest.raises(DraftError, match="vocabulary"):
        SpeculativeGenerate(TARGET, prompt, draft_model=TinyLM(vocab_size=32, seed=2, n_layers=1)).run()
    with pytest.raises(SpeculativeError, match="XTC"):
        SpeculativeGenerate(TARGET, prompt, sampler=make_sampler(0.7, xtc_probability=0.5, xtc_threshold=0.1))
    with pytest.raises(SpeculativeError, match="probabilities"):
        SpeculativeGenerate(TARGET, prompt, sampler=lambda logprobs: mx.argmax(logprobs, axis=-1))
    with pytest.raises(SpeculativeError, match="not both"):
        SpeculativeGenerate(TARGET, prompt, drafter=PromptLookupDrafter(), draft_model=UNRELATED)
    with pytest.raises(SpeculativeError, match="num_draft_tokens"):
        SpeculativeGenerate(TARGET, prompt, num_draft_tokens="many")
