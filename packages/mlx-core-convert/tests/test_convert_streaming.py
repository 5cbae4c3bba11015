"""Streaming: converting a multi-shard checkpoint keeps peak RSS near one shard, not the whole model."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

SHARDS, PER_SHARD, ROWS, COLS = 6, 4, 1024, 2560  # 6 shards x 4 tensors x 10.5 MB = 6 x 42 MB

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import mlx.core as mx
    from mlx_core.convert import convert

    def peak_rss():
        # VmHWM is this program's own peak; Linux's ru_maxrss also counts the parent it was forked from
        try:
            with open("/proc/self/status") as f:
                return int(f.read().split("VmHWM:")[1].split()[0]) * 1024
        except OSError:
            scale = 1 if sys.platform == "darwin" else 1024
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    # warm up MLX (backend, quantize kernels) so the baseline includes its fixed cost
    mx.eval(mx.quantize(mx.ones((64, 64)), group_size=64, bits=4)[0].astype(mx.float16))
    base = peak_rss()
    convert(sys.argv[1], sys.argv[2], quantize=True, dtype="float16", max_shard_size="5GB", quiet=True)
    peak = peak_rss()
    print(json.dumps({"growth_bytes": peak - base, "base_bytes": base}))
    """
)


def test_peak_rss_growth_below_one_and_a_half_shards(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    weight_map: dict[str, str] = {}
    for s in range(SHARDS):
        file = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        part = {
            f"model.layers.{s * PER_SHARD + i}.mlp.up_proj.weight": rng.random((ROWS, COLS), dtype=np.float32)
            - 0.5
            for i in range(PER_SHARD)
        }
        save_file(part, str(src / file))
        weight_map.update(dict.fromkeys(part, file))
        del part
    (src / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    shard_bytes = max(p.stat().st_size for p in src.glob("*.safetensors"))
    total_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))

    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    growth = report["growth_bytes"]
    assert report["base_bytes"] < 250e6  # measuring this program, not the pytest process it was forked from
    assert growth < 1.5 * shard_bytes, (
        f"peak RSS grew {growth / 1e6:.0f} MB; largest shard {shard_bytes / 1e6:.0f} MB"
    )
    assert total_bytes > 5 * shard_bytes  # the bound is far below what loading the whole model would need

    out = json.loads((tmp_path / "out" / "config.json").read_text())
    assert out["quantization"]["bits"] == 4
    assert len(list((tmp_path / "out").glob("*.safetensors"))) == 1  # one 5GB-limit output shard, streamed
