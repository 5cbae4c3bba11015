"""One rank of the tensor-parallel tests: load this rank's slices, decode, write a JSON report.

Started twice by tests/test_models_sharding.py (or its GPU twin) with MLX_RANK and MLX_HOSTFILE (ring) or
the NCCL variables set. Not a test module itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_core.generate import Generate
from mlx_core.models import fuse_projections, fused_projection_count
from mlx_core.models import fused_decode as fd
from mlx_core.models.sharded_loading import ShardedCheckpoint, load_sharded_weights
from mlx_core.models.sharding import collectives_per_step, distributed_group, leave_group


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--backend", default="ring")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--prompt", default="1,5,9,3,7")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--shard-lm-head", action="store_true")
    parser.add_argument(
        "--fuse", action="store_true", help="also fuse the local shards and decode through the fused path"
    )
    args = parser.parse_args()

    group = distributed_group(args.backend, expected_size=args.world_size)
    ckpt = ShardedCheckpoint.open(args.model)
    model, _ = load_sharded_weights(args.model, group, shard_lm_head=args.shard_lm_head, checkpoint=ckpt)
    prompt = [int(t) for t in args.prompt.split(",")]

    logits = model(mx.array([prompt]))
    # Evaluate now: a forward with collectives left pending while later graphs run on the generation
    # stream can pair its all-reduces with the other rank's later ones (seen under load: 2 in 32 runs).
    mx.eval(logits)
    greedy = list(Generate(model, prompt, max_tokens=args.max_tokens))
    sampled = list(Generate(model, prompt, temperature=1.0, max_tokens=args.max_tokens, seed=7))
    caches = model.make_cache()
    model(mx.array([prompt]), cache=caches)
    mx.eval([c.state for c in caches])
    fused: dict[str, object] = {}
    if args.fuse:
        fuse_projections(model)  # each rank's own q/k/v and gate/up shards
        calls = [0]
        original = fd.decode_attention_qkv

        def counted(*a: object, **k: object) -> object:
            calls[0] += 1
            return original(*a, **k)  # type: ignore[arg-type]

        fd.decode_attention_qkv = counted  # type: ignore[assignment]
        with fd.fused_decode("always"):  # the CPU runs the fused kernels' MLX-ops paths
            fused["greedy_fused"] = list(Generate(model, prompt, max_tokens=args.max_tokens, compile=True))
        fused["fused_attention_calls"] = calls[0]
        fused["fused_projections"] = fused_projection_count(model)
    report = {
        **fused,
        "rank": group.rank(),
        "size": group.size(),
        "greedy": greedy,
        "sampled": sampled,
        "logits": logits.astype(mx.float32).tolist(),
        "bytes_read": ckpt.bytes_read,
        "local_bytes": sum(v.nbytes for _, v in tree_flatten(model.parameters())),
        "checkpoint_bytes": sum(t.end - t.start for t in ckpt.tensors.values()),
        "cache_key_shape": list(caches[0].state[0].shape),
        "n_heads": model.layers[0].self_attn.n_heads,
        "n_kv_heads": model.layers[0].self_attn.n_kv_heads,
        "collectives": collectives_per_step(model),
    }
    Path(args.out).write_text(json.dumps(report))
    leave_group(group)  # barrier + immediate exit: the ring backend has no orderly shutdown


if __name__ == "__main__":
    main()
