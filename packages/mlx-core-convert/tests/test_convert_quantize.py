"""Quantization params, decisions and recipes."""

from __future__ import annotations

import itertools

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.convert import ConvertError, QuantParams, mixed_recipe, quantize_weight, regex_predicate
from mlx_core.convert.quantize import check_fits, decide


def test_mode_defaults_and_validation() -> None:
    assert QuantParams.for_mode() == QuantParams(64, 4, "affine")
    assert QuantParams.for_mode("nvfp4") == QuantParams(16, 4, "nvfp4")
    assert QuantParams.for_mode("mxfp8") == QuantParams(32, 8, "mxfp8")
    assert QuantParams(64, 4).updated({"mode": "mxfp4"}) == QuantParams(32, 4, "mxfp4")
    with pytest.raises(ConvertError, match="unknown keys"):
        QuantParams(64, 4).updated({"bitz": 3})
    with pytest.raises(ConvertError, match="mxfp4 quantization supports group sizes"):
        QuantParams(64, 4, "mxfp4")


@pytest.mark.parametrize("bits", [2, 3, 5, 6])
def test_affine_bits_match_mx_quantize_and_error_is_bounded(bits: int) -> None:
    w = np.random.default_rng(bits).standard_normal((16, 128)).astype(np.float32)
    parts = quantize_weight(mx.array(w), QuantParams(32, bits))
    ref = mx.quantize(mx.array(w), group_size=32, bits=bits)
    assert set(parts) == {"weight", "scales", "biases"}
    assert all(mx.array_equal(parts[k], r) for k, r in zip(("weight", "scales", "biases"), ref, strict=True))
    back = np.array(mx.dequantize(*ref, group_size=32, bits=bits))
    # MLX snaps the grid so zero is exact: each element is within one step (|scale|) of the original
    step = np.repeat(np.abs(np.array(ref[1], np.float64)), 32, axis=-1)
    assert np.all(np.abs(back.astype(np.float64) - w) <= step * 1.001 + 1e-6)


def test_decide() -> None:
    d = QuantParams(64, 4)
    assert decide("x", (8, 128), d, None) == (d, False)
    assert decide("x", (8, 96), d, None) == (None, False)  # not divisible: skipped silently
    assert decide("x", (8, 128), d, lambda p, s: False) == (None, False)
    assert decide("x", (8, 96), d, lambda p, s: {"group_size": 32}) == (QuantParams(32, 4), True)
    with pytest.raises(ConvertError, match="does not divide"):
        decide("x", (8, 96), d, lambda p, s: {"bits": 8})
    with pytest.raises(TypeError, match="expected a bool or a dict"):
        decide("x", (8, 128), d, lambda p, s: "yes")  # type: ignore[arg-type,return-value]
    rules = regex_predicate({"lm_head": {"bits": 8}, "gate$": False})
    assert rules("lm_head", (1, 64)) == {"bits": 8} and rules("mlp.gate", (1, 64)) is False
    assert rules("other", (1, 64)) is True


def test_check_fits() -> None:
    check_fits("p", (4, 8), (4, 1), QuantParams(64, 4))
    with pytest.raises(ConvertError, match="cannot infer quantization of p"):
        check_fits("p", (4, 8), (4, 1), QuantParams(128, 4))


@pytest.mark.parametrize("recipe", ["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"])
def test_mixed_recipe_matches_mlx_lm_predicate(recipe: str) -> None:
    convert_mod = pytest.importorskip("mlx_lm.convert")
    num_layers = 16

    class Layer:
        pass

    class FakeModel:
        def __init__(self) -> None:
            self.layers = [Layer() for _ in range(num_layers)]

        def named_modules(self):  # type: ignore[no-untyped-def]
            return [(f"model.layers.{i}.mlp.down_proj", None) for i in range(num_layers)]

    theirs = convert_mod.mixed_quant_predicate_builder(recipe, FakeModel(), 64)
    ours = mixed_recipe(recipe, num_layers, 2, 64)
    names = ["self_attn.v_proj", "self_attn.q_proj", "mlp.down_proj", "mlp.up_proj"]
    paths = [f"model.layers.{i}.{n}" for i, n in itertools.product(range(num_layers), names)]
    paths += ["lm_head", "model.embed_tokens"]
    for path in paths:
        assert ours(path, (8, 128)) == theirs(path, None), path
    assert ours("lm_head", (8, 96)) is False
