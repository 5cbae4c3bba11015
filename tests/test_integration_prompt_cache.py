"""Interrupt a generation, save its caches to disk, load them and continue: same tokens as one run.

The reference model (mlx_core.models, the shipped demo weights in float32) builds its caches
(``model.make_cache``: mlx_core.cache's KVCache, QuantizedKVCache, RotatingKVCache,
QuantizedRotatingKVCache); ``Generate`` (mlx_core.generate) decodes greedily with them; the caches go
through ``save_prompt_cache``/``load_prompt_cache``. The reference is one uninterrupted greedy run with a
fresh cache of the same type.

How a run leaves its caches: after ``Generate(..., max_tokens=k)`` yielded t1..tk the caches hold the
prompt and t1..tk (tk was fed to compute the step after it). So a continuation either rolls back tk
(``trim_prompt_cache(caches, 1)``) and feeds it again, or keeps the caches and feeds t(k+1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_core.cache import (
    KVCache,
    QuantizedKVCache,
    QuantizedRotatingKVCache,
    RotatingKVCache,
    load_prompt_cache,
    save_prompt_cache,
    trim_prompt_cache,
)
from mlx_core.generate import Generate
from mlx_core.models import demo_model_path, load_model

PROMPT = "The built-in function len() returns the number of items"
TOTAL = 40  # tokens of the uninterrupted run
FIRST = 16  # tokens generated before the interruption
WINDOW = 24  # rotating caches: prompt + FIRST > WINDOW, so they have wrapped when saved

KINDS: dict[str, tuple[dict[str, Any], type]] = {
    "kv": ({}, KVCache),
    "quantized": ({"kv_bits": 8, "kv_group_size": 64}, QuantizedKVCache),
    "quantized4": ({"kv_bits": 4, "kv_group_size": 32}, QuantizedKVCache),
    "rotating": ({"max_kv_size": WINDOW}, RotatingKVCache),
    "quantized_rotating": ({"max_kv_size": WINDOW, "kv_bits": 8}, QuantizedRotatingKVCache),
}


@pytest.fixture(scope="module")
def demo() -> tuple[Any, list[int]]:
    model, tokenizer = load_model(demo_model_path(), dtype=mx.float32)
    prompt = tokenizer.encode(PROMPT)
    assert 4 < len(prompt) < WINDOW and len(prompt) + FIRST > WINDOW
    return model, prompt


def _generate(model: Any, prompt: list[int], caches: list[Any], max_tokens: int) -> list[int]:
    # eos_token_ids=(): always exactly max_tokens tokens, so runs of different lengths line up.
    return list(Generate(model, prompt, caches=caches, max_tokens=max_tokens, eos_token_ids=()))


@pytest.fixture(scope="module")
def uninterrupted(demo: tuple[Any, list[int]]) -> dict[str, list[int]]:
    model, prompt = demo
    runs = {}
    for kind, (options, cls) in KINDS.items():
        caches = model.make_cache(**options)
        assert all(type(c) is cls for c in caches)
        runs[kind] = _generate(model, prompt, caches, TOTAL)
        assert len(runs[kind]) == TOTAL
    return runs


def _states(caches: list[Any]) -> list[np.ndarray]:
    flat: Any = tree_flatten([c.state for c in caches])
    return [np.array(v) for _, v in flat]


def _save_and_load(caches: list[Any], path: Path) -> list[Any]:
    save_prompt_cache(path, caches, metadata={"prompt": PROMPT, "kind": type(caches[0]).__name__})
    loaded, metadata = load_prompt_cache(path, return_metadata=True)
    assert metadata == {"prompt": PROMPT, "kind": type(caches[0]).__name__}
    assert [type(c) for c in loaded] == [type(c) for c in caches]
    assert [c.offset for c in loaded] == [c.offset for c in caches]
    assert [c.meta_state for c in loaded] == [c.meta_state for c in caches]
    for a, b in zip(_states(loaded), _states(caches), strict=True):
        np.testing.assert_array_equal(a, b)
    return loaded


@pytest.mark.parametrize("kind", list(KINDS))
def test_continue_from_loaded_caches_feeding_next_token(
    demo: tuple[Any, list[int]], uninterrupted: dict[str, list[int]], kind: str, tmp_path: Path
) -> None:
    model, prompt = demo
    reference = uninterrupted[kind]
    caches = model.make_cache(**KINDS[kind][0])
    first = _generate(model, prompt, caches, FIRST)
    assert first == reference[:FIRST]
    assert all(c.offset == len(prompt) + FIRST for c in caches)
    loaded = _save_and_load(caches, tmp_path / "cache")  # ".safetensors" appended
    assert (tmp_path / "cache.safetensors").is_file()
    rest = _generate(model, [reference[FIRST]], loaded, TOTAL - FIRST - 1)
    assert rest == reference[FIRST + 1 :]


@pytest.mark.parametrize("kind", ["kv", "quantized", "quantized4"])
def test_roll_back_last_token_save_load_and_continue(
    demo: tuple[Any, list[int]], uninterrupted: dict[str, list[int]], kind: str, tmp_path: Path
) -> None:
    """The loaded caches produce t(k+1) themselves: nothing of the reference run is fed in."""
    model, prompt = demo
    reference = uninterrupted[kind]
    caches = model.make_cache(**KINDS[kind][0])
    first = _generate(model, prompt, caches, FIRST)
    assert trim_prompt_cache(caches, 1) == 1
    loaded = _save_and_load(caches, tmp_path / "cache.safetensors")
    rest = _generate(model, [first[-1]], loaded, TOTAL - FIRST)
    assert first + rest == reference


def test_quantized_cache_really_changes_the_computation(demo: tuple[Any, list[int]]) -> None:
    """Guards the quantized cases above against silently running unquantized: 4-bit KV moves the logits."""
    model, prompt = demo
    tokens = mx.array([prompt])
    full = model(tokens, cache=model.make_cache())
    quant = model(tokens, cache=model.make_cache(kv_bits=4, kv_group_size=32))
    diff = float(mx.abs(full - quant).max())
    assert 0.0 < diff < 0.5 * float(mx.abs(full).max())


def test_rotating_cache_forgets_beyond_its_window(
    demo: tuple[Any, list[int]], uninterrupted: dict[str, list[int]]
) -> None:
    """Guards the rotating cases: the windowed run attends to less, so its logits leave the full run's."""
    model, prompt = demo
    tokens = mx.array([prompt + uninterrupted["kv"][:FIRST]])
    full = model(tokens, cache=model.make_cache())
    caches = model.make_cache(max_kv_size=8)
    windowed = mx.concatenate([model(tokens[:, i : i + 1], cache=caches) for i in range(tokens.shape[1])], 1)
    np.testing.assert_allclose(np.array(windowed[:, :8]), np.array(full[:, :8]), rtol=1e-4, atol=1e-4)
    assert float(mx.abs(windowed[:, -1] - full[:, -1]).max()) > 1e-2


def test_generate_max_kv_size_bounds_the_reference_model_caches(
    demo: tuple[Any, list[int]], uninterrupted: dict[str, list[int]]
) -> None:
    model, prompt = demo
    gen = Generate(model, prompt, max_kv_size=WINDOW, max_tokens=TOTAL, eos_token_ids=())
    tokens = list(gen)
    assert all(isinstance(c, RotatingKVCache) and c.max_size == WINDOW for c in gen.caches)
    assert tokens == uninterrupted["rotating"]
