"""Shared fixtures: a tiny random-weight mlx-lm Llama and tokenizers trained in the test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

CORPUS = [
    "hello world, héllo wörld! the quick brown fox jumps over the lazy dog.",
    "日本語のテキストと中文字符 mixed with English words and numbers 12345.",
    "emoji 😀🎉🚀 and accents: àéîõü ñ ç ß — “quotes” … end.",
    "stop here. stop there. the end of the story is near; the end.",
    "Привет мир, γειά σου κόσμε, שלום עולם, مرحبا بالعالم",
] * 4


@pytest.fixture(scope="session")
def tiny_llama() -> Any:
    """A 2-layer mlx-lm Llama with random float32 weights (vocab 97)."""
    llama = pytest.importorskip("mlx_lm.models.llama")
    mx.random.seed(1234)
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=64,
        num_hidden_layers=2,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        vocab_size=97,
        tie_word_embeddings=False,
    )
    model = llama.Model(args)
    # Larger-than-default output weights make logits spread out, so argmax ties are impossible.
    model.lm_head.weight = mx.random.normal(model.lm_head.weight.shape) * 0.5
    mx.eval(model.parameters())
    return model


@pytest.fixture(scope="session")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer (GPT-2 style) trained on a small multilingual corpus, saved to a dir."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<s>", "</s>", "<|eot|>"]
    )
    path = tmp_path_factory.mktemp("bpe")
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text('{"eos_token": "</s>", "bos_token": {"content": "<s>"}}')
    (path / "generation_config.json").write_text('{"eos_token_id": [1, 2]}')
    return path


@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SentencePiece-style (▁ Metaspace) BPE tokenizer trained on the same corpus."""
    from tokenizers import SentencePieceBPETokenizer

    tok = SentencePieceBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=["<unk>", "<s>", "</s>"])
    path = tmp_path_factory.mktemp("spm")
    tok.save(str(path / "tokenizer.json"))
    (path / "config.json").write_text('{"eos_token_id": 2, "bos_token_id": 1}')
    return path
