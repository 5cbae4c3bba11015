"""dequantize(): quantized MLX directories back to float weights."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.convert import ConvertError, convert, dequantize


def load_all(directory: Path) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for file in sorted(directory.glob("*.safetensors")):
        out.update(mx.load(str(file)))
    return out


def affine_reference(w: np.ndarray, group: int, bits: int) -> np.ndarray:
    """Dequantized weight computed in float64 numpy from mx.quantize's packed output."""
    wq, scales, biases = mx.quantize(mx.array(w), group_size=group, bits=bits)
    packed = np.array(wq).view(np.uint8)
    if bits == 8:
        q = packed.astype(np.float64)
    else:
        assert bits == 4
        q = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(w.shape).astype(np.float64)
    s = np.repeat(np.array(scales, np.float64), group, axis=-1)
    b = np.repeat(np.array(biases, np.float64), group, axis=-1)
    return q * s + b


def test_round_trip_matches_float64_reference(tmp_path: Path, llama_dir, kit) -> None:
    tensors = kit.tensors(seed=31)
    q = convert(
        llama_dir(tensors=tensors),
        tmp_path / "q",
        quantize=True,
        quant_predicate={"lm_head": {"bits": 8}},
        quiet=True,
    )
    out = load_all(dequantize(q, tmp_path / "d", quiet=True))
    assert set(out) == set(tensors)
    for name, ref in tensors.items():
        got = np.array(out[name])
        assert got.dtype == np.float32
        if ref.ndim == 2:
            bits = 8 if name.startswith("lm_head") else 4
            expected = affine_reference(ref, 64, bits)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
            step = np.abs(ref).max() * 2 / (2**bits - 1)
            assert np.abs(got - ref).max() <= step  # within one quantization step of the original
        else:
            np.testing.assert_array_equal(got, ref)
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert "quantization" not in config and "quantization_config" not in config


def test_dequantize_to_float16_and_fp_mode(tmp_path: Path, llama_dir, kit) -> None:
    tensors = kit.tensors(seed=32)
    q = convert(llama_dir(tensors=tensors), tmp_path / "q", quantize=True, q_mode="mxfp8", quiet=True)
    out = load_all(dequantize(q, tmp_path / "d", dtype="float16", quiet=True))
    w = mx.array(tensors["model.layers.0.mlp.up_proj.weight"])
    wq, scales = mx.quantize(w, group_size=32, bits=8, mode="mxfp8")[:2]
    expected = mx.dequantize(wq, scales, None, group_size=32, bits=8, mode="mxfp8", dtype=mx.float16)
    assert out["model.layers.0.mlp.up_proj.weight"].dtype == mx.float16
    assert mx.array_equal(out["model.layers.0.mlp.up_proj.weight"], expected)
    # mxfp scales are uint8: without dtype the checkpoint's float dtype (float32 norms) is used
    out32 = load_all(dequantize(q, tmp_path / "d32", quiet=True))
    assert out32["lm_head.weight"].dtype == mx.float32


def test_dequantize_refuses_float_model(tmp_path: Path, llama_dir) -> None:
    with pytest.raises(ConvertError, match="not an MLX-quantized model"):
        dequantize(llama_dir(), tmp_path / "d", quiet=True)
    assert not (tmp_path / "d").exists()


def test_dequantize_detects_config_not_matching_shapes(tmp_path: Path, llama_dir) -> None:
    q = convert(llama_dir(), tmp_path / "q", quantize=True, q_bits=4, quiet=True)
    config = json.loads((q / "config.json").read_text())
    config["quantization"]["group_size"] = 128
    (q / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConvertError, match="cannot infer quantization"):
        dequantize(q, tmp_path / "d", quiet=True)
    assert not (tmp_path / "d").exists()
