"""Fused q/k/v and gate/up projections compute exactly what the separate projections compute."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_core.models import (
    Model,
    ShardingError,
    fuse_projections,
    fused_projection_count,
    load_model,
    shard_model,
)
from mlx_core.models.fusion import fuse_linears
from mlx_core.models.sharding import InferenceAllToShardedLinear

BASE: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5,
    "vocab_size": 101,
}
CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**BASE, "model_type": "llama", "tie_word_embeddings": False},
    "qwen3-qknorm": {**BASE, "model_type": "qwen3", "head_dim": 32, "tie_word_embeddings": True},
    "qwen2-bias": {**BASE, "model_type": "qwen2", "tie_word_embeddings": True, "mlp_bias": True},
}
DEMO = Path(__file__).resolve().parents[1] / "src" / "mlx_core" / "models" / "demo"


def _logits(model: Model, tokens: np.ndarray) -> np.ndarray:
    """Prefill of 6 tokens then single-token decode steps through the model's caches: [1, L, V]."""
    caches = model.make_cache()
    outs = [model(mx.array(tokens[None, :6]), cache=caches)]
    outs += [model(mx.array(tokens[None, i : i + 1]), cache=caches) for i in range(6, len(tokens))]
    return np.concatenate([np.array(o) for o in outs], axis=1)


@pytest.mark.parametrize("quantize", [False, True], ids=["float32", "q4"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fused_logits_equal_unfused(name: str, quantize: bool, random_model: Callable[..., Model]) -> None:
    model = random_model(CONFIGS[name], seed=len(name), quantize=quantize)
    tokens = np.random.default_rng(1).integers(0, BASE["vocab_size"], size=10)
    want = _logits(model, tokens)
    assert fuse_projections(model) is model
    assert fused_projection_count(model) == 2 * BASE["num_hidden_layers"]
    attn = model.layers[0].self_attn
    assert "q_proj" not in attn and "gate_proj" not in model.layers[0].mlp
    assert isinstance(attn.qkv_proj, nn.QuantizedLinear if quantize else nn.Linear)
    assert ("bias" in attn.qkv_proj) == (name == "qwen2-bias")
    got = _logits(model, tokens)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.abs(want).max() > 0.1  # real signal, not an all-zero comparison


def test_fused_weights_are_the_concatenation() -> None:
    """Float: the fused layer equals a float64 numpy x @ [Wq; Wk; Wv].T + b; quantized: dequantized rows."""
    rng = np.random.default_rng(0)
    layers = [nn.Linear(64, n, bias=True) for n in (64, 32, 32)]
    fused = fuse_linears(layers)
    assert fused is not None
    x = rng.standard_normal((3, 64)).astype(np.float32)
    w = np.concatenate([np.array(lin.weight, dtype=np.float64) for lin in layers])
    b = np.concatenate([np.array(lin.bias, dtype=np.float64) for lin in layers])
    np.testing.assert_allclose(np.array(fused(mx.array(x))), x @ w.T + b, rtol=1e-5, atol=1e-5)

    quantized = [nn.QuantizedLinear.from_linear(lin, group_size=32, bits=4) for lin in layers]
    qfused = fuse_linears(quantized)
    assert isinstance(qfused, nn.QuantizedLinear) and qfused.bits == 4 and qfused.group_size == 32

    def dequant(q: nn.QuantizedLinear) -> np.ndarray:
        return np.array(mx.dequantize(q.weight, q.scales, q.biases, group_size=32, bits=4))

    np.testing.assert_array_equal(dequant(qfused), np.concatenate([dequant(q) for q in quantized]))


def test_mixed_quantization_is_left_unfused_and_still_correct(random_model: Callable[..., Model]) -> None:
    """mlx-lm's mixed recipes give v_proj more bits: q/k/v cannot share one matmul, gate/up still can."""
    config = CONFIGS["llama"]
    model = random_model(config, seed=4)

    def recipe(path: str, module: nn.Module) -> dict[str, int] | bool:
        if not isinstance(module, nn.Linear):
            return False
        return {"group_size": 32, "bits": 8 if path.endswith("v_proj") else 4}

    nn.quantize(model, class_predicate=recipe)
    tokens = np.random.default_rng(2).integers(0, BASE["vocab_size"], size=9)
    want = _logits(model, tokens)
    fuse_projections(model)
    assert fused_projection_count(model) == BASE["num_hidden_layers"]  # gate_up only
    assert "q_proj" in model.layers[0].self_attn and "gate_up_proj" in model.layers[0].mlp
    np.testing.assert_allclose(_logits(model, tokens), want, rtol=1e-6, atol=1e-6)
    fuse_projections(model)  # idempotent
    assert fused_projection_count(model) == BASE["num_hidden_layers"]


def test_fuse_after_sharding_not_before(random_model: Callable[..., Model]) -> None:
    fused = fuse_projections(random_model(CONFIGS["llama"], seed=0))
    with pytest.raises(ShardingError, match="fused projections"):
        shard_model(fused, mx.distributed.init())
    # The other order works: shard, then fuse each rank's local shards (column-split inference layers).
    sharded = random_model(CONFIGS["llama"], seed=0)
    tokens = np.random.default_rng(2).integers(0, BASE["vocab_size"], size=8)
    want = _logits(sharded, tokens)
    for layer in sharded.layers:  # a one-rank "split": the shard types, the full weights
        for owner, names in (
            (layer.self_attn, ("q_proj", "k_proj", "v_proj")),
            (layer.mlp, ("gate_proj", "up_proj")),
        ):
            for n in names:
                owner[n] = InferenceAllToShardedLinear.from_linear(owner[n], group=mx.distributed.init())
    fuse_projections(sharded)
    assert fused_projection_count(sharded) == 2 * BASE["num_hidden_layers"]
    assert type(sharded.layers[0].self_attn.qkv_proj) is nn.Linear
    np.testing.assert_allclose(_logits(sharded, tokens), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match=r"expects a mlx_core\.models\.Model"):
        fuse_projections(nn.Linear(2, 2))  # type: ignore[arg-type]


def test_load_model_fuse_option(tmp_path: Path, random_model: Callable[..., Model]) -> None:
    if not (DEMO / "tokenizer.json").is_file():
        pytest.skip("the shipped demo model's tokenizer is missing")
    config = CONFIGS["qwen2-bias"]
    model = random_model(config, seed=9, quantize=True)
    quantization = {"group_size": 32, "bits": 4}
    (tmp_path / "config.json").write_text(json.dumps({**config, "quantization": quantization}))
    mx.save_safetensors(str(tmp_path / "model.safetensors"), dict(tree_flatten(model.parameters())))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (DEMO / name).is_file():
            shutil.copy(DEMO / name, tmp_path / name)
    plain, _ = load_model(tmp_path)
    fused, _ = load_model(tmp_path, fuse=True)
    assert fused_projection_count(plain) == 0 and fused_projection_count(fused) == 4
    tokens = np.random.default_rng(3).integers(0, BASE["vocab_size"], size=8)
    np.testing.assert_allclose(_logits(fused, tokens), _logits(plain, tokens), rtol=1e-6, atol=1e-6)
