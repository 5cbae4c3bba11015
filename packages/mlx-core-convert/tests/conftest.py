"""Fixtures: tiny Hugging Face-format Llama checkpoints written with numpy + safetensors (no mlx involved)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

HIDDEN, HEADS, KV_HEADS, INTER, LAYERS, VOCAB = 64, 4, 2, 128, 2, 96


@pytest.fixture(autouse=True)
def _offline_hub(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never touch the network: Hub offline, cache in a temporary directory."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def llama_config(**overrides: object) -> dict:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 91,
        "eos_token_id": 92,
    }
    config.update(overrides)
    return config


def llama_tensors(seed: int = 0, layers: int = LAYERS) -> dict[str, np.ndarray]:
    """Random float32 weights of a Llama with the fixture's shapes, HF names and [out, in] layout."""
    rng = np.random.default_rng(seed)
    head_dim = HIDDEN // HEADS

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.08).astype(np.float32)

    t = {"model.embed_tokens.weight": w(VOCAB, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = w(HEADS * head_dim, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = w(KV_HEADS * head_dim, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = w(KV_HEADS * head_dim, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = w(HIDDEN, HEADS * head_dim)
        t[p + "mlp.gate_proj.weight"] = w(INTER, HIDDEN)
        t[p + "mlp.up_proj.weight"] = w(INTER, HIDDEN)
        t[p + "mlp.down_proj.weight"] = w(HIDDEN, INTER)
        t[p + "input_layernorm.weight"] = 1 + w(HIDDEN)
        t[p + "post_attention_layernorm.weight"] = 1 + w(HIDDEN)
    t["model.norm.weight"] = 1 + w(HIDDEN)
    t["lm_head.weight"] = w(VOCAB, HIDDEN)
    return t


def write_tokenizer(directory: Path) -> None:
    """A word-level tokenizer (tokenizers library only) that transformers/mlx-lm can load."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(90)} | {"<unk>": 90, "<s>": 91, "</s>": 92}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
            }
        )
    )


def write_checkpoint(
    directory: Path,
    tensors: dict[str, np.ndarray],
    *,
    shards: int = 1,
    config: dict | None = None,
    tokenizer: bool = True,
) -> Path:
    """Write ``tensors`` as ``model.safetensors`` or ``shards`` files plus an HF-style index."""
    directory.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, chunk in enumerate(np.array_split(np.arange(len(names)), shards)):
            file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {names[j]: tensors[names[j]] for j in chunk}
            save_file(part, str(directory / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, file))
        index = {
            "metadata": {"total_size": sum(a.nbytes for a in tensors.values())},
            "weight_map": weight_map,
        }
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(llama_config() if config is None else config))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 91, "eos_token_id": 92}))
    if tokenizer:
        write_tokenizer(directory)
    return directory


@pytest.fixture
def llama_dir(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``llama_dir(name="src", shards=1, seed=0, tensors=None, config=None)`` -> checkpoint path."""

    def make(
        name: str = "src",
        *,
        shards: int = 1,
        seed: int = 0,
        tensors: dict[str, np.ndarray] | None = None,
        config: dict | None = None,
        tokenizer: bool = True,
    ) -> Path:
        data = llama_tensors(seed) if tensors is None else tensors
        return write_checkpoint(tmp_path / name, data, shards=shards, config=config, tokenizer=tokenizer)

    return make


class CheckpointKit:
    """The helpers above, handed to tests as the ``kit`` fixture (test modules cannot import conftest)."""

    tensors = staticmethod(llama_tensors)
    write = staticmethod(write_checkpoint)
    config = staticmethod(llama_config)
    write_tokenizer = staticmethod(write_tokenizer)
    HIDDEN, HEADS, KV_HEADS, INTER, LAYERS, VOCAB = HIDDEN, HEADS, KV_HEADS, INTER, LAYERS, VOCAB


@pytest.fixture
def kit() -> type[CheckpointKit]:
    return CheckpointKit
