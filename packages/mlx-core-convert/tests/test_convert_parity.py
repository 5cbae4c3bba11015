"""Parity with mlx-lm 0.32.2: its loader reads our output, and its own converter writes the same tensors."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.convert import convert, dequantize

pytestmark = pytest.mark.parity

TOKENS = [[91, 3, 17, 42, 5, 88, 60, 2, 9, 31]]


def load_all(directory: Path) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(mx.load(str(file)))
    return out


def logits_of(directory: Path) -> mx.array:
    utils = pytest.importorskip("mlx_lm.utils")
    model, _ = utils.load_model(Path(directory))
    out = model(mx.array(TOKENS))
    mx.eval(out)
    return out


def mlx_lm_convert(src: Path, dest: Path, **kwargs: object) -> Path:
    lm_convert = pytest.importorskip("mlx_lm.convert")
    lm_convert.convert(hf_path=str(src), mlx_path=str(dest), **kwargs)
    return dest


def test_mlx_lm_load_reads_float_output_with_same_logits(tmp_path: Path, llama_dir) -> None:
    mlx_lm = pytest.importorskip("mlx_lm")
    src = llama_dir(shards=2)
    dest = convert(src, tmp_path / "out", max_shard_size=30_000, quiet=True)
    model_ours, tokenizer = mlx_lm.load(str(dest))
    model_src, _ = mlx_lm.load(str(src))
    assert tokenizer.encode("w3 w17", add_special_tokens=False) == [3, 17]
    ours, ref = model_ours(mx.array(TOKENS)), model_src(mx.array(TOKENS))
    assert ours.shape == (1, len(TOKENS[0]), 96)
    assert mx.array_equal(ours, ref)


def test_float16_output_logits_match_float16_reference(tmp_path: Path, llama_dir) -> None:
    src = llama_dir()
    ours = logits_of(convert(src, tmp_path / "out", dtype="float16", quiet=True))
    ref = logits_of(mlx_lm_convert(src, tmp_path / "ref", dtype="float16"))
    assert ours.dtype == mx.float16
    assert mx.array_equal(ours, ref)
    f32 = np.array(logits_of(src))
    np.testing.assert_allclose(np.array(ours.astype(mx.float32)), f32, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"q_bits": 4, "q_group_size": 64},
        {"q_bits": 8, "q_group_size": 32},
        {"q_mode": "mxfp4"},
    ],
    ids=["affine4", "affine8-g32", "mxfp4"],
)
def test_quantized_output_identical_to_mlx_lm_convert(tmp_path: Path, llama_dir, kwargs: dict) -> None:
    src = llama_dir(seed=21)
    ours_dir = convert(src, tmp_path / "ours", quantize=True, quiet=True, **kwargs)
    ref_dir = mlx_lm_convert(src, tmp_path / "ref", quantize=True, **kwargs)
    ours, ref = load_all(ours_dir), load_all(ref_dir)
    assert set(ours) == set(ref)
    for name in ref:
        assert ours[name].dtype == ref[name].dtype and mx.array_equal(ours[name], ref[name]), name
    q_ours = json.loads((ours_dir / "config.json").read_text())["quantization"]
    q_ref = json.loads((ref_dir / "config.json").read_text())["quantization"]
    assert q_ours == q_ref
    assert mx.array_equal(logits_of(ours_dir), logits_of(ref_dir))


def test_mixed_recipe_identical_to_mlx_lm(tmp_path: Path, llama_dir, kit) -> None:
    config = kit.config(num_hidden_layers=9)
    src = kit.write(tmp_path / "src", kit.tensors(seed=22, layers=9), config=config)
    ours_dir = convert(src, tmp_path / "ours", quantize="mixed_3_6", q_group_size=64, quiet=True)
    ref_dir = mlx_lm_convert(
        src, tmp_path / "ref", quantize=True, quant_predicate="mixed_3_6", q_group_size=64
    )
    q_ours = json.loads((ours_dir / "config.json").read_text())["quantization"]
    q_ref = json.loads((ref_dir / "config.json").read_text())["quantization"]
    assert q_ours == q_ref
    assert {v["bits"] for k, v in q_ours.items() if isinstance(v, dict)} == {3, 6}
    ours, ref = load_all(ours_dir), load_all(ref_dir)
    assert set(ours) == set(ref) and all(mx.array_equal(ours[k], ref[k]) for k in ref)
    assert mx.array_equal(logits_of(ours_dir), logits_of(ref_dir))


def test_dequantize_matches_mlx_lm_dequantize(tmp_path: Path, llama_dir) -> None:
    src = llama_dir(seed=23)
    q = convert(src, tmp_path / "q", quantize=True, quant_predicate={"lm_head": {"bits": 8}}, quiet=True)
    ours_dir = dequantize(q, tmp_path / "deq", quiet=True)
    ref_dir = mlx_lm_convert(q, tmp_path / "ref", dequantize=True)
    ours, ref = load_all(ours_dir), load_all(ref_dir)
    assert set(ours) == set(ref)
    for name in ref:
        assert ours[name].dtype == ref[name].dtype and mx.array_equal(ours[name], ref[name]), name
    assert "quantization" not in json.loads((ours_dir / "config.json").read_text())
    assert mx.array_equal(logits_of(ours_dir), logits_of(ref_dir))
