"""The reference Llama family gives the same logits as mlx-lm's own models for the same random weights."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_core.models import Model, ModelArgs

BASE: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 101,
    "max_position_embeddings": 256,
}

CONFIGS: dict[str, dict[str, Any]] = {
    "llama-gqa-tied": {**BASE, "model_type": "llama", "tie_word_embeddings": True, "rope_theta": 10000.0},
    "llama3-rope-untied-bias": {
        **BASE,
        "model_type": "llama",
        "tie_word_embeddings": False,
        "attention_bias": True,
        "mlp_bias": True,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    },
    "llama-yarn": {
        **BASE,
        "model_type": "llama",
        "tie_word_embeddings": True,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    },
    "llama-linear-rope": {
        **BASE,
        "model_type": "llama",
        "tie_word_embeddings": True,
        "rope_scaling": {"type": "linear", "factor": 2.0},
    },
    "llama-sliding-window": {
        **BASE,
        "model_type": "llama",
        "tie_word_embeddings": True,
        "sliding_window": 5,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
    },
    "qwen2-bias": {**BASE, "model_type": "qwen2", "tie_word_embeddings": True, "rope_theta": 1e6},
    "qwen3-qknorm": {
        **BASE,
        "model_type": "qwen3",
        "head_dim": 32,
        "tie_word_embeddings": False,
        "rope_theta": 1e6,
    },
    "qwen3-tied-rope-parameters": {
        **BASE,
        "model_type": "qwen3",
        "head_dim": 16,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"},
    },
}


def _random_weights(model: Model, seed: int) -> None:
    """Replace every parameter with seeded normal noise (scaled so activations stay O(1))."""
    rng = np.random.default_rng(seed)
    params = [
        (name, mx.array((rng.standard_normal(v.shape) * (0.3 if v.ndim > 1 else 1.0)).astype(np.float32)))
        for name, v in tree_flatten(model.parameters())
    ]
    model.load_weights(params)


def _reference(config: dict[str, Any]) -> Any:
    utils = pytest.importorskip("mlx_lm.utils")
    model_class, args_class = utils._get_classes(config)
    return model_class(args_class.from_dict(config))


def _run(model: Any, caches: list[Any], tokens: np.ndarray, chunks: list[int]) -> np.ndarray:
    """Feed the tokens in chunks of the given sizes through the caches; concatenated logits [1, L, V]."""
    outs, start = [], 0
    for n in chunks:
        logits = model(mx.array(tokens[None, start : start + n]), cache=caches)
        mx.eval(logits)
        outs.append(np.array(logits))
        start += n
    return np.concatenate(outs, axis=1)


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_equal_mlx_lm(name: str) -> None:
    config = CONFIGS[name]
    ours = Model(ModelArgs.from_dict(config))
    _random_weights(ours, seed=len(name))
    theirs = _reference(config)
    weights = dict(tree_flatten(ours.parameters()))
    theirs.load_weights(list(weights.items()), strict=True)

    tokens = np.random.default_rng(7).integers(0, config["vocab_size"], size=14)
    # No cache: whole sequence at once.
    np.testing.assert_allclose(
        np.array(ours(mx.array(tokens[None]))), np.array(theirs(mx.array(tokens[None]))), rtol=1e-5, atol=1e-5
    )
    # With caches: a prefill chunk, a second chunk, then single-token decode steps (past the window).
    from mlx_lm.models.cache import make_prompt_cache

    chunks = [6, 3, 1, 1, 1, 1, 1]
    got = _run(ours, ours.make_cache(), tokens, chunks)
    want = _run(theirs, make_prompt_cache(theirs), tokens, chunks)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parity
def test_sliding_window_changes_logits_beyond_the_window() -> None:
    """Negative control: the window really masks (logits differ from full attention past it)."""
    config = CONFIGS["llama-sliding-window"]
    full = {k: v for k, v in config.items() if k not in ("layer_types", "sliding_window")}
    windowed, unwindowed = Model(ModelArgs.from_dict(config)), Model(ModelArgs.from_dict(full))
    _random_weights(windowed, seed=3)
    unwindowed.load_weights(list(tree_flatten(windowed.parameters())))
    tokens = mx.array(np.random.default_rng(1).integers(0, 101, size=(1, 12)))
    a, b = np.array(windowed(tokens)), np.array(unwindowed(tokens))
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-5)
    assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-3


def test_layer_type_conventions() -> None:
    qwen = {**BASE, "model_type": "qwen2", "num_hidden_layers": 4, "sliding_window": 8}
    args = ModelArgs.from_dict({**qwen, "use_sliding_window": True, "max_window_layers": 2})
    assert args.layer_types == ["full_attention"] * 2 + ["sliding_attention"] * 2
    assert set(ModelArgs.from_dict({**qwen, "use_sliding_window": False}).layer_types or []) == {
        "full_attention"
    }
    mistral = ModelArgs.from_dict({**BASE, "model_type": "mistral", "sliding_window": 8})
    assert mistral.layer_types == ["sliding_attention"] * 3
    llama = ModelArgs.from_dict({**BASE, "model_type": "llama"})
    assert llama.layer_types == ["full_attention"] * 3 and llama.head_dim == 16
    model = Model(ModelArgs.from_dict({**qwen, "use_sliding_window": True, "max_window_layers": 2}))
    caches = model.make_cache()
    assert [type(c).__name__ for c in caches] == ["KVCache", "KVCache", "RotatingKVCache", "RotatingKVCache"]
    assert caches[2].max_size == 8


def test_qk_norm_and_bias_switches() -> None:
    qwen3 = Model(ModelArgs.from_dict({**BASE, "model_type": "qwen3", "head_dim": 16}))
    attn = qwen3.layers[0].self_attn
    assert "q_norm" in attn and "bias" not in attn.q_proj
    qwen2 = Model(ModelArgs.from_dict({**BASE, "model_type": "qwen2"})).layers[0].self_attn
    assert "bias" in qwen2.q_proj and "bias" not in qwen2.o_proj and "q_norm" not in qwen2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "gpt2"}, "not a Llama-family"),
        ({"num_key_value_heads": 3}, "multiple of"),
        ({"layer_types": ["sliding_attention"] * 3}, "sliding_window"),
        ({"layer_types": ["full_attention"]}, "entries"),
    ],
)
def test_bad_configs_raise_clear_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelArgs.from_dict({**BASE, "model_type": "llama", **change})


def test_sanitize_drops_rotary_and_tied_head() -> None:
    model = Model(ModelArgs.from_dict({**BASE, "model_type": "llama", "tie_word_embeddings": True}))
    w = {
        "lm_head.weight": mx.zeros((2, 2)),
        "model.layers.0.self_attn.rotary_emb.inv_freq": mx.zeros((2,)),
        "model.norm.weight": mx.ones((64,)),
    }
    assert set(model.sanitize(w)) == {"model.norm.weight"}
