"""The fused decode path (three kernels per layer on CUDA) computes what the ordinary layer code computes.

On the CPU the fused ops run as MLX ops, so ``fused_decode("always")`` exercises the whole plumbing (which
weights go where, the cache append, the position, the folded final norm) against ``"never"``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_core.cache import StaticKVCache
from mlx_core.generate import Generate, clear_compiled_steps, make_sampler
from mlx_core.kernels import backend, greedy_tokens
from mlx_core.models import Model, fuse_projections
from mlx_core.models import fused_decode as fd

BASE: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 97,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "qwen3": {**BASE, "model_type": "qwen3", "head_dim": 64, "tie_word_embeddings": True},
    "llama3-rope": {
        **BASE,
        "model_type": "llama",
        "tie_word_embeddings": False,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    },
    "mistral-traditional": {**BASE, "model_type": "mistral", "rope_traditional": True},
}


@pytest.fixture
def build(random_model: Callable[..., Model]) -> Callable[..., Model]:
    """``build(config, quantize=False, fuse=True, seed=0)``: a random model, projections fused by default."""

    def make(config: dict[str, Any], quantize: bool = False, fuse: bool = True, seed: int = 0) -> Model:
        model = random_model(config, seed, quantize)
        return fuse_projections(model) if fuse else model

    return make


class Counter:
    """Counts calls of the fused attention (i.e. layers that took the fused path), those that asked it
    to apply o_proj too, and the MLPs given counters for one launch."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.projected = 0
        self.mlp_folded = 0
        attention, mlp = fd.decode_attention_qkv, fd.fused_mlp

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            self.projected += kwargs.get("output_projection") is not None
            return attention(*args, **kwargs)

        def counted_mlp(*args: Any, **kwargs: Any) -> Any:
            self.mlp_folded += kwargs.get("counters") is not None
            return mlp(*args, **kwargs)

        monkeypatch.setattr(fd, "decode_attention_qkv", counted)
        monkeypatch.setattr(fd, "fused_mlp", counted_mlp)


def deferred_logits(model: Model, tokens: np.ndarray, mode: str) -> np.ndarray:
    """Prefill 6 tokens, then one-token steps inside deferred_append (as the compiled step runs them)."""
    caches = [StaticKVCache(32) for _ in model.layers]
    model(mx.array(tokens[None, :6]), cache=caches)
    out = []
    with fd.fused_decode(mode):
        for i in range(6, len(tokens)):
            with ExitStack() as stack:
                for c in caches:
                    stack.enter_context(c.deferred_append())
                out.append(np.array(model(mx.array(tokens[None, i : i + 1]), cache=caches)[:, -1]))
    assert all(c.offset == len(tokens) for c in caches)
    return np.stack(out)


@pytest.mark.parametrize("quantize", [False, True], ids=["float32", "q4"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_logits_match_the_layer_code(
    name: str, quantize: bool, monkeypatch: pytest.MonkeyPatch, build: Callable[..., Model]
) -> None:
    model = build(CONFIGS[name], quantize)
    tokens = np.random.default_rng(1).integers(0, BASE["vocab_size"], size=14)
    want = deferred_logits(model, tokens, "never")
    counter = Counter(monkeypatch)
    got = deferred_logits(model, tokens, "always")
    assert counter.calls == BASE["num_hidden_layers"] * 8  # every layer of every step
    # o_proj (dense or quantized) rides on the attention call; the MLP gets the counters for one launch.
    assert counter.projected == counter.mlp_folded == counter.calls
    # Same ops in the same order; only RoPE's angles come from a float32 table instead of base/freqs.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
    assert np.abs(want).max() > 1.0


@pytest.mark.parametrize(
    ("flag", "name", "quantize", "seed", "folded_count"),
    [
        ("FOLD_O_PROJ", "qwen3", False, 4, "projected"),  # o_proj a matvec of its own
        ("FOLD_MLP", "llama3-rope", True, 6, "mlp_folded"),  # gate/up and down as two launches
    ],
)
def test_fold_switched_off_gives_the_same_logits(
    flag: str,
    name: str,
    quantize: bool,
    seed: int,
    folded_count: str,
    monkeypatch: pytest.MonkeyPatch,
    build: Callable[..., Model],
) -> None:
    """``FOLD_O_PROJ = False`` / ``FOLD_MLP = False``: that fold is not requested, the logits are the same."""
    model = build(CONFIGS[name], quantize, seed=seed)
    tokens = np.random.default_rng(seed + 1).integers(0, BASE["vocab_size"], size=10)
    folded = deferred_logits(model, tokens, "always")
    monkeypatch.setattr(fd, flag, False)
    counter = Counter(monkeypatch)
    apart = deferred_logits(model, tokens, "always")
    assert counter.calls == BASE["num_hidden_layers"] * 4 and getattr(counter, folded_count) == 0
    np.testing.assert_array_equal(apart, folded)


@pytest.mark.parametrize("name", ["qwen3", "llama3-rope"])
def test_compiled_generate_tokens_identical(
    name: str, monkeypatch: pytest.MonkeyPatch, build: Callable[..., Model]
) -> None:
    model = build(CONFIGS[name], seed=3)
    prompt = mx.array(np.random.default_rng(2).integers(0, BASE["vocab_size"], size=20))
    runs = {}
    for mode in ("never", "always"):
        clear_compiled_steps()
        counter = Counter(monkeypatch)
        with fd.fused_decode(mode):
            gen = Generate(model, prompt, max_tokens=24, compile=True)
            runs[mode] = [int(t) for t in gen]
        assert gen.compiled
        # Traced once: the fused attention is called once per layer at trace time, then replayed.
        assert counter.calls == (BASE["num_hidden_layers"] if mode == "always" else 0)
    assert runs["always"] == runs["never"]
    assert len(set(runs["never"])) > 3  # not a degenerate repetition


def test_path_not_taken_where_it_does_not_apply(
    monkeypatch: pytest.MonkeyPatch, build: Callable[..., Model]
) -> None:
    tokens = np.random.default_rng(4).integers(0, BASE["vocab_size"], size=9)
    counter = Counter(monkeypatch)
    unfused = build(CONFIGS["qwen3"], fuse=False)  # no qkv_proj / gate_up_proj
    deferred_logits(unfused, tokens, "always")
    biased = build({**BASE, "model_type": "qwen2", "tie_word_embeddings": True})  # q/k/v biases
    deferred_logits(biased, tokens, "always")
    sliding = build(
        {**CONFIGS["qwen3"], "use_sliding_window": True, "sliding_window": 4, "max_window_layers": 0}
    )
    deferred_logits(sliding, tokens, "always")  # windowed masks: not the cache's prefix
    fused = build(CONFIGS["qwen3"])
    with fd.fused_decode("always"):  # an ordinary KVCache (no deferred append)
        caches = fused.make_cache()
        fused(mx.array(tokens[None, :6]), cache=caches)
        fused(mx.array(tokens[None, 6:7]), cache=caches)
    deferred_logits(fused, tokens, "never")
    assert counter.calls == 0
    deferred_logits(fused, tokens, "auto")  # auto: only where the kernels run natively (CUDA)
    native = backend(mx.float32) == "cuda"  # the models here are float32
    assert counter.calls == (BASE["num_hidden_layers"] * 3 if native else 0)  # 3 one-token steps


def test_fused_head_folds_the_final_norm(build: Callable[..., Model]) -> None:
    model = build(CONFIGS["llama3-rope"])
    tokens = mx.array([[5]])
    want = np.array(model(tokens))
    with fd.fused_decode("always"):
        assert fd.head_weights(model, 1) is not None and fd.head_weights(model, 2) is None
        got = np.array(model(tokens))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_linear_weights_recognises_layers() -> None:
    dense = nn.Linear(64, 32, bias=False)
    assert fd.linear_weights(dense) is not None and fd.linear_weights(dense).bits is None
    assert fd.linear_weights(nn.Linear(64, 32, bias=True)) is None
    quant = nn.QuantizedLinear(64, 32, bias=False, group_size=32, bits=8)
    w = fd.linear_weights(quant)
    assert w is not None and (w.bits, w.group_size) == (8, 32) and w.dtype == quant.scales.dtype
    assert fd.linear_weights(nn.Embedding(10, 64)) is not None
    assert fd.linear_weights(nn.QuantizedEmbedding(10, 64, group_size=32, bits=4)).bits == 4
    assert fd.linear_weights(nn.Conv1d(4, 4, 3)) is None
    x = mx.array(np.random.default_rng(5).standard_normal((1, 1, 64)).astype(np.float32))
    np.testing.assert_allclose(np.array(w(x)), np.array(quant(x)), rtol=1e-6, atol=1e-6)


def test_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="not one of auto, always, never"), fd.fused_decode("sometimes"):
        pass


@pytest.mark.parametrize("name", ["qwen3", "llama3-rope"])
def test_greedy_kernel_sampler_gives_the_same_tokens(name: str, build: Callable[..., Model]) -> None:
    """The CLI's sampler (greedy steps through mlx_core.kernels.greedy_tokens) changes no token."""
    model = build(CONFIGS[name], seed=5)
    prompt = mx.array(np.random.default_rng(6).integers(0, BASE["vocab_size"], size=20))
    runs = []
    for sampler in (make_sampler(0.0), make_sampler(0.0, greedy=greedy_tokens)):
        clear_compiled_steps()
        gen = Generate(model, prompt, max_tokens=24, compile=True, sampler=sampler)
        runs.append([int(t) for t in gen])
        assert gen.compiled
    assert runs[0] == runs[1] and len(set(runs[0])) > 4
