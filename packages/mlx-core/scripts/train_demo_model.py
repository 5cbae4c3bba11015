"""Train the small demo model that ships with mlx-core, and its draft, on text every Python install carries.

Corpus: the docstrings of the standard library's modules, classes and functions (via ``inspect``) and the
language reference topics of ``pydoc_data.topics``. Tokenizer: byte-level BPE trained with ``tokenizers``.
Models: Llama-style decoders built from ``mlx_core.models`` — a main model of a few million parameters and
a smaller draft sharing its tokenizer (for speculative decoding). Output, per model directory:
``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``.

    # on a GPU (a few minutes; writes src/mlx_core/models/demo and demo_draft)
    python packages/mlx-core/scripts/train_demo_model.py
    # CPU smoke test (seconds; a tiny model in a scratch directory)
    python packages/mlx-core/scripts/train_demo_model.py --quick --out-dir /tmp/demo

Needs only mlx, numpy, tokenizers and the mlx-core packages; no network.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import math
import os
import pkgutil
import sys
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlx_core.kernels import ENV_VAR as KERNELS_BACKEND_VAR
from mlx_core.kernels import clear_backend_cache
from mlx_core.models import Model, ModelArgs
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "mlx_core" / "models"
SKIP_MODULES = (
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "pydoc",
    "ensurepip",
    "lib2to3",
    "msilib",
    "test",
    "distutils",
    "venv",
    "unittest.test",
    "ctypes.test",
    "sqlite3.test",
)


# ----------------------------------------------------------------------------------------------- corpus
def _skipped(name: str) -> bool:
    return any(name == s or name.startswith(s + ".") for s in SKIP_MODULES) or any(
        part.startswith("_") for part in name.split(".")
    )


def _quiet_import(name: str) -> Any:
    """Import a stdlib module with its warnings and prints silenced; None if it cannot be imported here."""
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException:
        return None


def stdlib_modules() -> dict[str, Any]:
    """Importable public stdlib modules and their public submodules, by name."""
    names = getattr(sys, "stdlib_module_names", None)
    if names is None:  # Python 3.9: fall back to what pkgutil sees next to the os module
        names = {m.name for m in pkgutil.iter_modules([str(Path(inspect.getfile(inspect)).parent)])}
        names |= set(sys.builtin_module_names)
    modules: dict[str, Any] = {}
    for name in sorted(n for n in names if not _skipped(n)):
        module = _quiet_import(name)
        if module is None:
            continue
        modules[name] = module
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
            if not _skipped(info.name) and (sub := _quiet_import(info.name)) is not None:
                modules[info.name] = sub
    return modules


def build_corpus(quick: bool = False) -> list[str]:
    """Documents (one per docstring or pydoc topic), deduplicated, in a stable order."""
    from pydoc_data.topics import topics

    docs: list[str] = []
    seen: set[str] = set()

    def add(title: str, obj: Any) -> None:
        text = inspect.getdoc(obj) if not isinstance(obj, str) else obj.strip()
        if text and len(text) >= 40 and text not in seen:
            seen.add(text)
            docs.append(f"{title}\n\n{text}")

    for key in sorted(topics):
        add(key, topics[key])
    if quick:
        return docs[:30]
    for name, module in sorted(stdlib_modules().items()):
        add(name, module)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isroutine(obj):
                add(f"{name}.{attr}", obj)
            if inspect.isclass(obj):
                for member, value in sorted(vars(obj).items()):
                    if not member.startswith("_") and (
                        inspect.isroutine(value) or isinstance(value, property)
                    ):
                        add(f"{name}.{attr}.{member}", value)
    return docs


# -------------------------------------------------------------------------------------------- tokenizer
def train_tokenizer(docs: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style): every string encodes, nothing is unknown."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(docs, trainer=trainer)
    return tokenizer


def tokenizer_config(max_length: int) -> dict[str, Any]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": None,
        "add_bos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }


def encode_corpus(tokenizer: Tokenizer, docs: list[str], eos_id: int) -> np.ndarray:
    """One stream of token ids, each document followed by EOS."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(docs):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    return np.asarray(ids, dtype=np.int32)


# ------------------------------------------------------------------------------------------------ model
@dataclass
class Size:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int


SIZES = {
    "main": Size(hidden=256, layers=4, heads=4, kv_heads=2, ffn=704),
    "draft": Size(hidden=128, layers=2, heads=2, kv_heads=1, ffn=384),
    "quick-main": Size(hidden=64, layers=2, heads=2, kv_heads=1, ffn=128),
    "quick-draft": Size(hidden=32, layers=1, heads=2, kv_heads=1, ffn=64),
}


def model_config(size: Size, vocab_size: int, eos_id: int, max_len: int, dtype: str) -> dict[str, Any]:
    """A Hugging Face style Llama config.json."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": size.hidden,
        "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads,
        "num_key_value_heads": size.kv_heads,
        "head_dim": size.hidden // size.heads,
        "intermediate_size": size.ffn,
        "vocab_size": vocab_size,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": max_len,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": eos_id,
        "torch_dtype": dtype,
    }


def count_parameters(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


# --------------------------------------------------------------------------------------------- training
def lr_schedule(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: Model,
    data: mx.array,
    val_data: mx.array,
    *,
    steps: int,
    max_seconds: float,
    batch_size: int,
    seq_len: int,
    lr: float,
    log_every: int,
    name: str,
    compile: bool,
) -> float:
    """AdamW on random windows of the token stream; returns the last logged train loss.

    The step count is capped so the run fits ``max_seconds``: after a short calibration the remaining steps
    are set from the measured time per step, and the cosine schedule is fitted to that count. The corpus is
    small, so the held-out loss is measured at every log and the best weights are kept (early stopping).
    """
    optimizer = optim.AdamW(learning_rate=lr, weight_decay=0.1, betas=[0.9, 0.95])
    offsets = mx.arange(seq_len + 1)

    def loss_fn(model: Model, x: mx.array, y: mx.array) -> mx.array:
        return nn.losses.cross_entropy(model(x).astype(mx.float32), y, reduction="mean")

    state = [model.state, optimizer.state, mx.random.state]

    def step_fn(lr_now: mx.array) -> mx.array:
        starts = mx.random.randint(0, data.size - seq_len - 1, (batch_size,))
        batch = data[starts[:, None] + offsets]
        loss, grads = nn.value_and_grad(model, loss_fn)(model, batch[:, :-1], batch[:, 1:])
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        optimizer.learning_rate = lr_now
        optimizer.update(model, grads)
        return loss

    if compile:
        step_fn = partial(mx.compile, inputs=state, outputs=state)(step_fn)
    warmup = min(100, max(1, steps // 10))
    total, start, last, running = steps, time.perf_counter(), float("nan"), []
    best_val, best_step, best_params = float("inf"), 0, tree_flatten(model.parameters())
    calibrate_from, calibrate_to = min(3, steps), min(30, steps)
    for step in range(steps):
        if step >= total:
            break
        if step == calibrate_from:
            calibrate_start = time.perf_counter()
        loss = step_fn(mx.array(lr_schedule(step, total, lr, warmup), dtype=mx.float32))
        mx.eval(state, loss)
        running.append(loss.item())
        if step + 1 == calibrate_to and calibrate_to > calibrate_from:
            now = time.perf_counter()
            per_step = (now - calibrate_start) / (calibrate_to - calibrate_from)
            affordable = calibrate_to + int((max_seconds - (now - start)) / max(per_step, 1e-6))
            total = max(calibrate_to, min(steps, affordable))
            print(f"[{name}] {per_step * 1e3:.1f} ms/step -> training {total} steps", flush=True)
        if (step + 1) % log_every == 0 or step + 1 == total:
            last = float(np.mean(running))
            running = []
            val = evaluate(model, val_data, seq_len)
            if val < best_val:
                best_val, best_step, best_params = val, step + 1, tree_flatten(model.parameters())
            elapsed = time.perf_counter() - start
            tps = (step + 1) * batch_size * seq_len / elapsed
            print(
                f"[{name}] step {step + 1:5d}/{total} loss {last:.3f} held-out {val:.3f} "
                f"lr {lr_schedule(step, total, lr, warmup):.2e} {tps / 1e3:.0f}k tok/s {elapsed:.0f}s",
                flush=True,
            )
    if best_step and best_step != total:
        print(f"[{name}] keeping the weights of step {best_step} (best held-out loss {best_val:.3f})")
        model.load_weights(best_params)
    return last


def evaluate(model: Model, data: mx.array, seq_len: int, max_windows: int = 64) -> float:
    """Mean next-token cross-entropy over consecutive windows of held-out tokens."""
    n = min(max_windows, (data.size - 1) // seq_len)
    if n == 0:
        return float("nan")
    x = data[: n * seq_len].reshape(n, seq_len)
    y = data[1 : n * seq_len + 1].reshape(n, seq_len)
    return nn.losses.cross_entropy(model(x).astype(mx.float32), y, reduction="mean").item()


def greedy_agreement(main: Model, draft: Model, data: mx.array, seq_len: int, max_windows: int = 32) -> float:
    """Fraction of held-out positions where the draft's argmax equals the main model's (greedy acceptance)."""
    n = min(max_windows, data.size // seq_len)
    if n == 0:
        return float("nan")
    x = data[: n * seq_len].reshape(n, seq_len)
    return (main(x).argmax(-1) == draft(x).argmax(-1)).astype(mx.float32).mean().item()


def greedy_sample(model: Model, tokenizer: Tokenizer, prompt: str, max_tokens: int, eos_id: int) -> str:
    """Plain greedy decoding with the model's KV caches (self-contained; the CLI uses mlx_core.generate)."""
    ids = tokenizer.encode(prompt).ids
    caches = model.make_cache()
    logits = model(mx.array([ids]), cache=caches)
    out: list[int] = []
    for _ in range(max_tokens):
        token = int(logits[0, -1].argmax().item())
        if token == eos_id:
            break
        out.append(token)
        logits = model(mx.array([[token]]), cache=caches)
    return prompt + tokenizer.decode(out)


def save_model(
    model: Model, config: dict[str, Any], tokenizer: Tokenizer, out: Path, dtype: mx.Dtype, max_len: int
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    weights = tree_map(lambda w: w.astype(dtype), weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(max_len), indent=2) + "\n")


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="tiny corpus and models, a few steps (CPU smoke test)"
    )
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help="writes <out>/demo and <out>/demo_draft")
    p.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary (default 4096; quick 384)")
    p.add_argument("--steps", type=int, default=None, help="max steps for the main model (default 5000)")
    p.add_argument("--draft-steps", type=int, default=None, help="max steps for the draft (default 3000)")
    p.add_argument("--seconds", type=float, default=150.0, help="time budget for the main model")
    p.add_argument("--draft-seconds", type=float, default=60.0, help="time budget for the draft model")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default 32; quick 8)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 256; quick 32)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true", help="eager train step (compiled by default on GPU)")
    p.add_argument("--prompt", default="The built-in function", help="prompt of the sample generation")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    vocab_size = args.vocab_size or (384 if quick else 4096)
    steps = args.steps or (40 if quick else 5000)
    draft_steps = args.draft_steps or (20 if quick else 3000)
    batch_size = args.batch_size or (8 if quick else 32)
    seq_len = args.seq_len or (32 if quick else 256)
    dtype_name = args.dtype or ("float32" if quick else "bfloat16")
    max_len = 1024
    # The fused CUDA/Metal kernels have no gradient: train with their pure-MLX (differentiable) twin.
    os.environ[KERNELS_BACKEND_VAR] = "fallback"
    clear_backend_cache()
    mx.random.seed(args.seed)
    np.random.seed(args.seed)
    print(f"device {mx.default_device()}, mlx {mx.__version__}, python {sys.version.split()[0]}", flush=True)

    t0 = time.perf_counter()
    docs = build_corpus(quick)
    print(f"corpus: {len(docs)} documents, {sum(map(len, docs)) / 1e6:.2f} M characters", flush=True)
    tokenizer = train_tokenizer(docs, vocab_size)
    eos_id = tokenizer.token_to_id(EOS)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(docs))
    n_val = max(1, len(docs) // 50)
    val_docs = [docs[i] for i in order[:n_val]]
    train_docs = [docs[i] for i in order[n_val:]]
    train_ids = encode_corpus(tokenizer, train_docs, eos_id)
    val_ids = encode_corpus(tokenizer, val_docs, eos_id)
    print(
        f"tokenizer: vocab {tokenizer.get_vocab_size()}, train {train_ids.size / 1e3:.0f}k tokens, "
        f"held-out {val_ids.size / 1e3:.0f}k tokens ({time.perf_counter() - t0:.1f}s)",
        flush=True,
    )
    train_data, val_data = mx.array(train_ids), mx.array(val_ids)

    results: dict[str, Model] = {}
    for name, max_steps, seconds in (
        ("main", steps, args.seconds),
        ("draft", draft_steps, args.draft_seconds),
    ):
        size = SIZES[f"quick-{name}" if quick else name]
        config = model_config(size, tokenizer.get_vocab_size(), eos_id, max_len, dtype_name)
        model = Model(ModelArgs.from_dict(config))
        mx.eval(model.parameters())
        print(f"[{name}] {count_parameters(model) / 1e6:.2f} M parameters", flush=True)
        final = train(
            model,
            train_data,
            val_data,
            steps=max_steps,
            max_seconds=seconds,
            batch_size=batch_size,
            seq_len=seq_len,
            lr=args.lr,
            log_every=10 if quick else 250,
            name=name,
            compile=not args.no_compile and mx.default_device() == mx.gpu,
        )
        model.set_dtype(getattr(mx, dtype_name))
        val = evaluate(model, val_data, seq_len)
        print(f"[{name}] final train loss {final:.3f}, held-out loss {val:.3f} ({dtype_name})", flush=True)
        out = args.out_dir / ("demo" if name == "main" else "demo_draft")
        save_model(model, config, tokenizer, out, getattr(mx, dtype_name), max_len)
        print(f"[{name}] wrote {out}", flush=True)
        results[name] = model

    agreement = greedy_agreement(results["main"], results["draft"], val_data, seq_len)
    print(f"draft/main greedy agreement on held-out text: {agreement:.1%}")
    sample = greedy_sample(results["main"], tokenizer, args.prompt, 48 if quick else 80, eos_id)
    print(f"sample (greedy):\n{sample}")
    print(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
