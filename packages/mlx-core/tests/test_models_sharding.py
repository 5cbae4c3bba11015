"""Tensor parallelism: two ranks over MLX's ring backend on loopback decode exactly like one process.

Each test writes a tiny random checkpoint, computes the unsharded reference in this process, then starts two
worker processes (tests/models_sharding_worker.py) that each load only their slices and decode.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_core.generate import Generate
from mlx_core.models.llama import Model, ModelArgs
from mlx_core.models.sharded_loading import ShardedCheckpoint, _split_axis, read_safetensors_index
from mlx_core.models.sharding import ShardingError, check_shardable, distributed_group, shard_model

WORKER = Path(__file__).with_name("models_sharding_worker.py")
PROMPT = [1, 5, 9, 3, 7]
MAX_TOKENS = 12

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 96,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 96,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
    "attention_bias": True,
}
QWEN3 = {
    "model_type": "qwen3",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "vocab_size": 96,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


def _write_checkpoint(directory: Path, config: dict[str, Any], seed: int, quantize: bool = False) -> Model:
    """A random float32 model saved as two safetensors files + config.json; returns the model."""
    mx.random.seed(seed)
    model = Model(ModelArgs.from_dict(config))
    # Larger-than-default weights so the logits have clear margins (greedy ties would be luck, not a test).
    params = [
        (k, v * 3.0 if v.ndim == 2 else v + 0.1 * mx.random.normal(v.shape))
        for k, v in tree_flatten(model.parameters())
    ]
    model.load_weights(params)
    if quantize:
        nn.quantize(model, group_size=32, bits=4)
        config = {**config, "quantization": {"group_size": 32, "bits": 4}}
        params = tree_flatten(model.parameters())
    mx.eval(model.parameters())
    directory.mkdir(parents=True, exist_ok=True)
    half = len(params) // 2
    mx.save_safetensors(str(directory / "model-00001-of-00002.safetensors"), dict(params[:half]))
    mx.save_safetensors(str(directory / "model-00002-of-00002.safetensors"), dict(params[half:]))
    (directory / "config.json").write_text(json.dumps(config))
    return model


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run_ring(tmp: Path, model_dir: Path, *extra: str, timeout: float = 45.0) -> list[dict[str, Any]]:
    """Start two ranks over the ring backend on 127.0.0.1; return their JSON reports (rank order)."""
    hostfile = tmp / "hosts.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in _free_ports(2)]))
    env = {"MLX_HOSTFILE": str(hostfile)}
    return _run_ranks(tmp, model_dir, "ring", [env, env], *extra, timeout=timeout)


def _run_nccl(tmp: Path, model_dir: Path, *extra: str, timeout: float = 300.0) -> list[dict[str, Any]]:
    """Two ranks over NCCL, one GPU each (CUDA_VISIBLE_DEVICES), rendezvous on 127.0.0.1."""
    common = {"NCCL_HOST_IP": "127.0.0.1", "NCCL_PORT": str(_free_ports(1)[0]), "MLX_WORLD_SIZE": "2"}
    envs = [{**common, "CUDA_VISIBLE_DEVICES": str(rank)} for rank in range(2)]
    return _run_ranks(tmp, model_dir, "nccl", envs, *extra, timeout=timeout)


def _run_ranks(
    tmp: Path, model_dir: Path, backend: str, envs: list[dict[str, str]], *extra: str, timeout: float
) -> list[dict[str, Any]]:
    procs = []
    for rank, rank_env in enumerate(envs):
        env = {**os.environ, **rank_env, "MLX_RANK": str(rank), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, str(WORKER), "--model", str(model_dir), "--out", str(tmp / f"rank{rank}.json")]
        cmd += ["--backend", backend, "--prompt", ",".join(map(str, PROMPT)), "--max-tokens", str(MAX_TOKENS)]
        procs.append(
            subprocess.Popen([*cmd, *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=timeout)
            outputs.append(out.decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def _reference(model: Model) -> tuple[list[int], np.ndarray]:
    greedy = list(Generate(model, PROMPT, max_tokens=MAX_TOKENS))
    logits = np.array(model(mx.array([PROMPT])).astype(mx.float32))
    return greedy, logits


requires_ring = pytest.mark.skipif(not mx.distributed.is_available("ring"), reason="no ring backend")


@requires_ring
@pytest.mark.parametrize(
    ("name", "config", "quantize"),
    [("llama", LLAMA, False), ("qwen3", QWEN3, False), ("qwen3-q4", QWEN3, True)],
)
def test_sharded_greedy_matches_unsharded(
    tmp_path: Path, name: str, config: dict[str, Any], quantize: bool
) -> None:
    model = _write_checkpoint(tmp_path / name, config, seed=3, quantize=quantize)
    greedy, logits = _reference(model)
    reports = _run_ring(tmp_path, tmp_path / name)
    for r in reports:
        assert r["size"] == 2
        assert r["greedy"] == greedy
        np.testing.assert_allclose(np.array(r["logits"]), logits, rtol=1e-4, atol=1e-4)
        # Local heads only: the KV cache holds num_key_value_heads / 2 heads.
        assert r["n_heads"] == config["num_attention_heads"] // 2
        assert r["cache_key_shape"][1] == config["num_key_value_heads"] // 2
        assert r["collectives"] == 2 * config["num_hidden_layers"]
    # Same seed on every rank -> the same sampled tokens.
    assert reports[0]["sampled"] == reports[1]["sampled"]
    assert reports[0]["logits"] == reports[1]["logits"]


@requires_ring
@pytest.mark.parametrize(
    ("name", "quantize"), [("qwen3", False), ("qwen3-q4", True), ("llama-nobias", False)]
)
def test_sharded_fused_decode_matches_unsharded(tmp_path: Path, name: str, quantize: bool) -> None:
    """shard, then fuse each rank's local shards, then decode through the fused path (compiled)."""
    config = QWEN3 if name.startswith("qwen3") else {**LLAMA, "attention_bias": False}
    model = _write_checkpoint(tmp_path / name, config, seed=5, quantize=quantize)
    greedy, _ = _reference(model)
    reports = _run_ring(tmp_path, tmp_path / name, "--fuse")
    for r in reports:
        assert r["greedy_fused"] == greedy
        assert r["fused_projections"] == 2 * config["num_hidden_layers"]
        # Traced once: one fused attention call per layer (then the trace replays).
        assert r["fused_attention_calls"] == config["num_hidden_layers"]


@requires_ring
def test_per_rank_loading_reads_only_its_slices_and_vocab_split_head(tmp_path: Path) -> None:
    model = _write_checkpoint(tmp_path / "m", LLAMA, seed=5)
    greedy, logits = _reference(model)
    reports = _run_ring(tmp_path, tmp_path / "m", "--shard-lm-head")
    full = dict(tree_flatten(model.parameters()))
    replicated = sum(
        v.nbytes
        for k, v in full.items()
        if "norm" in k or "embed" in k or "o_proj.bias" in k or "down_proj.bias" in k
    )
    split = sum(v.nbytes for v in full.values()) - replicated
    for r in reports:
        assert r["greedy"] == greedy
        np.testing.assert_allclose(np.array(r["logits"]), logits, rtol=1e-4, atol=1e-4)
        # Exactly this rank's share was copied out of the files: the split half plus the replicated rest.
        assert r["bytes_read"] == r["local_bytes"] == split // 2 + replicated
        assert r["bytes_read"] < 0.75 * r["checkpoint_bytes"]
        assert r["collectives"] == 2 * LLAMA["num_hidden_layers"] + 1


def test_checkpoint_reader_slices_match_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 8)).astype(np.float32)
    b = mx.array(rng.standard_normal((4, 10)).astype(np.float32)).astype(mx.bfloat16)
    mx.save_safetensors(str(tmp_path / "x.safetensors"), {"a": mx.array(a), "b": b})
    ckpt = ShardedCheckpoint.open(tmp_path)
    np.testing.assert_array_equal(np.array(ckpt.read("a", 0, 1, 2)), a[3:])
    np.testing.assert_array_equal(np.array(ckpt.read("a", 1, 0, 2)), a[:, :4])
    got = ckpt.read("b", 1, 1, 2)
    assert got.dtype == mx.bfloat16
    assert mx.array_equal(got, b[:, 5:]).item()
    assert ckpt.bytes_read == 3 * 8 * 4 + 6 * 4 * 4 + 4 * 5 * 2


def test_checkpoint_reader_rejects_bad_headers(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header length"):
        read_safetensors_index(bad)
    lying = tmp_path / "lying.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 60]}}).encode()
    lying.write_bytes(len(header).to_bytes(8, "little") + header + bytes(60))
    with pytest.raises(ValueError, match="inconsistent offsets"):
        read_safetensors_index(lying)


def test_split_axis_rules() -> None:
    assert _split_axis("w", (8, 4), (8, 4), 2) is None
    assert _split_axis("w", (8, 4), (4, 4), 2) == 0
    assert _split_axis("w", (8, 4), (8, 2), 2) == 1
    with pytest.raises(ValueError, match="does not split"):
        _split_axis("w", (8, 4), (3, 4), 2)


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"num_attention_heads": 6, "num_key_value_heads": 6}, "num_attention_heads"),
        ({"num_key_value_heads": 1}, "num_key_value_heads"),
        ({"num_key_value_heads": 4, "intermediate_size": 98}, "intermediate_size"),
    ],
)
def test_indivisible_shapes_are_rejected(change: dict[str, int], name: str) -> None:
    args = ModelArgs.from_dict({**LLAMA, **change})
    with pytest.raises(ShardingError, match=f"{name} .* not divisible by the group size \\(4\\)"):
        check_shardable(args, 4)
    check_shardable(ModelArgs.from_dict(LLAMA), 2)


def test_vocab_split_needs_untied_head() -> None:
    model = Model(ModelArgs.from_dict(QWEN3))
    group = mx.distributed.init()  # size 1 here: the check comes before any splitting
    with pytest.raises(ShardingError, match="untied"):
        shard_model(model, group, shard_lm_head=True)


def test_single_rank_shard_is_identity() -> None:
    mx.random.seed(0)
    model = Model(ModelArgs.from_dict(LLAMA))
    x = mx.array([PROMPT])
    before = model(x)
    assert shard_model(model, mx.distributed.init()) is model
    assert mx.array_equal(before, model(x)).item()


def test_backend_errors_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ShardingError, match="unknown distributed backend"):
        distributed_group("carrier-pigeon")
    if not mx.distributed.is_available("nccl"):
        with pytest.raises(ShardingError, match="'nccl' is unavailable"):
            distributed_group("nccl")
    if mx.distributed.is_available("ring"):
        monkeypatch.delenv("MLX_HOSTFILE", raising=False)
        with pytest.raises(ShardingError, match="MLX_HOSTFILE"):
            distributed_group("ring")


@requires_ring
def test_world_size_mismatch_is_reported(tmp_path: Path) -> None:
    """Two ring ranks started for a job planned for three must fail fast with a clear message."""
    with pytest.raises(AssertionError, match="world size mismatch: the launcher started 2 processes but 3"):
        _run_ring(tmp_path, tmp_path, "--world-size", "3", timeout=30.0)


def _cuda_devices() -> int:
    return mx.device_count(mx.gpu) if mx.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(
    _cuda_devices() < 2 or not mx.distributed.is_available("nccl"), reason="needs 2 CUDA GPUs"
)
@pytest.mark.parametrize(("name", "config"), [("llama", LLAMA), ("qwen3", QWEN3)])
def test_nccl_sharded_greedy_matches_unsharded(tmp_path: Path, name: str, config: dict[str, Any]) -> None:
    model = _write_checkpoint(tmp_path / name, config, seed=3)
    greedy, logits = _reference(model)
    reports = _run_nccl(tmp_path, tmp_path / name, "--fuse")
    for r in reports:
        assert r["greedy"] == greedy
        assert r["greedy_fused"] == greedy  # the fused decode kernels on each GPU, all-reduced over NCCL
        # GPU float32 matmuls may use TF32 in either process: compare logits loosely, tokens exactly.
        np.testing.assert_allclose(np.array(r["logits"]), logits, rtol=2e-2, atol=2e-2)
        assert r["cache_key_shape"][1] == config["num_key_value_heads"] // 2
    assert reports[0]["sampled"] == reports[1]["sampled"]
    assert reports[0]["greedy"] == reports[1]["greedy"]
