"""Compiled decoding and fused projections on the reference model: token-identical to the plain model.

``Generate(compile=True)`` (mlx_core.generate: StaticKVCache from mlx_core.cache + ``mx.compile``) on the
reference Llama (mlx_core.models, shipped demo weights in float32) against eager ``compile=False``
decoding with growing KVCaches; ``load_model(..., fuse=True)`` / ``fuse_projections`` against the unfused
model, for float weights and for a 4-bit conversion made by mlx_core.convert.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.cache import KVCache, StaticKVCache
from mlx_core.convert import convert
from mlx_core.generate import Generate
from mlx_core.models import demo_model_path, fuse_projections, fused_projection_count, load_model

PROMPTS = ["The built-in function", "Return a new list of"]
MAX_TOKENS = 32


@pytest.fixture(scope="module")
def demo() -> tuple[Any, Any]:
    return load_model(demo_model_path(), dtype=mx.float32)


def _run(model: Any, tokenizer: Any, prompt: str, compile: bool, **kwargs: Any) -> tuple[list[int], Any]:
    gen = Generate(
        model, prompt, tokenizer=tokenizer, max_tokens=MAX_TOKENS, eos_token_ids=(), compile=compile, **kwargs
    )
    tokens = list(gen)
    return tokens, gen


@pytest.mark.parametrize("prompt", PROMPTS)
def test_compiled_greedy_equals_eager(demo: tuple[Any, Any], prompt: str) -> None:
    model, tokenizer = demo
    compiled, gen_c = _run(model, tokenizer, prompt, compile=True)
    eager, gen_e = _run(model, tokenizer, prompt, compile=False)
    assert gen_c.compiled and not gen_e.compiled
    assert all(isinstance(c, StaticKVCache) for c in gen_c.caches)
    assert all(isinstance(c, KVCache) for c in gen_e.caches)
    assert len(compiled) == MAX_TOKENS
    assert compiled == eager


@pytest.mark.parametrize("seed", [0, 7])
def test_compiled_seeded_sampling_equals_eager(demo: tuple[Any, Any], seed: int) -> None:
    model, tokenizer = demo
    options = {"temperature": 0.9, "top_p": 0.95, "seed": seed}
    compiled, _ = _run(model, tokenizer, PROMPTS[0], compile=True, **options)
    eager, _ = _run(model, tokenizer, PROMPTS[0], compile=False, **options)
    again, _ = _run(model, tokenizer, PROMPTS[0], compile=True, **options)
    greedy, _ = _run(model, tokenizer, PROMPTS[0], compile=False)
    assert compiled == eager == again
    assert compiled != greedy  # the sampler really sampled (else this test would prove nothing new)


def test_compiled_sampling_seeds_differ(demo: tuple[Any, Any]) -> None:
    model, tokenizer = demo
    a, _ = _run(model, tokenizer, PROMPTS[1], compile=True, temperature=1.0, seed=1)
    b, _ = _run(model, tokenizer, PROMPTS[1], compile=True, temperature=1.0, seed=2)
    assert a != b


def test_load_model_fuse_gives_identical_greedy_tokens_and_logits(demo: tuple[Any, Any]) -> None:
    model, tokenizer = demo
    fused, _ = load_model(demo_model_path(), dtype=mx.float32, fuse=True)
    layers = len(model.layers)
    assert fused_projection_count(fused) == 2 * layers and fused_projection_count(model) == 0
    assert "qkv_proj" in fused.layers[0].self_attn and "gate_up_proj" in fused.layers[0].mlp
    tokens = mx.array([tokenizer.encode(PROMPTS[0] + " " + PROMPTS[1])])
    np.testing.assert_allclose(np.array(fused(tokens)), np.array(model(tokens)), rtol=1e-5, atol=1e-5)
    for prompt in PROMPTS:
        plain, _ = _run(model, tokenizer, prompt, compile=False)
        for compile in (False, True):
            assert _run(fused, tokenizer, prompt, compile=compile)[0] == plain


def test_fuse_projections_on_a_converted_4bit_model(tmp_path: Path) -> None:
    """convert (float32, 4-bit) → load → fuse_projections in place: greedy tokens of the unfused model."""
    q4 = convert(
        demo_model_path(), tmp_path / "demo-q4", dtype="float32", quantize=True, q_bits=4, quiet=True
    )
    model, tokenizer = load_model(q4)
    assert model.layers[0].self_attn.q_proj.bits == 4
    fused, _ = load_model(q4)
    fuse_projections(fused)
    assert fused_projection_count(fused) == 2 * len(fused.layers)
    assert fused.layers[0].self_attn.qkv_proj.bits == 4
    for prompt in PROMPTS:
        plain, _ = _run(model, tokenizer, prompt, compile=False)
        assert _run(fused, tokenizer, prompt, compile=False)[0] == plain
        assert _run(fused, tokenizer, prompt, compile=True)[0] == plain
