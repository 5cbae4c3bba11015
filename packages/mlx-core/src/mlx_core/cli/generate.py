"""``mlx-core generate``: stream text from a model (the shipped demo model by default), then print speeds.

Plain decoding uses ``mlx_core.generate.Generate``; ``--draft-model`` or ``--prompt-lookup`` switch to
``mlx_core.spec.SpeculativeGenerate`` (lossless: at temperature 0 the text is identical). The generated text
goes to stdout; the statistics (tok/s, peak memory, acceptance) go to stderr so the text can be piped.

``--tensor-parallel`` splits the model over an ``mx.distributed`` group (one process per device, started by
``mlx.launch`` or with the backend's environment set per process): every rank loads only its slices
(``mlx_core.models.load_sharded``) and samples with the same seed, so all ranks pick the same tokens; only
rank 0 prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .errors import CLIError

#: mx.distributed backends (``mlx_core.models.sharding.BACKENDS``; spelled here so --help imports no MLX).
BACKENDS = ("any", "ring", "jaccl", "nccl", "mpi")

DEMO = "demo"
DEMO_DRAFT = "demo-draft"
DEFAULT_PROMPT = "The built-in function"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _draft_length(text: str) -> int | str:
    return "adaptive" if text == "adaptive" else _positive_int(text)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text with a model (default: the small model shipped with mlx-core)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--model",
        default=DEMO,
        help=f"model directory or Hugging Face repo id (default: {DEMO!r}, the shipped demo model)",
    )
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text; '-' reads it from stdin")
    p.add_argument("--max-tokens", type=_positive_int, default=100, help="most tokens to generate (100)")
    p.add_argument("--temperature", type=_non_negative_float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, in (0, 1] (1 = off)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below min_p × the top probability")
    p.add_argument("--repetition-penalty", type=float, default=None, help="e.g. 1.1 (default off)")
    p.add_argument("--repetition-context-size", type=_positive_int, default=20)
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--max-kv-size", type=_positive_int, default=None, help="bound the KV cache (rotating)")
    p.add_argument(
        "--kv-bits", type=int, choices=[2, 3, 4, 5, 6, 8], default=None, help="quantize the KV cache"
    )
    p.add_argument("--kv-group-size", type=_positive_int, default=64, help="KV quantization group size (64)")
    spec = p.add_mutually_exclusive_group()
    spec.add_argument(
        "--draft-model",
        default=None,
        help=f"speculative decoding with this draft model ({DEMO_DRAFT!r}: the shipped draft)",
    )
    spec.add_argument(
        "--prompt-lookup", action="store_true", help="speculative decoding drafting from the prompt's n-grams"
    )
    p.add_argument(
        "--num-draft-tokens",
        type=_draft_length,
        default=None,
        help="tokens drafted per round: an integer or 'adaptive' (default: 3 with a draft model, 10 lookup)",
    )
    p.add_argument(
        "--tensor-parallel",
        action="store_true",
        help="split the model over the processes of an mx.distributed group (start with mlx.launch)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="any",
        help="distributed backend for --tensor-parallel (default: the first one MLX can start)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the generated text")
    p.set_defaults(func=run)


def load(spec: str, group: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a model argument: the shipped demo names, a directory or a Hub id.

    With a distributed ``group`` the model is split over it, each rank reading only its slices. The model
    (each rank's shards, when split) gets fused q/k/v and gate/up projections (same logits, fewer kernels;
    on CUDA the compiled decode step then runs `mlx_core.models.fused_decode`'s three kernels per layer,
    five when split).
    """
    from mlx_core.models import demo_model_path, load_model, load_sharded

    if spec in (DEMO, DEMO_DRAFT):
        try:
            spec = str(demo_model_path(draft=spec == DEMO_DRAFT))
        except FileNotFoundError as err:
            raise CLIError(str(err)) from err
    return load_model(spec, fuse=True) if group is None else load_sharded(spec, group, fuse=True)


def _check_options(args: argparse.Namespace) -> None:
    if not 0.0 < args.top_p <= 1.0:
        raise CLIError(f"--top-p must be in (0, 1], got {args.top_p}")
    if not 0.0 <= args.min_p < 1.0:
        raise CLIError(f"--min-p must be in [0, 1), got {args.min_p}")
    if args.top_k < 0:
        raise CLIError(f"--top-k must be >= 0, got {args.top_k}")
    if args.repetition_penalty is not None and args.repetition_penalty <= 0:
        raise CLIError(f"--repetition-penalty must be > 0, got {args.repetition_penalty}")
    if args.num_draft_tokens is not None and not (args.draft_model or args.prompt_lookup):
        raise CLIError("--num-draft-tokens needs --draft-model or --prompt-lookup")
    if args.backend != "any" and not args.tensor_parallel:
        raise CLIError("--backend needs --tensor-parallel")


def _make_caches(model: Any, args: argparse.Namespace) -> list[Any] | None:
    if not hasattr(model, "make_cache"):
        return None
    return model.make_cache(
        max_kv_size=args.max_kv_size, kv_bits=args.kv_bits, kv_group_size=args.kv_group_size
    )


def run(args: argparse.Namespace) -> int:
    if args.tensor_parallel:
        # MLX's CUDA graphs hold each NCCL all-reduce at ~40 µs instead of ~15 µs; a two-GPU Llama-3-8B
        # decode ran at 188 tok/s with them and 247 without (benchmarks/NOTES.md, 2 x H200). Off unless the
        # environment says otherwise; MLX reads the variable once, so this must precede its first use.
        os.environ.setdefault("MLX_USE_CUDA_GRAPHS", "0")
    import mlx.core as mx
    from mlx_core.generate import Generate, make_logits_processors, make_sampler
    from mlx_core.kernels import greedy_tokens

    _check_options(args)
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt:
        raise CLIError("the prompt is empty; pass --prompt TEXT")
    group, seed = None, args.seed
    if args.tensor_parallel:
        from mlx_core.models import distributed_group

        group = distributed_group(args.backend)
        seed = 0 if seed is None else seed  # every rank must draw the same tokens
    primary = group is None or group.rank() == 0
    model, tokenizer = load(args.model, group)
    # Greedy steps take the two-kernel argmax on CUDA (the MLX ops elsewhere): same tokens, ~35 µs less.
    sampler = make_sampler(args.temperature, args.top_p, args.min_p, top_k=args.top_k, greedy=greedy_tokens)
    processors = make_logits_processors(
        repetition_penalty=args.repetition_penalty, repetition_context_size=args.repetition_context_size
    )
    common: dict[str, Any] = {
        "tokenizer": tokenizer,
        "max_tokens": args.max_tokens,
        "sampler": sampler,
        "logits_processors": processors,
        "caches": _make_caches(model, args),
        "stop": args.stop,
        "seed": seed,
    }
    if args.draft_model or args.prompt_lookup:
        from mlx_core.spec import DraftModelDrafter, PromptLookupDrafter, SpeculativeGenerate

        if args.draft_model:
            draft, draft_tokenizer = load(args.draft_model)
            if draft_tokenizer.vocab_size != tokenizer.vocab_size:
                raise CLIError(
                    f"the draft model's vocabulary ({draft_tokenizer.vocab_size}) differs from the model's "
                    f"({tokenizer.vocab_size}); a draft model must share the model's tokenizer"
                )
            drafter: Any = DraftModelDrafter(draft, caches=_make_caches(draft, args))
        else:
            drafter = PromptLookupDrafter()
        gen: Any = SpeculativeGenerate(
            model, prompt, drafter=drafter, num_draft_tokens=args.num_draft_tokens, **common
        )
    else:
        gen = Generate(model, prompt, **common)

    out = sys.stdout
    for chunk in gen.stream():  # every rank runs the loop (the collectives need all of them)
        if primary:
            out.write(chunk.text)
            out.flush()
    if primary:
        out.write("\n")
        out.flush()
        out.flush()
    if primary and not args.quiet:
        device = str(mx.default_device())
        if group is not None:
            device += f", tensor-parallel over {group.size()} ranks"
        _print_stats(gen.response(), file=sys.stderr, device=device)
    if group is not None:
        from mlx_core.models import leave_group

        leave_group(group)
    return 0


def _print_stats(response: Any, file: Any, device: str) -> None:
    print("=" * 10, file=file)
    print(f"Prompt: {response.prompt_tokens} tokens, {response.prompt_tps:.1f} tokens-per-sec", file=file)
    print(
        f"Generation: {response.generation_tokens} tokens, {response.generation_tps:.1f} tokens-per-sec",
        file=file,
    )
    print(f"Peak memory: {response.peak_memory:.3f} GB ({device})", file=file)
    metrics = getattr(response, "metrics", None)
    if metrics is not None:
        print(
            f"Speculative: acceptance {metrics.acceptance_rate:.1%} ({metrics.accepted}/{metrics.drafted} "
            f"drafted tokens), {metrics.mean_accepted_length:.2f} tokens per target forward",
            file=file,
        )
