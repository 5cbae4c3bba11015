"""Tensor-parallel decode: ours (mlx_core.models.shard_model) vs mlx-lm's ``Model.shard()``, 1 vs 2 devices.

Llama-3-8B-shaped model (32 layers, hidden 4096, 32 q / 8 kv heads, MLP 14336, vocab 128256), random bf16
weights, batch 1, 256 new tokens after a 32-token prompt; decode tokens/s, median of repeats after a warm-up.

    uv run python benchmarks/tensor_parallel.py            # launcher: every configuration, then a table
    uv run python benchmarks/tensor_parallel.py --quick    # tiny float32 model, ring backend on CPU loopback

With two CUDA GPUs each two-rank configuration starts one process per GPU (CUDA_VISIBLE_DEVICES=rank,
NCCL_HOST_IP=127.0.0.1, NCCL_PORT, MLX_WORLD_SIZE=2, MLX_RANK; NCCL_NVLS_ENABLE stays as the machine sets it,
0 by default here). Without them it falls back to MLX's ring backend over 127.0.0.1 (CPU). Each configuration
is run with CUDA graphs on (MLX's default) and off (MLX_USE_CUDA_GRAPHS=0) when on CUDA.

Rows: ``half``: one device running a model with half the heads and MLP width and no collectives — the
compute floor of one rank. ``allreduce``: latency of one all-sum of a [1, 1, hidden] bf16 vector, measured
as a chain of 256 dependent all-sums.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LLAMA3_8B = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
}
QUICK = {**LLAMA3_8B, "hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 512,
         "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 1024}  # fmt: skip


# ---------------------------------------------------------------------------------------------- worker
def _build(
    impl: str,
    config: dict[str, Any],
    group: Any,
    dtype: Any,
    shard_lm_head: bool,
    for_training: bool,
    fuse: bool = False,
) -> Any:
    import mlx.core as mx

    mx.random.seed(0)  # identical full weights on every rank; each keeps its slice
    if impl == "ours":
        from mlx_core.models.llama import Model, ModelArgs
        from mlx_core.models.sharding import shard_model

        model = Model(ModelArgs.from_dict(config))
        if group is not None:
            shard_model(model, group, shard_lm_head=shard_lm_head, for_training=for_training)
    else:
        from mlx_lm.models.llama import Model as LmModel
        from mlx_lm.models.llama import ModelArgs as LmArgs

        model = LmModel(LmArgs.from_dict(config))
        if group is not None:
            model.shard(group)
    model.set_dtype(dtype)
    for layer in model.layers:  # materialise layer by layer: the full fp32 init never exists at once
        mx.eval(layer.parameters())
    mx.eval(model.parameters())
    if fuse:  # local shards fused: the compiled step takes the fused decode path on CUDA
        from mlx_core.models import fuse_projections

        fuse_projections(model)
        mx.eval(model.parameters())
    return model


def _decode_tps(impl: str, model: Any, prompt: list[int], tokens: int, compile: bool = True) -> float:
    """Decode tokens/s (first token excluded: it carries the prefill)."""
    if impl == "ours":
        from mlx_core.generate import Generate

        it = iter(Generate(model, prompt, max_tokens=tokens, compile="auto" if compile else False))
    else:
        import mlx.core as mx
        from mlx_lm.generate import generate_step

        steps = generate_step(mx.array(prompt), model, max_tokens=tokens)
        it = (int(t) for t, _ in steps)
    next(it)
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    return n / (time.perf_counter() - t0)


def _allreduce_us(group: Any, hidden: int, dtype: Any, n: int = 256) -> float:
    import mlx.core as mx

    x = mx.random.normal((1, 1, hidden)).astype(dtype)
    mx.eval(mx.distributed.all_sum(x, group=group))
    times = []
    for _ in range(3):
        y = x
        t0 = time.perf_counter()
        for _ in range(n):
            y = mx.distributed.all_sum(y, group=group) * 0.5
        mx.eval(y)
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def worker(args: argparse.Namespace) -> None:
    import mlx.core as mx

    config = json.loads(args.config)
    dtype = mx.float32 if args.dtype == "float32" else mx.bfloat16
    group = None
    if args.backend != "none":
        from mlx_core.models.sharding import distributed_group

        group = distributed_group(args.backend, expected_size=2)
    if args.half:
        config = {**config, "num_attention_heads": config["num_attention_heads"] // 2,
                  "num_key_value_heads": config["num_key_value_heads"] // 2,
                  "head_dim": config["hidden_size"] // config["num_attention_heads"],
                  "intermediate_size": config["intermediate_size"] // 2}  # fmt: skip
    result: dict[str, Any] = {}
    if args.impl == "allreduce":
        result["us"] = _allreduce_us(group, config["hidden_size"], dtype)
    else:
        model = _build(args.impl, config, group, dtype, args.shard_lm_head, args.for_training, args.fuse)
        prompt = [int(t) for t in mx.random.randint(0, config["vocab_size"], (32,)).tolist()]
        compile = not args.eager
        _decode_tps(args.impl, model, prompt, min(args.tokens, 32), compile)  # warm-up
        result["tps"] = [
            _decode_tps(args.impl, model, prompt, args.tokens, compile) for _ in range(args.repeats)
        ]
        result["peak_gb"] = mx.get_peak_memory() / 1e9
    if group is None or group.rank() == 0:
        Path(args.out).write_text(json.dumps(result))


# -------------------------------------------------------------------------------------------- launcher
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(
    name: str,
    extra: list[str],
    ranks: int,
    backend: str,
    env_extra: dict[str, str],
    base: list[str],
    tmp: Path,
) -> dict[str, Any] | None:
    out = tmp / f"{name}.json"
    cmd = [sys.executable, __file__, "--worker", "--out", str(out), *base, *extra]
    envs = []
    if ranks == 1:
        envs.append({"CUDA_VISIBLE_DEVICES": "0"} if backend == "nccl" else {})
        cmd += ["--backend", "none"]
    elif backend == "nccl":
        port = str(_free_port())
        for r in range(2):
            envs.append({"CUDA_VISIBLE_DEVICES": str(r), "NCCL_HOST_IP": "127.0.0.1", "NCCL_PORT": port,
                         "MLX_WORLD_SIZE": "2", "MLX_RANK": str(r)})  # fmt: skip
        cmd += ["--backend", "nccl"]
    else:
        hostfile = tmp / "hosts.json"
        hostfile.write_text(json.dumps([[f"127.0.0.1:{_free_port()}"], [f"127.0.0.1:{_free_port()}"]]))
        envs = [{"MLX_HOSTFILE": str(hostfile), "MLX_RANK": str(r)} for r in range(2)]
        cmd += ["--backend", "ring"]
    procs = [
        subprocess.Popen(cmd, env={**os.environ, "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE", "0"),
                                   **env_extra, **e}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for e in envs
    ]  # fmt: skip
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0].decode(errors="replace"))
    except subprocess.TimeoutExpired:
        logs.append("timed out after 300 s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode != 0 for p in procs) or not out.exists():
        print(f"[{name}] failed:\n" + "\n".join(log[-1500:] for log in logs), file=sys.stderr)
        return None
    return json.loads(out.read_text())


def launcher(args: argparse.Namespace) -> None:
    import mlx.core as mx

    gpus = mx.device_count(mx.gpu) if mx.cuda.is_available() else 0
    backend = "nccl" if gpus >= 2 and mx.distributed.is_available("nccl") else "ring"
    config = QUICK if args.quick else LLAMA3_8B
    tokens = 32 if args.quick else args.tokens
    dtype = "float32" if backend == "ring" else "bfloat16"
    base = ["--config", json.dumps(config), "--dtype", dtype, "--tokens", str(tokens)]
    base += ["--repeats", str(1 if args.quick else args.repeats)]
    graph_modes = [("graphs", {})] + ([("no-graphs", {"MLX_USE_CUDA_GRAPHS": "0"})] if gpus else [])
    graph_modes = [m for m in graph_modes if args.graphs == "both" or m[0] == args.graphs]
    have_lm = True
    try:
        import mlx_lm  # noqa: F401
    except ImportError:
        have_lm = False
        print("mlx-lm is not installed: its rows are skipped", file=sys.stderr)
    plan: list[tuple[str, list[str], int]] = [
        ("ours 1 dev", ["--impl", "ours"], 1),
        ("ours 1 dev, fused decode", ["--impl", "ours", "--fuse"], 1),
        ("ours 2 dev, fused decode", ["--impl", "ours", "--fuse"], 2),
        ("ours half model 1 dev (compute floor)", ["--impl", "ours", "--half"], 1),
        ("ours half model 1 dev, fused decode (compute floor)", ["--impl", "ours", "--half", "--fuse"], 1),
        ("ours 2 dev", ["--impl", "ours"], 2),
        ("ours 2 dev, vocab-split head", ["--impl", "ours", "--shard-lm-head"], 2),
        ("ours 2 dev, fused decode, vocab-split head", ["--impl", "ours", "--fuse", "--shard-lm-head"], 2),
        ("ours 2 dev, MLX's layers as is (for_training)", ["--impl", "ours", "--for-training"], 2),
        ("ours 2 dev, eager loop", ["--impl", "ours", "--eager"], 2),
    ]
    if have_lm:
        plan += [("mlx-lm 1 dev", ["--impl", "mlx-lm"], 1), ("mlx-lm shard() 2 dev", ["--impl", "mlx-lm"], 2)]
    if args.rows:
        wanted = [w.strip() for w in args.rows.split(";") if w.strip()]
        plan = [row for row in plan if row[0] in wanted]
    print(f"backend {backend}, {gpus} CUDA devices, model {'quick' if args.quick else 'Llama-3-8B shape'}, "
          f"{dtype}, {tokens} new tokens, mlx {mx.__version__}")  # fmt: skip
    rows: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for mode, env_extra in graph_modes:
            ar = _run(f"allreduce-{mode}", ["--impl", "allreduce"], 2, backend, env_extra, base, tmp)
            if ar:
                print(f"[{mode}] all-sum latency, [1, 1, {config['hidden_size']}]: {ar['us']:.1f} us")
            for i, (name, extra, ranks) in enumerate(plan):
                res = _run(f"{mode}-{i}", extra, ranks, backend, env_extra, base, tmp)
                if res:
                    rows[(mode, name)] = statistics.median(res["tps"])
                    print(f"[{mode}] {name}: {rows[(mode, name)]:.1f} tok/s (runs {res['tps']}), "
                          f"peak {res['peak_gb']:.1f} GB", flush=True)  # fmt: skip
    print()
    print("| CUDA graphs | configuration | decode tok/s | vs ours 1 dev | vs mlx-lm 2 dev (same mode) |")
    print("|---|---|---|---|---|")
    for (mode, name), tps in rows.items():
        one = rows.get((mode, "ours 1 dev"))
        lm2 = rows.get((mode, "mlx-lm shard() 2 dev"))
        r1 = f"{tps / one:.2f}x" if one else "-"
        r2 = f"{tps / lm2:.2f}x" if lm2 else "-"
        print(f"| {mode} | {name} | {tps:.1f} | {r1} | {r2} |")
    for mode, _ in graph_modes:
        mine = [(k[1], t) for k, t in rows.items() if k[0] == mode]
        one_best = max((t for name, t in mine if name.startswith("ours 1 dev")), default=0)
        two_best = max((t for name, t in mine if name.startswith("ours 2 dev")), default=0)
        if one_best and two_best:
            print(f"[{mode}] best ours 2 dev vs best ours 1 dev: {two_best / one_best:.2f}x")
    lm2_default = rows.get(("graphs", "mlx-lm shard() 2 dev"))
    if lm2_default:
        best = max(((t, k) for k, t in rows.items() if k[1].startswith("ours 2 dev")), default=None)
        if best:
            print(f"\nbest ours 2 dev ({best[1][0]}, {best[1][1]}) vs mlx-lm shard() with MLX defaults: "
                  f"{best[0] / lm2_default:.2f}x")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny float32 model, 32 tokens, one repeat")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--graphs", choices=("both", "graphs", "no-graphs"), default="both", help="CUDA graph modes"
    )
    p.add_argument("--rows", default="", help="only these configurations (exact names, ';'-separated)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="none", help=argparse.SUPPRESS)
    p.add_argument("--config", default=json.dumps(LLAMA3_8B), help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="bfloat16", help=argparse.SUPPRESS)
    p.add_argument("--half", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shard-lm-head", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--for-training", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fuse", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    worker(args) if args.worker else launcher(args)


if __name__ == "__main__":
    main()
