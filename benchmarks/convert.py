"""Benchmark: convert + 4-bit quantize a synthetic Llama checkpoint, mlx_core.convert vs mlx-lm's convert.

Each conversion runs in a fresh subprocess that reports its own wall time and peak RSS, so memory is
measured per tool. The first run of each tool is a warm-up (page cache), then the median of --repeats.
Runs on mx.default_device() (GPU where MLX has one). Usage:

    uv run python benchmarks/convert.py            # ~1 GB float32 checkpoint in 4 input shards
    uv run python benchmarks/convert.py --quick    # ~35 MB, a smoke run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
import mlx.core as mx
tool, src, dest = sys.argv[1:4]
start = time.perf_counter()
if tool == "mlx_core.convert":
    from mlx_core.convert import convert
    convert(src, dest, quantize=True, q_bits=4, q_group_size=64, quiet=True)
else:
    import contextlib, io
    from mlx_lm.convert import convert
    with contextlib.redirect_stdout(io.StringIO()):
        convert(hf_path=src, mlx_path=dest, quantize=True, q_bits=4, q_group_size=64)
seconds = time.perf_counter() - start
try:  # VmHWM: peak RSS of this program (ru_maxrss on Linux also counts the forked parent before exec)
    status = open("/proc/self/status").read()
    peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
print(json.dumps({"seconds": seconds, "peak_rss": peak, "device": str(mx.default_device())}))
"""


def make_checkpoint(
    directory: Path, *, layers: int, hidden: int, inter: int, vocab: int, shard_bytes: int
) -> int:
    """Write a float32 HF-format Llama (random weights), sharded with an index, plus a tiny tokenizer."""
    from safetensors.numpy import save_file

    heads, kv_heads = hidden // 64, max(1, hidden // 256)
    rng = np.random.default_rng(0)
    shapes = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (hidden, hidden),
            p + "self_attn.k_proj.weight": (kv_heads * 64, hidden),
            p + "self_attn.v_proj.weight": (kv_heads * 64, hidden),
            p + "self_attn.o_proj.weight": (hidden, hidden),
            p + "mlp.gate_proj.weight": (inter, hidden),
            p + "mlp.up_proj.weight": (inter, hidden),
            p + "mlp.down_proj.weight": (hidden, inter),
            p + "input_layernorm.weight": (hidden,),
            p + "post_attention_layernorm.weight": (hidden,),
        }
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    groups: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        nbytes = int(np.prod(shape)) * 4
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += nbytes
    weight_map = {}
    for i, names in enumerate(groups):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        part = {n: ((rng.random(shapes[n], dtype=np.float32) - 0.5) * 0.1) for n in names}
        save_file(part, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
        del part
    total = sum(int(np.prod(s)) * 4 for s in shapes.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
    }
    (directory / "config.json").write_text(json.dumps(config))
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(100)} | {"<unk>": 100}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "<unk>"})
    )
    return total


def run_once(tool: str, src: Path, dest: Path) -> dict:
    shutil.rmtree(dest, ignore_errors=True)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, tool, str(src), str(dest)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{tool} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_tensors(a: Path, b: Path) -> bool:
    import mlx.core as mx

    def load(d: Path) -> dict:
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            out.update(mx.load(str(f)))
        return out

    ta, tb = load(a), load(b)
    return set(ta) == set(tb) and all(mx.array_equal(ta[k], tb[k]).item() for k in ta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small checkpoint, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write checkpoints (default: tmp)"
    )
    args = parser.parse_args()
    if args.quick:
        dims = {"layers": 2, "hidden": 512, "inter": 1408, "vocab": 8000, "shard_bytes": 12 << 20}
        repeats = 1
    else:
        dims = {"layers": 16, "hidden": 1024, "inter": 2816, "vocab": 32000, "shard_bytes": 256 << 20}
        repeats = args.repeats
    try:
        import mlx_lm  # noqa: F401

        tools = ["mlx_core.convert", "mlx_lm.convert"]
    except ImportError:
        tools = ["mlx_core.convert"]
        print("mlx-lm not installed: timing mlx_core.convert only")
    work = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=args.workdir))
    try:
        src = work / "src"
        src.mkdir()
        total = make_checkpoint(src, **dims)
        shards = len(list(src.glob("*.safetensors")))
        largest = max(p.stat().st_size for p in src.glob("*.safetensors"))
        results: dict[str, list[dict]] = {t: [] for t in tools}
        for tool in tools:  # warm-up run of each (page cache, imports), not counted
            run_once(tool, src, work / tool)
        for _ in range(repeats):
            for tool in tools:
                results[tool].append(run_once(tool, src, work / tool))
        device = results[tools[0]][0]["device"]
        print(
            f"\nconvert + 4-bit quantize (affine, group 64): {total / 1e9:.2f} GB float32 in {shards} shards "
            f"(largest {largest / 1e6:.0f} MB), device {device}, median of {repeats}\n"
        )
        print(
            f"| {'tool':18s} | {'time s':>8s} | {'peak RSS MB':>11s} | "
            f"{'time vs mlx-lm':>14s} | {'RSS vs mlx-lm':>13s} |"
        )
        print(f"|{'-' * 20}|{'-' * 10}|{'-' * 13}|{'-' * 16}|{'-' * 15}|")
        med = {t: statistics.median(r["seconds"] for r in results[t]) for t in tools}
        rss = {t: statistics.median(r["peak_rss"] for r in results[t]) for t in tools}
        ref = tools[-1]
        for t in tools:
            print(
                f"| {t:18s} | {med[t]:8.2f} | {rss[t] / 1e6:11.0f} | {med[t] / med[ref]:13.2f}x | "
                f"{rss[t] / rss[ref]:12.2f}x |"
            )
        if len(tools) == 2:
            print(f"\noutputs tensor-identical: {same_tensors(work / tools[0], work / tools[1])}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
