"""Speculative decoding benchmark: mlx_core.spec vs plain decoding (and mlx-lm's speculative loop).

    uv run python benchmarks/spec.py [--quick]

Runs on ``mx.default_device()``: on CPU an 8-layer llama-shaped target (float32) with a 2-layer draft; on GPU
a Qwen3-0.6B-shaped target (28 layers, bf16) with a 4-layer draft. Weights are random, so two constructions
stand in for what training provides (both reported in the table's notes):

- *draft model*: the draft is the target truncated to its first layers (shared embeddings, final norm and
  head); the target's later layers have their residual branches scaled by ``--tail-scale`` so the first layers
  carry most of the computation, as in a model whose draft was distilled from it. With unscaled random
  layers a truncated draft agrees with the target almost never.
- *prompt lookup*: the target also gets an induction head (a real attention layer over its KV cache that
  attends to the token after earlier occurrences of the current token), so that, like a model rewriting a
  given passage, it mostly copies the passage with its own edits. The prompt is a random "passage" followed
  by its first tokens.

Each row times plain `Generate` of the same target in the same process (median of repeats after a warm-up)
and prints acceptance, mean accepted length (tokens per target forward, bonus included) and speedup.
"identical" compares greedy outputs token by token; in bf16 on GPU the (k + 1)-token verification forward
may round differently from single-token decoding, so a near-tie argmax can flip ("NO" there is numerics, not
the algorithm — the tests check identity in float32).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_core.generate import Generate
from mlx_core.spec import DraftModelDrafter, PromptLookupDrafter, SpeculativeGenerate


def _config(quick: bool) -> dict[str, Any]:
    gpu = mx.default_device() == mx.gpu
    if gpu:
        return dict(
            family="qwen3",
            hidden=1024,
            layers=28,
            heads=16,
            kv_heads=8,
            head_dim=128,
            inter=3072,
            vocab=151936,
            draft_layers=4,
            dtype=mx.bfloat16,
            prompt=256,
            max_tokens=64 if quick else 256,
            repeats=1 if quick else 3,
            label="Qwen3-0.6B shape, bf16",
        )
    return dict(
        family="llama",
        hidden=128 if quick else 256,
        layers=8,
        heads=4,
        kv_heads=2,
        head_dim=None,
        inter=256 if quick else 512,
        vocab=512 if quick else 1024,
        draft_layers=2,
        dtype=mx.float32,
        prompt=64 if quick else 128,
        max_tokens=24 if quick else 96,
        repeats=1 if quick else 5,
        label="8-layer llama shape, float32",
    )


def build_target(cfg: dict[str, Any], seed: int = 0) -> nn.Module:
    """A random-weight mlx-lm model of the configured shape."""
    mx.random.seed(seed)
    if cfg["family"] == "qwen3":
        from mlx_lm.models import qwen3 as family

        args = family.ModelArgs(
            model_type="qwen3",
            hidden_size=cfg["hidden"],
            num_hidden_layers=cfg["layers"],
            intermediate_size=cfg["inter"],
            num_attention_heads=cfg["heads"],
            num_key_value_heads=cfg["kv_heads"],
            head_dim=cfg["head_dim"],
            rms_norm_eps=1e-6,
            vocab_size=cfg["vocab"],
            max_position_embeddings=40960,
            rope_theta=1e6,
            tie_word_embeddings=True,
        )
    else:
        from mlx_lm.models import llama as family

        args = family.ModelArgs(
            model_type="llama",
            hidden_size=cfg["hidden"],
            num_hidden_layers=cfg["layers"],
            intermediate_size=cfg["inter"],
            num_attention_heads=cfg["heads"],
            num_key_value_heads=cfg["kv_heads"],
            rms_norm_eps=1e-5,
            vocab_size=cfg["vocab"],
            tie_word_embeddings=False,
        )
    model = family.Model(args)
    model.set_dtype(cfg["dtype"])
    mx.eval(model.parameters())
    return model


def scale_tail(model: nn.Module, first: int, scale: float) -> None:
    """Scale the residual branches (attention output, MLP down projection) of layers ``first..``."""
    for layer in model.layers[first:]:
        layer.self_attn.o_proj.weight = layer.self_attn.o_proj.weight * scale
        layer.mlp.down_proj.weight = layer.mlp.down_proj.weight * scale
    mx.eval(model.parameters())


class TruncatedDraft(nn.Module):
    """The target's first ``n`` layers with its embeddings, final norm and head (weights shared)."""

    def __init__(self, target: nn.Module, n: int) -> None:
        super().__init__()
        self.target = target
        self.n = n
        self.vocab_size = target.args.vocab_size

    @property
    def layers(self) -> list[nn.Module]:
        return self.target.model.layers[: self.n]

    def __call__(self, inputs: mx.array, cache: list[Any] | None = None) -> mx.array:
        inner = self.target.model
        full = inner.layers
        inner.layers = full[: self.n]  # temporarily run the first n layers through the target's own code
        try:
            return self.target(inputs, cache=cache)
        finally:
            inner.layers = full


class InductionHead(nn.Module):
    """Attend from the current token to positions that followed earlier occurrences of it; add their tokens'
    logits. Keys/values live in a standard KV cache (keys = token codes, values = codes too; the value read
    for key position j is position j + 1's)."""

    def __init__(self, vocab: int, dim: int = 64, sharpness: float = 12.0, strength: float = 30.0) -> None:
        super().__init__()
        codes = mx.random.normal((vocab, dim))
        self.codes = codes / mx.linalg.norm(codes, axis=-1, keepdims=True)
        self.sharpness, self.strength = sharpness, strength

    def __call__(self, tokens: mx.array, cache: Any) -> mx.array:
        x = self.codes[tokens][:, None]  # [B, 1, L, D]
        L = x.shape[2]
        offset = cache.offset
        keys, _ = cache.update_and_fetch(x, x)  # [B, 1, T, D]; T >= offset + L (static caches pad)
        T = keys.shape[2]
        if T < 2:
            return mx.zeros((tokens.shape[0], L, self.codes.shape[0]), dtype=mx.float32)
        scores = (x @ keys[:, :, :-1].swapaxes(-1, -2)) * self.sharpness  # key j predicts token at j + 1
        q_pos = mx.arange(L)[:, None] + offset  # offset may be an mx.array (compiled static caches)
        allowed = mx.arange(T - 1)[None] + 1 <= q_pos
        scores = mx.where(allowed, scores, -mx.inf)
        weights = mx.softmax(scores, axis=-1)
        weights = mx.where(allowed.any(axis=-1, keepdims=True), weights, 0.0)
        read = weights @ keys[:, :, 1:]  # [B, 1, L, D]
        return (read[:, 0] @ self.codes.T) * self.strength


class GroundedModel(nn.Module):
    """Target + induction head: copies from its context, like a model rewriting a given passage."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.head = InductionHead(base.args.vocab_size)
        self.vocab_size = base.args.vocab_size

    @property
    def layers(self) -> list[Any]:
        return [*self.base.layers, self.head]

    def __call__(self, inputs: mx.array, cache: list[Any] | None = None) -> mx.array:
        logits = self.base(inputs, cache=cache[:-1] if cache is not None else None)
        return logits + self.head(inputs, cache[-1]).astype(logits.dtype)


def median_time(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls (after one warm-up call unless ``warmup=False``)."""
    if warmup:
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def mlx_lm_speculative(
    target: nn.Module, draft: nn.Module, prompt: list[int], n: int, k: int, temp: float
) -> int:
    from mlx_lm.generate import speculative_generate_step
    from mlx_lm.sample_utils import make_sampler

    out = 0
    for _ in speculative_generate_step(
        mx.array(prompt), target, draft, num_draft_tokens=k, max_tokens=n, sampler=make_sampler(temp)
    ):
        out += 1
    return out


def bench_case(
    model: nn.Module,
    prompt: list[int],
    make_drafter: Callable[[], Any],
    k: int,
    temp: float,
    n: int,
    reps: int,
) -> tuple[float, float, bool, Any]:
    """Median seconds of plain `Generate` and of `SpeculativeGenerate`; token identity; spec metrics.

    The two are interleaved repeat by repeat, so drifting machine load hits both alike.
    """

    def plain() -> Any:
        return Generate(model, prompt, max_tokens=n, temperature=temp, seed=0).run()

    def spec() -> Any:
        drafter = make_drafter()
        return SpeculativeGenerate(
            model, prompt, max_tokens=n, temperature=temp, drafter=drafter, num_draft_tokens=k, seed=0
        ).run()

    plain(), spec()  # warm-up
    t_plain, t_spec = [], []
    for _ in range(reps):
        t_p, out_plain = median_time(plain, 1, warmup=False)
        t_s, out_spec = median_time(spec, 1, warmup=False)
        t_plain.append(t_p)
        t_spec.append(t_s)
    same = out_spec.tokens == out_plain.tokens
    return statistics.median(t_plain), statistics.median(t_spec), same, out_spec.metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, one repeat (smoke test)")
    ap.add_argument(
        "--tail-scale", type=float, default=0.05, help="residual scale of the target's later layers"
    )
    ap.add_argument("--num-draft-tokens", type=int, default=4)
    ap.add_argument("--no-mlx-lm", action="store_true", help="skip the mlx-lm speculative anchor row")
    ap.add_argument(
        "--vocab",
        type=int,
        default=None,
        help="override the vocabulary size (e.g. 151936 on CPU, where "
        "a large vocabulary with a small --hidden makes vocabulary-sized sampling work visible)",
    )
    ap.add_argument("--hidden", type=int, default=None, help="override the hidden size (CPU family only)")
    opts = ap.parse_args()
    cfg = _config(opts.quick)
    if opts.vocab is not None:
        cfg["vocab"] = opts.vocab
        cfg["label"] += f", vocab {opts.vocab}"
    if opts.hidden is not None:
        cfg["hidden"], cfg["inter"] = opts.hidden, 2 * opts.hidden
        cfg["label"] += f", hidden {opts.hidden}"
    n, k, reps = cfg["max_tokens"], opts.num_draft_tokens, cfg["repeats"]

    target = build_target(cfg)
    scale_tail(target, cfg["draft_layers"], opts.tail_scale)
    draft = TruncatedDraft(target, cfg["draft_layers"])
    grounded = GroundedModel(target)
    mx.eval(grounded.head.codes)

    mx.random.seed(1)
    prompt = mx.random.randint(0, cfg["vocab"], (cfg["prompt"],)).tolist()
    passage = mx.random.randint(0, cfg["vocab"], (cfg["prompt"],)).tolist()
    rewrite_prompt = passage + passage[:8]  # "rewrite the passage": it starts again from its beginning

    print(
        f"device: {mx.default_device()}  target: {cfg['label']}  draft: first {cfg['draft_layers']} layers "
        f"(tail residual scale {opts.tail_scale})  max_tokens={n}  k={k}  repeats={reps}"
    )
    header = (
        f"{'case':<34} {'temp':>4} {'plain tok/s':>11} {'spec tok/s':>10} {'speedup':>7} "
        f"{'accept':>6} {'mean len':>8} {'ms/step':>7} {'ms/round':>8} {'identical':>9}"
    )
    print(header)
    print("-" * len(header))
    cases = [
        ("draft model (truncated target)", target, prompt, lambda: DraftModelDrafter(draft), k),
        ("prompt lookup (rewrite passage)", grounded, rewrite_prompt, lambda: PromptLookupDrafter(3, 10), 10),
    ]
    for temp in (0.0, 0.7):
        plain_time = {}
        for name, model, p, make_drafter, kk in cases:
            t_plain, t_spec, ok, metrics = bench_case(model, p, make_drafter, kk, temp, n, reps)
            plain_time[name] = t_plain
            same = "n/a" if temp > 0 else ("yes" if ok else "NO")
            ms_round = 1e3 * t_spec / max(metrics.target_forwards, 1)
            print(
                f"{name:<34} {temp:>4.1f} {n / t_plain:>11.1f} {n / t_spec:>10.1f} {t_plain / t_spec:>6.2f}x "
                f"{metrics.acceptance_rate:>6.2f} {metrics.mean_accepted_length:>8.2f} "
                f"{1e3 * t_plain / n:>7.2f} {ms_round:>8.2f} {same:>9}"
            )
        if not opts.no_mlx_lm:
            try:
                t_ref, _ = median_time(
                    lambda t=temp: mlx_lm_speculative(target, draft, prompt, n, k, t), reps
                )
            except ImportError:
                continue
            t_plain = plain_time[cases[0][0]]
            name = "mlx-lm speculative (same draft)"
            print(
                f"{name:<34} {temp:>4.1f} {n / t_plain:>11.1f} {n / t_ref:>10.1f} "
                f"{t_plain / t_ref:>6.2f}x {'-':>6} {'-':>8} {1e3 * t_plain / n:>7.2f} {'-':>8} {'-':>9}"
            )
    print(
        "\nspeedup = plain Generate time / speculative time for the same target and max_tokens, same process."
        "\nms/step = plain time per token; ms/round = speculative time per target forward (draft + verify)."
    )


if __name__ == "__main__":
    main()
