"""convert → load_model → Generate, end to end, against mlx-lm loading and decoding the same converted dir.

A tiny Hugging Face-format Llama checkpoint is written with numpy + safetensors only (HF names, [out, in]
layout, config.json, generation_config.json) together with a byte-level BPE tokenizer trained with
``tokenizers``. It is converted by ``mlx_core.convert`` (float32 and 4-bit), loaded by
``mlx_core.models.load_model`` and decoded greedily by ``mlx_core.generate.Generate``; mlx-lm's ``load`` +
``generate_step`` on the same directory is the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.convert import convert
from mlx_core.generate import Generate
from mlx_core.models import load_model
from safetensors.numpy import save_file

HIDDEN, HEADS, KV_HEADS, INTER, LAYERS = 64, 4, 2, 128, 2
HEAD_DIM = HIDDEN // HEADS
VOCAB = 320  # >= the trained tokenizer's vocabulary
CORPUS = [
    "the quick brown fox jumps over the lazy dog and returns a new list of items.",
    "Return the number of items in a container; raise ValueError if it is empty.",
    "def function(argument): return argument * 2  # a small python function",
    "strings, bytes and numbers: 12345 67890 hello world, héllo wörld!",
] * 8
PROMPTS = ["the quick brown fox", "Return the number of", "hello world"]
MAX_TOKENS = 24


def _config() -> dict:
    return {
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
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "bos_token_id": 0,
        "eos_token_id": 1,
    }


def _tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 HF-named weights; a large lm_head spreads the logits so argmax ties cannot occur."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.1) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"model.embed_tokens.weight": w(VOCAB, HIDDEN, scale=1.0)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = w(HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.k_proj.weight"] = w(KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.v_proj.weight"] = w(KV_HEADS * HEAD_DIM, HIDDEN)
        t[p + "self_attn.o_proj.weight"] = w(HIDDEN, HEADS * HEAD_DIM)
        t[p + "mlp.gate_proj.weight"] = w(INTER, HIDDEN)
        t[p + "mlp.up_proj.weight"] = w(INTER, HIDDEN)
        t[p + "mlp.down_proj.weight"] = w(HIDDEN, INTER)
        t[p + "input_layernorm.weight"] = 1 + w(HIDDEN)
        t[p + "post_attention_layernorm.weight"] = 1 + w(HIDDEN)
        # HF checkpoints of older transformers carry this buffer; loaders must drop it.
        t[p + "self_attn.rotary_emb.inv_freq"] = (
            1.0 / 10000.0 ** (np.arange(0, HEAD_DIM, 2, dtype=np.float32) / HEAD_DIM)
        ).astype(np.float32)
    t["model.norm.weight"] = 1 + w(HIDDEN)
    t["lm_head.weight"] = w(VOCAB, HIDDEN, scale=1.0)
    return t


def _write_tokenizer(directory: Path) -> int:
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1, special_tokens=["<s>", "</s>"])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>"})
    )
    return tok.get_vocab_size()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-shard HF checkpoint with an index, config, generation config and tokenizer."""
    directory = tmp_path_factory.mktemp("hf_llama")
    tensors = _tensors()
    names = sorted(tensors)
    weight_map: dict[str, str] = {}
    for i, part_names in enumerate((names[::2], names[1::2])):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part_names}, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part_names, file))
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    (directory / "config.json").write_text(json.dumps(_config()))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}))
    assert _write_tokenizer(directory) <= VOCAB
    return directory


@pytest.fixture(scope="module", autouse=True)
def _offline_hub(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Nothing here may reach the network: a local directory must never be mistaken for a Hub id."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        yield


@pytest.fixture(scope="module")
def converted(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    return {
        "float": convert(hf_dir, root / "float", quiet=True),
        "q4": convert(hf_dir, root / "q4", quantize=True, q_bits=4, q_group_size=32, quiet=True),
    }


def _ours(path: Path, prompt: str) -> list[int]:
    model, tokenizer = load_model(path)
    ids = tokenizer.encode(prompt)
    # eos_token_ids=() so both sides decode exactly MAX_TOKENS tokens, EOS or not.
    return list(Generate(model, ids, tokenizer=tokenizer, max_tokens=MAX_TOKENS, eos_token_ids=()))


def _mlx_lm(path: Path, prompt: str) -> list[int]:
    mlx_lm = pytest.importorskip("mlx_lm")
    from mlx_lm.generate import generate_step

    model, tokenizer = mlx_lm.load(str(path))
    ids = mx.array(tokenizer.encode(prompt, add_special_tokens=False))
    steps = generate_step(ids, model, max_tokens=MAX_TOKENS, sampler=lambda lp: mx.argmax(lp, axis=-1))
    return [int(token) for token, _ in steps]


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["float", "q4"])
def test_converted_model_greedy_tokens_match_mlx_lm(converted: dict[str, Path], kind: str) -> None:
    path = converted[kind]
    config = json.loads((path / "config.json").read_text())
    if kind == "q4":
        assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    else:
        assert "quantization" not in config
    for prompt in PROMPTS:
        ours, theirs = _ours(path, prompt), _mlx_lm(path, prompt)
        assert len(ours) == MAX_TOKENS
        assert ours == theirs, prompt


def test_tokenizer_round_trips_through_convert(hf_dir: Path, converted: dict[str, Path]) -> None:
    """The converted dir carries the tokenizer: same ids as the source's, and the text decodes back."""
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    _, tokenizer = load_model(converted["q4"])
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)
        assert ids == reference.encode(prompt).ids
        assert tokenizer.decode(ids) == prompt


def test_raw_hf_dir_and_float_conversion_give_identical_logits(
    hf_dir: Path, converted: dict[str, Path]
) -> None:
    raw, _ = load_model(hf_dir)
    conv, tokenizer = load_model(converted["float"])
    tokens = mx.array([tokenizer.encode(PROMPTS[0] + " " + PROMPTS[1])])
    raw_logits, conv_logits = np.array(raw(tokens)), np.array(conv(tokens))
    assert raw_logits.shape == (1, tokens.shape[1], VOCAB)
    assert np.isfinite(raw_logits).all() and raw_logits.std() > 1.0  # not a degenerate model
    np.testing.assert_array_equal(conv_logits, raw_logits)


def test_quantized_logits_close_to_float_but_not_equal(converted: dict[str, Path]) -> None:
    """4-bit conversion really quantized (logits moved) yet stays near the float model."""
    fl, tokenizer = load_model(converted["float"])
    q4, _ = load_model(converted["q4"])
    tokens = mx.array([tokenizer.encode(PROMPTS[2])])
    a, b = np.array(fl(tokens)), np.array(q4(tokens))
    assert not np.array_equal(a, b)
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert rel < 0.2, rel


@pytest.mark.parity
def test_raw_hf_dir_logits_match_mlx_lm(hf_dir: Path) -> None:
    """mlx-lm loads the raw HF dir too: our logits equal its to float32 rounding."""
    mlx_lm = pytest.importorskip("mlx_lm")
    theirs, _ = mlx_lm.load(str(hf_dir))
    ours, tokenizer = load_model(hf_dir)
    tokens = mx.array([tokenizer.encode(PROMPTS[1])])
    np.testing.assert_allclose(np.array(ours(tokens)), np.array(theirs(tokens)), rtol=1e-5, atol=1e-4)


@pytest.mark.parity
@pytest.mark.parametrize("kind", ["float", "q4"])
def test_sliding_window_cache_greedy_tokens_match_mlx_lm(converted: dict[str, Path], kind: str) -> None:
    """Our RotatingKVCache (keep=4, like mlx-lm's --max-kv-size) past its window: mlx-lm's tokens."""
    mlx_lm = pytest.importorskip("mlx_lm")
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import RotatingKVCache

    window = 12
    model, tokenizer = load_model(converted[kind])
    theirs_model, theirs_tokenizer = mlx_lm.load(str(converted[kind]))
    for prompt in PROMPTS[:2]:
        ids = tokenizer.encode(prompt)
        assert ids == theirs_tokenizer.encode(prompt, add_special_tokens=False)
        assert len(ids) + MAX_TOKENS > window + 8
        caches = model.make_cache(max_kv_size=window)
        ours = list(Generate(model, ids, caches=caches, max_tokens=MAX_TOKENS, eos_token_ids=()))
        assert caches[0].offset > window  # the window really wrapped
        steps = generate_step(
            mx.array(ids),
            theirs_model,
            max_tokens=MAX_TOKENS,
            # mlx-lm's generate_step ignores max_kv_size for models with make_cache(): pass the caches.
            prompt_cache=[RotatingKVCache(max_size=window, keep=4) for _ in theirs_model.layers],
            sampler=lambda lp: mx.argmax(lp, axis=-1),
        )
        assert ours == [int(t) for t, _ in steps], prompt
