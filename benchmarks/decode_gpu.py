"""Decode speed (issue 11): mlx-lm ``generate_step`` vs our `Generate` eager vs ours compiled (+ kernels).

Same random weights for every variant, same process: Qwen3-0.6B shape (mlx-lm's qwen3 code; 28 layers,
hidden 1024, 16 q / 8 kv heads of 128, MLP 3072, vocab 151936, tied) in bf16 and 4-bit (``nn.quantize``,
group 64), and the Llama-3.2-1B shape (16 layers, hidden 2048, 32 / 8 heads of 64, MLP 8192, vocab 128256,
tied) in bf16 and 4-bit. Batch 1, prompt 512, 256 new tokens, greedy; decode tok/s counts the tokens after
the first (the first includes prefill and, compiled, the trace), median of ``--runs`` (5) after a warm-up; the
variants take turns run by run (mlx-lm, ours, mlx-lm, ours, ...) so a slow phase of the machine hits all.

Variants: ``mlx-lm`` (generate_step, its KVCache); ``ours eager`` (Generate(compile=False), our KVCache);
``ours compiled`` (Generate(compile=True): StaticKVCache + one mx.compile'd step, mlx-lm's model code and
its mx.fast attention); ``compiled+kernels`` (the same with the model's attention routed through
mlx_core.attn's SDPA, which uses mlx_core.kernels.decode_attention for Lq = 1 on CUDA); ``ref model
compiled`` (mlx_core.models.llama with the same weights, if it loads them). Each variant's greedy tokens are
compared with mlx-lm's. Fraction = tok/s ÷ (2.7 TB/s ÷ parameter bytes read per token; KV reads ignored).

    uv run python benchmarks/decode_gpu.py [--quick] [--cpu-small] [--profile] [--runs N] [--only NAME]

``--cpu-small`` (automatic without a GPU): a small float32 Qwen3-style model, prompt 128, 64 new tokens.
``--profile`` (always on with a GPU): per-step split (Python graph building / wait for the device) for
eager and compiled steps.
Full output also goes to ``$OUT/decode.txt`` when ``OUT`` is set.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

BANDWIDTH = 2.7e12  # bytes/s: elementwise copy bandwidth measured on the lent H100
LINES: list[str] = []


def say(line: str = "") -> None:
    print(line, flush=True)
    LINES.append(line)


@dataclass
class Config:
    name: str
    family: str  # "qwen3" | "llama"
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype: Any
    bits: int | None = None


GPU_CONFIGS = [
    Config("Qwen3-0.6B bf16", "qwen3", 28, 1024, 16, 8, 128, 3072, 151936, mx.bfloat16),
    Config("Qwen3-0.6B 4-bit", "qwen3", 28, 1024, 16, 8, 128, 3072, 151936, mx.bfloat16, bits=4),
    Config("Llama-3.2-1B bf16", "llama", 16, 2048, 32, 8, 64, 8192, 128256, mx.bfloat16),
    Config("Llama-3.2-1B 4-bit", "llama", 16, 2048, 32, 8, 64, 8192, 128256, mx.bfloat16, bits=4),
]
CPU_CONFIG = Config("small qwen3 fp32 (CPU)", "qwen3", 4, 256, 4, 2, 64, 512, 4096, mx.float32)


def model_args(cfg: Config) -> dict[str, Any]:
    args: dict[str, Any] = {
        "model_type": cfg.family,
        "hidden_size": cfg.hidden,
        "num_hidden_layers": cfg.layers,
        "intermediate_size": cfg.intermediate,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab,
        "tie_word_embeddings": True,
        "max_position_embeddings": 131072,
    }
    if cfg.family == "qwen3":
        args.update(rms_norm_eps=1e-6, rope_theta=1_000_000.0)
    else:
        args.update(
            rms_norm_eps=1e-5,
            rope_theta=500_000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 32.0,
                "high_freq_factor": 4.0,
                "low_freq_factor": 1.0,
                "original_max_position_embeddings": 8192,
            },
        )
    return args


def build_mlx_lm_model(cfg: Config) -> nn.Module:
    """Random weights through mlx-lm's own model code; embeddings ×4 so greedy argmaxes are not near-ties."""
    from mlx_lm.models import llama, qwen3

    module = qwen3 if cfg.family == "qwen3" else llama
    args = model_args(cfg)
    if cfg.family == "llama":
        args.pop("head_dim")
    mx.random.seed(0)
    model = module.Model(module.ModelArgs(**args))
    emb = model.model.embed_tokens
    emb.weight = emb.weight * 4.0
    model.set_dtype(cfg.dtype)
    if cfg.bits:
        nn.quantize(model, group_size=64, bits=cfg.bits)
    mx.eval(model.parameters())
    return model


def build_reference_model(cfg: Config, source: nn.Module) -> nn.Module:
    """mlx_core.models.llama with the same (already quantized) weights."""
    from mlx_core.models import llama as ref

    model = ref.Model(ref.ModelArgs.from_dict(model_args(cfg)))
    model.set_dtype(cfg.dtype)
    if cfg.bits:
        nn.quantize(model, group_size=64, bits=cfg.bits)
    weights = dict(tree_flatten(source.parameters()))
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())
    return model


def weight_bytes(model: nn.Module) -> int:
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


@contextlib.contextmanager
def attn_sdpa_in(model: nn.Module) -> Iterator[None]:
    """Route an mlx-lm model's attention through mlx_core.attn (the decode kernel on CUDA)."""
    import importlib

    from mlx_core.attn import scaled_dot_product_attention, use_decode_kernel
    from mlx_core.generate import clear_compiled_steps

    module = importlib.import_module(type(model).__module__)
    original = module.scaled_dot_product_attention
    module.scaled_dot_product_attention = scaled_dot_product_attention
    use_decode_kernel(True)
    clear_compiled_steps()
    try:
        yield
    finally:
        module.scaled_dot_product_attention = original
        use_decode_kernel(None)  # back to the default (auto)
        clear_compiled_steps()


def timed_tokens(tokens: Iterator[int]) -> tuple[list[int], float]:
    """Consume a token stream; decode tok/s over the tokens after the first."""
    out: list[int] = []
    t_first = t_last = 0.0
    for tok in tokens:
        t_last = time.perf_counter()
        if not out:
            t_first = t_last
        out.append(int(tok))
    return out, (len(out) - 1) / max(t_last - t_first, 1e-9)


def run_mlx_lm(model: nn.Module, prompt: mx.array, n: int) -> tuple[list[int], float]:
    from mlx_lm.generate import generate_step

    return timed_tokens(t for t, _ in generate_step(prompt, model, max_tokens=n))


def run_ours(
    model: nn.Module, prompt: mx.array, n: int, compile: bool, sampler: Any = None
) -> tuple[list[int], float]:
    from mlx_core.generate import Generate

    gen = Generate(model, prompt, max_tokens=n, compile=compile, sampler=sampler)
    tokens, tps = timed_tokens(iter(gen))
    if gen.compiled != compile:
        raise RuntimeError(f"asked compile={compile} but the loop ran compiled={gen.compiled}")
    return tokens, tps


Variant = tuple[str, Callable[[], tuple[list[int], float]]]


def measure_interleaved(variants: list[Variant], runs: int) -> dict[str, Any]:
    """Warm every variant up (and trace it), then run them in turn ``runs`` times (A B C A B C ...), so a
    slow phase of the machine hits every variant alike. Per variant: ``(last tokens, median tok/s, all
    tok/s)``, or the exception it raised (it then leaves the later rounds).
    """
    results: dict[str, Any] = {}
    live = []
    for name, fn in variants:
        try:
            fn()
            live.append((name, fn))
            results[name] = []
        except Exception as exc:  # a broken variant must not hide the others
            results[name] = exc
            LINES.append(traceback.format_exc())
    for _ in range(runs):
        for name, fn in list(live):
            try:
                results[name].append(fn())
            except Exception as exc:
                results[name] = exc
                LINES.append(traceback.format_exc())
                live.remove((name, fn))
    mx.clear_cache()
    out: dict[str, Any] = {}
    for name, res in results.items():
        if isinstance(res, Exception):
            out[name] = res
        else:
            tps = [r[1] for r in res]
            out[name] = (res[-1][0], statistics.median(tps), tps)
    return out


def agreement(tokens: list[int], ref: list[int] | None) -> str:
    if ref is None:
        return "n/a"
    if tokens == ref:
        return "identical"
    i = next(
        (i for i, (a, b) in enumerate(zip(tokens, ref, strict=False)) if a != b), min(len(tokens), len(ref))
    )
    return f"DIFFERS at token {i}"


def bench_config(cfg: Config, args: argparse.Namespace, on_gpu: bool) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    say(f"\n## {cfg.name}")
    t0 = time.perf_counter()
    model = build_mlx_lm_model(cfg)
    nbytes = weight_bytes(model)
    limit = BANDWIDTH / nbytes
    say(
        f"built in {time.perf_counter() - t0:.1f} s; weights {nbytes / 1e9:.3f} GB → limit {limit:,.0f} tok/s"
    )
    prompt = mx.array(np.random.default_rng(1).integers(0, cfg.vocab, size=args.prompt).astype(np.int32))
    n, runs = args.tokens, args.runs
    variants: list[Variant] = [
        ("mlx-lm generate_step", lambda: run_mlx_lm(model, prompt, n)),
        ("ours eager", lambda: run_ours(model, prompt, n, False)),
        ("ours compiled", lambda: run_ours(model, prompt, n, True)),
    ]
    if on_gpu:

        def with_kernels() -> tuple[list[int], float]:
            with attn_sdpa_in(model):
                return run_ours(model, prompt, n, True)

        variants.append(("ours compiled+kernels", with_kernels))

        ref_model: list[nn.Module] = []

        def reference() -> tuple[list[int], float]:
            if not ref_model:
                ref_model.append(build_reference_model(cfg, model))
            return run_ours(ref_model[0], prompt, n, True)

        variants.append(("ref model compiled", reference))
        fused_model: list[nn.Module] = []

        def reference_fused(
            mode: str, greedy_kernel: bool = False, fold_o: bool = True, fold_mlp: bool = True
        ) -> tuple[list[int], float]:
            from mlx_core.generate import clear_compiled_steps, make_sampler
            from mlx_core.kernels import greedy_tokens
            from mlx_core.models import fuse_projections
            from mlx_core.models import fused_decode as fd

            if not fused_model:
                fused_model.append(fuse_projections(build_reference_model(cfg, model)))
            clear_compiled_steps()  # traces are per model: the mode and the folds change them
            sampler = make_sampler(0.0, greedy=greedy_tokens) if greedy_kernel else None
            defaults = fd.FOLD_O_PROJ, fd.FOLD_MLP
            fd.FOLD_O_PROJ, fd.FOLD_MLP = fold_o, fold_mlp
            try:
                with fd.fused_decode(mode):
                    return run_ours(fused_model[0], prompt, n, True, sampler)
            finally:
                fd.FOLD_O_PROJ, fd.FOLD_MLP = defaults

        variants.append(("ref model, fused proj only", lambda: reference_fused("never")))
        variants.append(("ref model, fused decode", lambda: reference_fused("auto")))
        # what the CLI runs: greedy steps sample with mlx_core.kernels.greedy_tokens
        variants.append(("ref model, fused decode+greedy kernel", lambda: reference_fused("auto", True)))
        variants.append(
            ("ref model, fused decode, o_proj apart", lambda: reference_fused("auto", fold_o=False))
        )
        variants.append(
            ("ref model, fused decode, MLP in two launches", lambda: reference_fused("auto", fold_mlp=False))
        )
    if args.variants:
        keep = [v.strip() for v in args.variants.split(",") if v.strip()]
        variants = [v for v in variants if v[0].startswith("mlx-lm") or any(k in v[0] for k in keep)]
    base_tps: float | None = None
    base_tokens: list[int] | None = None
    measured = measure_interleaved(variants, runs)
    for name, _ in variants:
        result = measured[name]
        if isinstance(result, Exception):
            say(f"{name:24s} FAILED: {type(result).__name__}: {result}")
            rows.append((cfg.name, name, "error", "", "", ""))
            continue
        tokens, tps, all_tps = result
        if base_tps is None and name.startswith("mlx-lm"):
            base_tps, base_tokens = tps, tokens
        ratio = f"{tps / base_tps:.2f}×" if base_tps else "n/a"
        agree = "reference" if name.startswith("mlx-lm") else agreement(tokens, base_tokens)
        frac = f"{tps / limit:.1%}" if on_gpu else "n/a"  # the limit is the H100's bandwidth
        spread = ", ".join(f"{x:.0f}" for x in all_tps)
        say(f"{name:24s} {tps:8.1f} tok/s  {ratio:>6s}  {frac:>6s} of limit  {agree}  [{spread}]")
        rows.append((cfg.name, name, f"{tps:.1f}", ratio, frac, agree))
    if args.profile:
        try:
            profile(model, prompt, cfg)
        except Exception as exc:
            say(f"profile FAILED: {type(exc).__name__}: {exc}")
    mx.clear_cache()
    return rows


def profile(model: nn.Module, prompt: mx.array, cfg: Config, steps: int = 64) -> None:
    """Per decode step, synchronous: time to build the graph in Python, then time until it is done."""
    from mlx_core.cache import KVCache, StaticKVCache
    from mlx_core.generate import CompiledDecodeStep, forward_logits, make_sampler, prefill

    sampler = make_sampler(0.0)

    def eager_step(caches: list[Any]) -> Callable[[mx.array], mx.array]:
        def step(y: mx.array) -> mx.array:
            logits = forward_logits(model, y.reshape(1, 1), caches)[:, -1]
            return sampler(logits - mx.logsumexp(logits, -1, keepdims=True))

        return step

    for label in ("eager (KVCache)", "compiled (StaticKVCache)"):
        if label.startswith("eager"):
            caches: list[Any] = [KVCache() for _ in model.layers]
        else:
            caches = [StaticKVCache(prompt.shape[0] + steps + 8) for _ in model.layers]
        prefill(model, prompt[None, :-1], caches)
        step = eager_step(caches) if label.startswith("eager") else CompiledDecodeStep(model, caches, sampler)
        y = step(prompt[-1:])
        mx.eval(y)
        build, wait = [], []
        for _ in range(steps):
            t0 = time.perf_counter()
            y = step(y)
            t1 = time.perf_counter()
            mx.eval(y)
            t2 = time.perf_counter()
            build.append(t1 - t0)
            wait.append(t2 - t1)
        b, w = statistics.median(build) * 1e6, statistics.median(wait) * 1e6
        say(
            f"profile {label:26s} build {b:8.0f} µs  device+sync {w:8.0f} µs  total {b + w:8.0f} µs "
            f"({(b + w) / cfg.layers:.0f} µs/layer; synchronous, no overlap)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="first config only, 64 new tokens, 2 runs")
    parser.add_argument("--cpu-small", action="store_true", help="small float32 model (default without GPU)")
    parser.add_argument(
        "--profile", action="store_true", help="per-step build / device split (on by default on GPU)"
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prompt", type=int, default=0, help="prompt length (GPU 512, CPU 128)")
    parser.add_argument("--tokens", type=int, default=0, help="new tokens (default 256 on GPU, 64 on CPU)")
    parser.add_argument("--only", default="", help="run configs whose name contains this")
    parser.add_argument(
        "--variants", default="", help="comma-separated substrings: run only variants whose name has one"
    )
    args = parser.parse_args()
    on_gpu = mx.default_device().type == mx.gpu and not args.cpu_small
    if on_gpu:
        configs = GPU_CONFIGS
        args.profile = True
        args.prompt, args.tokens = args.prompt or 512, args.tokens or 256
    else:
        if mx.default_device().type == mx.gpu:
            mx.set_default_device(mx.cpu)
        configs = [CPU_CONFIG]
        args.prompt, args.tokens = args.prompt or 128, args.tokens or 64
    if args.quick:
        configs = configs[:1]
        args.tokens, args.runs = min(args.tokens, 64), 2
    if args.only:
        configs = [c for c in configs if args.only.lower() in c.name.lower()]
    import mlx_lm

    say(
        f"# decode benchmark: mlx {mx.__version__}, mlx-lm {mlx_lm.__version__}, device {mx.default_device()}"
    )
    say(f"prompt {args.prompt}, {args.tokens} new tokens, greedy, median of {args.runs} runs after warm-up")
    t0 = time.perf_counter()
    rows: list[tuple[str, ...]] = []
    for cfg in configs:
        try:
            rows += bench_config(cfg, args, on_gpu)
        except Exception as exc:
            say(f"{cfg.name} FAILED: {type(exc).__name__}: {exc}")
            LINES.append(traceback.format_exc())
    say("\n| model | variant | tok/s | vs mlx-lm | of bandwidth limit | greedy vs mlx-lm |")
    say("|---|---|---|---|---|---|")
    for r in rows:
        say("| " + " | ".join(r) + " |")
    say(f"\ntotal {time.perf_counter() - t0:.0f} s")
    out = os.environ.get("OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "decode.txt"), "w") as f:
            f.write("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
