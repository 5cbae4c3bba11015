"""load_model reads Hugging Face names and quantized (mlx-core convert / mlx-lm) checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_core.models import (
    Model,
    ModelArgs,
    ModelLoadError,
    load_model_weights,
    quantize_like_checkpoint,
    resolve_model_path,
)

CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 96,
    "rope_theta": 10000.0,
}


def _seeded_model(config: dict[str, Any], seed: int = 0) -> Model:
    model = Model(ModelArgs.from_dict(config))
    rng = np.random.default_rng(seed)
    model.load_weights(
        [
            (k, mx.array((rng.standard_normal(v.shape) * 0.3).astype(np.float32)))
            for k, v in tree_flatten(model.parameters())
        ]
    )
    return model


def _tokens() -> mx.array:
    return mx.array(np.random.default_rng(5).integers(0, CONFIG["vocab_size"], size=(1, 9)))


def _write(path: Path, config: dict[str, Any], weights: dict[str, mx.array], shards: int = 1) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    names = sorted(weights)
    for i in range(shards):
        part = {k: weights[k] for k in names[i::shards]}
        mx.save_safetensors(str(path / f"model-{i + 1:05d}-of-{shards:05d}.safetensors"), part)
    return path


def test_hf_names_tied_and_rotary_dropped(tmp_path: Path) -> None:
    """A HF checkpoint without tie_word_embeddings in config, with inv_freq buffers, over two shards."""
    model = _seeded_model({**CONFIG, "tie_word_embeddings": True})
    weights = dict(tree_flatten(model.parameters()))
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = mx.ones((8,))
    _write(tmp_path / "hf", CONFIG, weights, shards=2)  # no tie flag: inferred (no lm_head.weight)
    loaded, config = load_model_weights(tmp_path / "hf")
    assert loaded.args.tie_word_embeddings and config["tie_word_embeddings"] is True
    np.testing.assert_array_equal(np.array(loaded(_tokens())), np.array(model(_tokens())))


def test_untied_head_is_inferred(tmp_path: Path) -> None:
    model = _seeded_model({**CONFIG, "tie_word_embeddings": False}, seed=1)
    _write(tmp_path / "m", CONFIG, dict(tree_flatten(model.parameters())))
    loaded, _ = load_model_weights(tmp_path / "m")
    assert "lm_head" in loaded
    np.testing.assert_array_equal(np.array(loaded(_tokens())), np.array(model(_tokens())))


QUANTIZATION: dict[str, Any] = {
    "group_size": 32,
    "bits": 4,
    "model.layers.0.mlp.down_proj": False,
    "model.layers.1.self_attn.q_proj": {"group_size": 64, "bits": 8},
}


def _quantized_checkpoint(tmp_path: Path) -> tuple[Model, Path]:
    config = {**CONFIG, "tie_word_embeddings": True, "quantization": QUANTIZATION}
    model = _seeded_model(config, seed=2)
    quantize_like_checkpoint(model, QUANTIZATION, {f"{p}.scales": None for p, _ in model.named_modules()})
    return model, _write(tmp_path / "q", config, dict(tree_flatten(model.parameters())))


def test_quantized_checkpoint_with_per_layer_overrides(tmp_path: Path) -> None:
    model, path = _quantized_checkpoint(tmp_path)
    layers = model.layers
    assert isinstance(layers[0].mlp.down_proj, nn.Linear) and not hasattr(layers[0].mlp.down_proj, "bits")
    assert layers[1].self_attn.q_proj.bits == 8 and layers[1].self_attn.q_proj.group_size == 64
    assert layers[0].self_attn.q_proj.bits == 4 and isinstance(
        model.model.embed_tokens, nn.QuantizedEmbedding
    )
    loaded, _ = load_model_weights(path)
    assert loaded.layers[1].self_attn.q_proj.bits == 8
    assert not hasattr(loaded.layers[0].mlp.down_proj, "bits")
    np.testing.assert_array_equal(np.array(loaded(_tokens())), np.array(model(_tokens())))


@pytest.mark.parity
def test_quantized_checkpoint_matches_mlx_lm_loader(tmp_path: Path) -> None:
    utils = pytest.importorskip("mlx_lm.utils")
    _, path = _quantized_checkpoint(tmp_path)
    theirs, _ = utils.load_model(path)
    ours, _ = load_model_weights(path)
    np.testing.assert_allclose(np.array(ours(_tokens())), np.array(theirs(_tokens())), rtol=1e-5, atol=1e-5)


def test_dtype_casts_float_weights(tmp_path: Path) -> None:
    model = _seeded_model({**CONFIG, "tie_word_embeddings": True})
    _write(tmp_path / "m", CONFIG, dict(tree_flatten(model.parameters())))
    loaded, _ = load_model_weights(tmp_path / "m", dtype=mx.float16)
    assert loaded.model.embed_tokens.weight.dtype == mx.float16


def test_missing_files_and_bad_weights_raise(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load_model_weights(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model_weights(tmp_path)
    mx.save_safetensors(str(tmp_path / "model.safetensors"), {"model.norm.weight": mx.ones((3,))})
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model_weights(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model_weights(tmp_path)


def test_resolve_rejects_non_paths_without_network(tmp_path: Path) -> None:
    assert resolve_model_path(tmp_path) == tmp_path
    for bad in ("./does/not/exist", "not a repo id", "a/b/c"):
        with pytest.raises(ModelLoadError, match="neither a local directory"):
            resolve_model_path(bad)
