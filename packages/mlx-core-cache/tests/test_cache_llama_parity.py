"""An mlx-lm Llama with random weights gives identical logits with our caches as with mlx-lm's own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.cache import KVCache, QuantizedKVCache, RotatingKVCache, StaticKVCache

pytestmark = pytest.mark.parity

PREFILL, DECODE = 300, 40


@pytest.fixture(scope="module")
def model() -> Any:
    llama = pytest.importorskip("mlx_lm.models.llama")
    mx.random.seed(0)
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=97,
        head_dim=32,
    )
    m = llama.Model(args)
    mx.eval(m.parameters())
    return m


def run(model: Any, make: Callable[[], Any]) -> list[mx.array]:
    tokens = mx.array(np.random.default_rng(0).integers(0, 97, PREFILL + DECODE))
    caches = [make() for _ in model.layers]
    outs = [model(tokens[None, :PREFILL], cache=caches)[:, -1]]
    for t in range(PREFILL, PREFILL + DECODE):
        outs.append(model(tokens[None, t : t + 1], cache=caches)[:, -1])
        mx.eval(outs[-1])
    return outs


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("KVCache", lambda C: C.KVCache()),
        ("RotatingKVCache", lambda C: C.RotatingKVCache(128, keep=4)),
        ("QuantizedKVCache", lambda C: C.QuantizedKVCache(group_size=32, bits=8)),
    ],
)
def test_identical_logits(model: Any, ours: str, theirs: Callable[[Any], Any]) -> None:
    C = pytest.importorskip("mlx_lm.models.cache")
    factory = {
        "KVCache": KVCache,
        "RotatingKVCache": lambda: RotatingKVCache(128, keep=4),
        "QuantizedKVCache": lambda: QuantizedKVCache(group_size=32, bits=8),
    }[ours]
    a, b = run(model, factory), run(model, lambda: theirs(C))
    for x, y in zip(a, b, strict=False):
        assert mx.array_equal(x, y)


def test_static_cache_matches_kvcache_logits(model: Any) -> None:
    a, b = run(model, lambda: StaticKVCache(PREFILL + DECODE)), run(model, KVCache)
    for x, y in zip(a, b, strict=False):
        np.testing.assert_allclose(np.array(x), np.array(y), rtol=1e-5, atol=1e-5)
