"""Decode speed: mlx_core.generate's loop vs mlx-lm's generate_step on the same model, same process.

CPU: a small float32 Llama; GPU: a Qwen3-0.6B-shaped bf16 model with random weights (mlx-lm's qwen3 code).
Prompt 512 tokens, 256 new tokens, greedy, median of 5 runs after a warm-up. Decode tok/s counts tokens
after the first (the first includes prefill). ``--quick``: prompt 64, 32 new tokens, 2 runs.

    uv run python benchmarks/generate.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterable
from typing import Any

import mlx.core as mx
from mlx_core.cache import make_prompt_cache
from mlx_core.generate import Generate
from mlx_lm.generate import generate_step
from mlx_lm.models import llama, qwen3
from mlx_lm.models.cache import make_prompt_cache as mlx_lm_make_prompt_cache


def build_model(on_gpu: bool) -> tuple[Any, str]:
    mx.random.seed(0)
    if on_gpu:
        args = qwen3.ModelArgs(
            model_type="qwen3",
            hidden_size=1024,
            num_hidden_layers=28,
            intermediate_size=3072,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            rms_norm_eps=1e-6,
            vocab_size=151936,
            max_position_embeddings=40960,
            rope_theta=1_000_000.0,
            tie_word_embeddings=True,
        )
        model = qwen3.Model(args)
        model.set_dtype(mx.bfloat16)
        name = "Qwen3-0.6B shape, bf16"
    else:
        args = llama.ModelArgs(
            model_type="llama",
            hidden_size=256,
            num_hidden_layers=4,
            intermediate_size=512,
            num_attention_heads=8,
            num_key_value_heads=4,
            rms_norm_eps=1e-5,
            vocab_size=2048,
        )
        model = llama.Model(args)
        name = "Llama 4x256, float32"
    mx.eval(model.parameters())
    return model, name


def decode_tps(tokens: Iterable[Any]) -> tuple[float, list[int]]:
    """Tokens per second after the first token, and the tokens."""
    out: list[int] = []
    t_first = 0.0
    for tok in tokens:
        out.append(int(tok))
        if len(out) == 1:
            t_first = time.perf_counter()
    elapsed = time.perf_counter() - t_first
    return (len(out) - 1) / elapsed, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    opts = parser.parse_args()
    prompt_len, new_tokens, repeats = (64, 32, 2) if opts.quick else (512, 256, 5)
    on_gpu = mx.default_device() == mx.gpu
    model, name = build_model(on_gpu)
    vocab = model.args.vocab_size
    prompt = mx.random.randint(0, vocab, (prompt_len,)).tolist()

    def theirs() -> tuple[float, list[int]]:
        steps = generate_step(
            mx.array(prompt), model, max_tokens=new_tokens, prompt_cache=mlx_lm_make_prompt_cache(model)
        )
        return decode_tps(t for t, _ in steps)

    def ours() -> tuple[float, list[int]]:
        caches = make_prompt_cache(model)
        return decode_tps(Generate(model, prompt, max_tokens=new_tokens, caches=caches))

    def ours_mlx_lm_caches() -> tuple[float, list[int]]:
        caches = mlx_lm_make_prompt_cache(model)
        return decode_tps(Generate(model, prompt, max_tokens=new_tokens, caches=caches))

    loops = {"theirs": theirs, "ours": ours, "ours_lm_cache": ours_mlx_lm_caches}
    for run in loops.values():  # warm-up
        run()
    runs: dict[str, list[float]] = {k: [] for k in loops}
    tokens: dict[str, list[int]] = {}
    for _ in range(repeats):  # interleaved so machine noise hits every loop alike
        for key, run in loops.items():
            tps, tokens[key] = run()
            runs[key].append(tps)
    t_theirs, t_ours = statistics.median(runs["theirs"]), statistics.median(runs["ours"])
    t_mixed = statistics.median(runs["ours_lm_cache"])
    tok_theirs, tok_ours = tokens["theirs"], tokens["ours"]
    same = "yes" if tok_theirs == tok_ours else "NO"
    print(
        f"device: {mx.default_device()}, model: {name}, prompt {prompt_len}, new {new_tokens}, "
        f"median of {repeats}"
    )
    print("| loop | decode tok/s | ratio vs mlx-lm |\n|---|---|---|")
    print(f"| mlx-lm generate_step | {t_theirs:.1f} | 1.00 |")
    print(f"| mlx_core.generate.Generate | {t_ours:.1f} | {t_ours / t_theirs:.2f} |")
    print(f"| Generate with mlx-lm's caches | {t_mixed:.1f} | {t_mixed / t_theirs:.2f} |")
    print(f"greedy tokens identical: {same}")


if __name__ == "__main__":
    main()
