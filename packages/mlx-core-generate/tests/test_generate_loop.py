"""The generation loop: token parity with mlx-lm's generate_step, caches, reuse, builder, errors."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.generate import (
    Generate,
    GenerateError,
    ModelInput,
    ModelOutputError,
    PromptError,
    Response,
    forward_logits,
    generate,
    make_logits_processors,
    make_sampler,
    prefill,
    stream_generate,
)

STEPS = 64


def _prompt(n: int, seed: int = 0, vocab: int = 97) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab, size=n).tolist()


def _our_caches(kind: str, model: Any) -> list[Any]:
    cache = pytest.importorskip("mlx_core.cache")
    n = len(model.layers)
    if kind == "kv":
        return [cache.KVCache() for _ in range(n)]
    return [cache.RotatingKVCache(max_size=48, keep=4) for _ in range(n)]


def _their_caches(kind: str, model: Any) -> list[Any]:
    mc = pytest.importorskip("mlx_lm.models.cache")
    n = len(model.layers)
    if kind == "kv":
        return [mc.KVCache() for _ in range(n)]
    return [mc.RotatingKVCache(max_size=48, keep=4) for _ in range(n)]


def _mlx_lm_tokens(model: Any, prompt: list[int], caches: list[Any], step: int, **kw: Any) -> list[int]:
    gen = pytest.importorskip("mlx_lm.generate")
    out = gen.generate_step(
        mx.array(prompt), model, max_tokens=STEPS, prompt_cache=caches, prefill_step_size=step, **kw
    )
    return [int(t) for t, _ in out]


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["kv", "rotating"])
@pytest.mark.parametrize("step", [2048, 7])
def test_greedy_parity_with_mlx_lm(tiny_llama: Any, kind: str, step: int) -> None:
    prompt = _prompt(30)
    want = _mlx_lm_tokens(tiny_llama, prompt, _their_caches(kind, tiny_llama), step)
    ours = list(
        Generate(
            tiny_llama, prompt, max_tokens=STEPS, prefill_step_size=step, caches=_our_caches(kind, tiny_llama)
        )
    )
    assert ours == want
    # mlx-lm's own caches in our loop: the loop itself is identical too.
    theirs = list(
        Generate(
            tiny_llama,
            prompt,
            max_tokens=STEPS,
            prefill_step_size=step,
            caches=_their_caches(kind, tiny_llama),
        )
    )
    assert theirs == want


@pytest.mark.parity
def test_default_caches_and_sampling_parity(tiny_llama: Any) -> None:
    """Seeded temperature sampling with processors equals mlx-lm's for the same seed."""
    su = pytest.importorskip("mlx_lm.sample_utils")
    prompt = _prompt(12, seed=3)
    procs_kw = dict(repetition_penalty=1.3, logit_bias={5: 2.0})
    mx.random.seed(21)
    want = _mlx_lm_tokens(
        tiny_llama,
        prompt,
        _their_caches("kv", tiny_llama),
        2048,
        sampler=su.make_sampler(temp=0.8, top_k=20),
        logits_processors=su.make_logits_processors(**procs_kw),
    )
    ours = list(
        Generate(
            tiny_llama,
            prompt,
            max_tokens=STEPS,
            sampler=make_sampler(0.8, top_k=20),
            logits_processors=make_logits_processors(**procs_kw),
            seed=21,
        )
    )
    assert ours == want


def test_cache_reuse_across_two_calls_equals_one_long_call(tiny_llama: Any) -> None:
    cache = pytest.importorskip("mlx_core.cache")
    p1, p2 = _prompt(20, seed=1), _prompt(9, seed=2)
    caches = cache.make_prompt_cache(tiny_llama)
    first = list(Generate(tiny_llama, p1, max_tokens=10, caches=caches))
    assert caches[0].offset == len(p1) + len(first)
    second = list(Generate(tiny_llama, p2, max_tokens=12, caches=caches))
    once = list(Generate(tiny_llama, p1 + first + p2, max_tokens=12))
    assert second == once


def test_seeded_runs_are_reproducible_and_seeds_differ(tiny_llama: Any) -> None:
    prompt = _prompt(8, seed=4)
    a = list(Generate(tiny_llama, prompt, temperature=1.0, max_tokens=16, seed=5))
    b = list(Generate(tiny_llama, prompt, temperature=1.0, max_tokens=16, seed=5))
    c = list(Generate(tiny_llama, prompt, temperature=1.0, max_tokens=16, seed=6))
    assert a == b and a != c


def test_eos_list_stops_and_is_excluded(tiny_llama: Any) -> None:
    prompt = _prompt(10, seed=5)
    free = list(Generate(tiny_llama, prompt, max_tokens=20))
    eos = {free[6], 10_000}
    first = next(i for i, t in enumerate(free) if t in eos)
    gen = Generate(tiny_llama, prompt, max_tokens=20, eos_token_ids=eos)
    resp = gen.run()
    assert resp.tokens == free[:first] and resp.finish_reason == "stop"
    assert resp.generation_tokens == first + 1 and resp.prompt_tokens == 10
    assert isinstance(resp, Response) and resp.generation_tps > 0 and resp.prompt_tps > 0


def test_max_tokens_and_zero(tiny_llama: Any) -> None:
    resp = generate(tiny_llama, _prompt(5), max_tokens=7)
    assert len(resp.tokens) == 7 and resp.finish_reason == "length"
    assert list(Generate(tiny_llama, _prompt(5), max_tokens=0)) == []


def test_progress_callback_and_chunks(tiny_llama: Any) -> None:
    calls: list[tuple[int, int]] = []
    list(
        Generate(
            tiny_llama,
            _prompt(23),
            max_tokens=2,
            prefill_step_size=5,
            prompt_progress=lambda d, t: calls.append((d, t)),
        )
    )
    assert calls == [(0, 23), (5, 23), (10, 23), (15, 23), (20, 23), (22, 23), (23, 23)]


def test_builder_equals_keywords_and_validates(tiny_llama: Any) -> None:
    prompt = _prompt(6, seed=9)
    built = Generate.builder().model(tiny_llama).prompt(prompt).temperature(0.0).max_tokens(9).build()
    assert list(built) == list(Generate(tiny_llama, prompt, max_tokens=9))
    with pytest.raises(GenerateError, match="prompt"):
        Generate.builder().model(tiny_llama).build()
    with pytest.raises(GenerateError, match="model"):
        Generate.builder().prompt(prompt).build()


def test_single_use(tiny_llama: Any) -> None:
    gen = Generate(tiny_llama, _prompt(4), max_tokens=2)
    list(gen)
    with pytest.raises(RuntimeError, match="once"):
        list(gen)


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ([], "empty"),
        ([[1, 2], [3, 4]], "batch"),
        ([[[1]]], "1-D"),
        ([0.5, 1.5], "integer"),
        ("hi", "tokenizer"),
    ],
)
def test_prompt_errors(tiny_llama: Any, prompt: Any, match: str) -> None:
    with pytest.raises(PromptError, match=match):
        Generate(tiny_llama, prompt)


def test_bad_temperature_and_prefill_step(tiny_llama: Any) -> None:
    with pytest.raises(ValueError, match="temperature"):
        Generate(tiny_llama, [1, 2], temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        Generate(tiny_llama, [1, 2], temperature=1.0, top_p=0.0)
    with pytest.raises(GenerateError, match="prefill_step_size"):
        Generate(tiny_llama, [1, 2], prefill_step_size=0)


class _WrongShape:
    layers: tuple[Any, ...] = (object(),)

    def make_cache(self) -> list[Any]:
        return []

    def __call__(self, x: mx.array, cache: Any = None) -> mx.array:
        return mx.zeros((x.shape[0], 10))


def test_wrong_logits_shape_raises() -> None:
    with pytest.raises(ModelOutputError, match=r"\[B, L, V\]"):
        list(Generate(_WrongShape(), [1, 2, 3], max_tokens=2))
    with pytest.raises(ModelOutputError, match="logits"):
        forward_logits(lambda x, cache=None: "nope", mx.array([[1]]), [])


class _Wrapped:
    """Returns an object with .logits, and one that takes ModelInput; both wrap the tiny Llama."""

    def __init__(self, inner: Any, model_input: bool) -> None:
        self.inner = inner
        self.layers = inner.layers
        self.accepts_model_input = model_input
        self.seen: list[ModelInput] = []

    def __call__(self, x: Any, cache: Any = None) -> Any:
        if self.accepts_model_input:
            self.seen.append(x)
            x, cache = x.tokens, x.caches
        logits = self.inner(x, cache=cache)
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("model_input", [False, True])
def test_model_output_and_model_input_protocols(tiny_llama: Any, model_input: bool) -> None:
    prompt = _prompt(9, seed=8)
    wrapped = _Wrapped(tiny_llama, model_input)
    assert list(Generate(wrapped, prompt, max_tokens=6)) == list(Generate(tiny_llama, prompt, max_tokens=6))
    if model_input:
        assert wrapped.seen and isinstance(wrapped.seen[0], ModelInput)


def test_prefill_fills_caches_and_equals_one_pass(tiny_llama: Any) -> None:
    cache = pytest.importorskip("mlx_core.cache")
    tokens = mx.array([_prompt(17, seed=6)])
    a, b = cache.make_prompt_cache(tiny_llama), cache.make_prompt_cache(tiny_llama)
    prefill(tiny_llama, tokens, a, prefill_step_size=4)
    forward_logits(tiny_llama, tokens, b)
    assert a[0].offset == 17
    last = mx.array([[3]])
    # On CUDA float32 matmuls run on TF32 tensor cores (10-bit mantissa): other chunks, other rounding.
    on_gpu = mx.default_device().type == mx.DeviceType.gpu
    np.testing.assert_allclose(
        np.array(forward_logits(tiny_llama, last, a)),
        np.array(forward_logits(tiny_llama, last, b)),
        **({"rtol": 5e-3, "atol": 5e-3} if on_gpu else {"atol": 1e-4}),
    )


def test_stream_generate_chunks(tiny_llama: Any) -> None:
    chunks = list(stream_generate(tiny_llama, _prompt(5), max_tokens=4))
    assert [c.finish_reason for c in chunks] == [None, None, None, "length"]
    assert [c.token for c in chunks] == list(Generate(tiny_llama, _prompt(5), max_tokens=4))


def test_decodes_on_the_callers_stream_and_leaves_it_set(tiny_llama: Any) -> None:
    """The loop enters no stream of its own: while it is suspended at a token the caller's default stream
    is unchanged, and a stream chosen with ``mx.stream`` gives the same tokens."""
    prompt = _prompt(12, seed=8)
    want = list(Generate(tiny_llama, prompt, max_tokens=10))
    device = mx.default_device()
    before = mx.default_stream(device)
    gen = iter(Generate(tiny_llama, prompt, max_tokens=10))
    first = next(gen)
    assert mx.default_stream(device) == before
    assert [first, *gen] == want
    with mx.stream(mx.new_stream(device)):
        assert list(Generate(tiny_llama, prompt, max_tokens=10)) == want
