"""fused_matvec on the CPU (MLX-ops path) against float64 numpy references; argument checks;
matvec_kernel_supports; kernel_scalars."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import fused_matvec
from mlx_core.kernels._scalars import DEVICE_MIN_BYTES, kernel_scalars
from mlx_core.kernels.matvec import matvec_kernel_supports

IN = 128  # a multiple of both group sizes (32, 64)
OUT = 16  # even: 8 gate rows + 8 up rows under swiglu
EPS = 1e-5

# (bits, group_size); None = dense weight in x's dtype.
WEIGHTS = [None, (4, 32), (4, 64), (8, 32), (8, 64)]
EPILOGUES = ["plain", "norm", "residual", "norm_residual", "swiglu", "norm_swiglu"]
LEADS = [(3, 1), (), (2, 2)]


def f64(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


def make_inputs(lead: tuple[int, ...], seed: int, dtype: mx.Dtype = mx.float32) -> dict[str, mx.array]:
    """x [..., IN], a dense weight [OUT, IN] scaled to keep outputs O(1), norm weight, residual."""
    rng = np.random.default_rng(seed)
    return {
        "x": mx.array(rng.standard_normal((*lead, IN)).astype(np.float32)).astype(dtype),
        "w": mx.array((rng.standard_normal((OUT, IN)) / np.sqrt(IN)).astype(np.float32)).astype(dtype),
        "norm_weight": mx.array(rng.uniform(0.5, 1.5, IN).astype(np.float32)).astype(dtype),
        "res_full": mx.array(rng.standard_normal((*lead, OUT)).astype(np.float32)).astype(dtype),
    }


def rms_norm64(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu64(g: np.ndarray) -> np.ndarray:
    return g / (1.0 + np.exp(-g))


def reference(
    x: np.ndarray,
    w: np.ndarray,
    *,
    norm_weight: np.ndarray | None,
    eps: float,
    residual: np.ndarray | None,
    swiglu: bool,
) -> np.ndarray:
    """Float64 naive epilogue(W @ prologue(x)); ``w`` is the (dequantized) dense [O, I] weight."""
    if norm_weight is not None:
        x = rms_norm64(x, norm_weight, eps)
    y = x @ w.T
    if swiglu:
        half = w.shape[0] // 2
        y = silu64(y[..., :half]) * y[..., half:]
    if residual is not None:
        y = residual + y
    return y


def call_args(
    inputs: dict[str, mx.array], weight_kind: tuple[int, int] | None, epilogue: str
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """fused_matvec kwargs, the float64 weight the reference multiplies by, and reference kwargs."""
    kw: dict[str, Any] = {"eps": EPS}
    if weight_kind is None:
        kw["weight"] = inputs["w"]
        w64 = f64(inputs["w"])
    else:
        bits, group = weight_kind
        packed, scales, biases = mx.quantize(inputs["w"], group_size=group, bits=bits)
        kw.update(weight=packed, scales=scales, biases=biases, bits=bits, group_size=group)
        # Dequantize in float32 so the reference weight is the exact affine value s * q + b even when
        # scales/biases are bfloat16 (a bf16 dequantize would round every weight once more).
        w64 = f64(
            mx.dequantize(
                packed, scales.astype(mx.float32), biases.astype(mx.float32), group_size=group, bits=bits
            )
        )
        # Sanity: the dequantized weight is the original one up to the quantization step.
        w_max = np.abs(f64(inputs["w"])).max()
        assert np.abs(w64 - f64(inputs["w"])).max() <= 2 * w_max / (2**bits - 1)
    swiglu = "swiglu" in epilogue
    norm = epilogue.startswith("norm")
    residual = None
    if "residual" in epilogue:
        residual = inputs["res_full"]
    kw["swiglu"] = swiglu
    if norm:
        kw["norm_weight"] = inputs["norm_weight"]
    if residual is not None:
        kw["residual"] = residual
    ref_kw = {
        "norm_weight": f64(inputs["norm_weight"]) if norm else None,
        "eps": EPS,
        "residual": f64(residual) if residual is not None else None,
        "swiglu": swiglu,
    }
    return kw, w64, ref_kw


@pytest.mark.parametrize("lead", LEADS, ids=lambda s: "x".join(map(str, s)) or "vector")
@pytest.mark.parametrize("epilogue", EPILOGUES)
@pytest.mark.parametrize("weight_kind", WEIGHTS, ids=lambda k: "dense" if k is None else f"q{k[0]}g{k[1]}")
def test_matches_float64_reference(
    weight_kind: tuple[int, int] | None, epilogue: str, lead: tuple[int, ...]
) -> None:
    inputs = make_inputs(
        lead, seed=len(lead) * 100 + EPILOGUES.index(epilogue) * 10 + WEIGHTS.index(weight_kind)
    )
    kw, w64, ref_kw = call_args(inputs, weight_kind, epilogue)
    x = inputs["x"]
    weight = kw.pop("weight")
    y = fused_matvec(x, weight, kw.pop("scales", None), kw.pop("biases", None), **kw)
    out_features = OUT // 2 if ref_kw["swiglu"] else OUT
    assert y.shape == (*lead, out_features)
    assert y.dtype == mx.float32
    want = reference(f64(x), w64, **ref_kw)
    # Quantized weights: the reference multiplies by mx.dequantize's weight in float64; the
    # quantized matmul computes s * (q . x) + b * sum(x) per group in float32, which rounds differently
    # from (s * q + b) . x, so it gets 2e-5 instead of 1e-5 absolute (outputs are O(1)).
    atol = 1e-5 if weight_kind is None else 2e-5
    np.testing.assert_allclose(f64(y), want, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("weight_kind", [None, (4, 64)], ids=["dense", "q4g64"])
def test_fallback_backend_equals_default_on_cpu(weight_kind: tuple[int, int] | None) -> None:
    inputs = make_inputs((2, 1), seed=7)
    kw, _, _ = call_args(inputs, weight_kind, "norm_swiglu")
    weight = kw.pop("weight")
    scales, biases = kw.pop("scales", None), kw.pop("biases", None)
    default = fused_matvec(inputs["x"], weight, scales, biases, **kw)
    fallback = fused_matvec(inputs["x"], weight, scales, biases, backend="fallback", **kw)
    auto = fused_matvec(inputs["x"], weight, scales, biases, backend="auto", **kw)
    assert np.array_equal(np.array(default), np.array(fallback))
    assert np.array_equal(np.array(default), np.array(auto))


def test_bfloat16_within_1e_2() -> None:
    inputs = make_inputs((3, 1), seed=11, dtype=mx.bfloat16)
    kw, w64, ref_kw = call_args(inputs, None, "norm_swiglu")
    y = fused_matvec(inputs["x"], kw.pop("weight"), **kw)
    assert y.shape == (3, 1, OUT // 2)
    assert y.dtype == mx.bfloat16
    want = reference(f64(inputs["x"]), w64, **ref_kw)
    np.testing.assert_allclose(f64(y), want, rtol=1e-2, atol=1e-2)


def test_bfloat16_quantized_residual_within_1e_2() -> None:
    inputs = make_inputs((2,), seed=12, dtype=mx.bfloat16)
    kw, w64, ref_kw = call_args(inputs, (4, 32), "norm_residual")
    assert kw["scales"].dtype == mx.bfloat16
    y = fused_matvec(inputs["x"], kw.pop("weight"), kw.pop("scales"), kw.pop("biases"), **kw)
    assert y.shape == (2, OUT)
    assert y.dtype == mx.bfloat16
    want = reference(f64(inputs["x"]), w64, **ref_kw)
    # Relaxed atol: MLX's own CPU bfloat16 quantized_matmul deviates from the exact product of the same
    # bf16 values by up to ~0.03 at outputs of magnitude ~3 (measured against the float32
    # quantized_matmul of the same x, packed weight and scales), i.e. ~1% of the output scale.
    scale = np.abs(want).max()
    np.testing.assert_allclose(f64(y), want, rtol=1e-2, atol=1.5e-2 * scale)


def test_swiglu_takes_gate_rows_first() -> None:
    """Swapping the gate and up halves of W must change the result (silu is not symmetric)."""
    inputs = make_inputs((1,), seed=13)
    w = inputs["w"]
    swapped = mx.concatenate([w[OUT // 2 :], w[: OUT // 2]], axis=0)
    a = f64(fused_matvec(inputs["x"], w, swiglu=True))
    b = f64(fused_matvec(inputs["x"], swapped, swiglu=True))
    assert np.abs(a - b).max() > 1e-2


# --------------------------------------------------------------------------- argument checks


def _quantized(bits: int = 4, group: int = 32) -> tuple[mx.array, mx.array, mx.array]:
    w = mx.array(np.random.default_rng(3).standard_normal((OUT, IN)).astype(np.float32))
    return mx.quantize(w, group_size=group, bits=bits)


X = mx.array(np.random.default_rng(4).standard_normal((2, IN)).astype(np.float32))
W = mx.array(np.random.default_rng(5).standard_normal((OUT, IN)).astype(np.float32))


def test_x_must_be_an_array() -> None:
    with pytest.raises(TypeError, match=r"x must be an mx\.array"):
        fused_matvec(np.ones((2, IN), np.float32), W)  # type: ignore[arg-type]


def test_weight_must_be_an_array() -> None:
    with pytest.raises(TypeError, match=r"weight must be an mx\.array"):
        fused_matvec(X, np.ones((OUT, IN), np.float32))  # type: ignore[arg-type]


def test_integer_x_rejected() -> None:
    with pytest.raises(TypeError, match=r"x has dtype .*int32.*astype\(mx.float32\)"):
        fused_matvec(mx.ones((2, IN), dtype=mx.int32), W)


@pytest.mark.parametrize("shape", [(OUT,), (1, OUT, IN)])
def test_weight_must_be_2d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="weight 2-D"):
        fused_matvec(X, mx.ones(shape))


def test_scalar_x_rejected() -> None:
    with pytest.raises(ValueError, match=r"x must be \[\.\.\., I\]"):
        fused_matvec(mx.array(1.0), mx.ones((OUT, 1)))


def test_wrong_in_features() -> None:
    with pytest.raises(ValueError, match=r"does not take the 128 features of x"):
        fused_matvec(X, mx.ones((OUT, IN + 1)))


def test_dense_weight_dtype_must_match_x() -> None:
    with pytest.raises(TypeError, match=r"weight dtype .*float16.* differs from x \(.*float32"):
        fused_matvec(X, W.astype(mx.float16))


def test_scales_without_biases() -> None:
    packed, scales, _ = _quantized()
    with pytest.raises(TypeError, match=r"biases must be an mx\.array"):
        fused_matvec(X, packed, scales, None, bits=4, group_size=32)


def test_scales_without_bits() -> None:
    packed, scales, biases = _quantized()
    with pytest.raises(ValueError, match=r"bits must be one of \(1, 2, 3, 4, 5, 6, 8\).*None"):
        fused_matvec(X, packed, scales, biases, group_size=32)


@pytest.mark.parametrize("kw", [{"biases": W[:, :4]}, {"bits": 4}])
def test_biases_or_bits_without_scales(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="without scales"):
        fused_matvec(X, W, **kw)


@pytest.mark.parametrize("bits", [3.5, 9, 7, 0, True, "4"])
def test_bad_bits(bits: Any) -> None:
    packed, scales, biases = _quantized()
    with pytest.raises(ValueError, match=r"bits must be one of \(1, 2, 3, 4, 5, 6, 8\)"):
        fused_matvec(X, packed, scales, biases, bits=bits, group_size=32)


@pytest.mark.parametrize("group_size", [0, -32, 32.0, True])
def test_bad_group_size(group_size: Any) -> None:
    packed, scales, biases = _quantized()
    with pytest.raises(ValueError, match="group_size must be a positive int"):
        fused_matvec(X, packed, scales, biases, bits=4, group_size=group_size)


def test_quantized_weight_must_be_uint32() -> None:
    packed, scales, biases = _quantized()
    with pytest.raises(TypeError, match="packed uint32"):
        fused_matvec(X, packed.astype(mx.int32), scales, biases, bits=4, group_size=32)
    with pytest.raises(TypeError, match="packed uint32"):
        fused_matvec(X, W, scales, biases, bits=4, group_size=32)


def test_wrong_scales_shape() -> None:
    packed, scales, biases = _quantized(group=32)
    with pytest.raises(ValueError, match=r"scales/biases must be \[16, 4\]"):
        fused_matvec(X, packed, scales[:, :3], biases[:, :3], bits=4, group_size=32)
    with pytest.raises(ValueError, match=r"scales/biases must be \[16, 4\]"):
        fused_matvec(X, packed, scales, biases[:8], bits=4, group_size=32)
    # Scales of group 32 declared as group 64: the shape names the mismatch.
    with pytest.raises(ValueError, match=r"scales/biases must be \[16, 2\].*groups of 64"):
        fused_matvec(X, packed, scales, biases, bits=4, group_size=64)


def test_in_features_not_a_multiple_of_group() -> None:
    packed, scales, biases = _quantized(group=32)
    with pytest.raises(ValueError, match="scales/biases must be"):
        fused_matvec(X, packed, scales, biases, bits=4, group_size=48)


def test_packed_width_must_match_bits() -> None:
    packed, scales, biases = _quantized(bits=4, group=32)
    with pytest.raises(ValueError, match=r"packed weight \(16, 16\) holds 64 values per row at 8 bits"):
        fused_matvec(X, packed, scales, biases, bits=8, group_size=32)


def test_scales_dtype_must_match_x() -> None:
    packed, scales, biases = _quantized()
    with pytest.raises(TypeError, match=r"scales/biases dtypes \(mlx.core.float32.*of x \(mlx.core.bfloat16"):
        fused_matvec(X.astype(mx.bfloat16), packed, scales, biases, bits=4, group_size=32)


def test_swiglu_with_odd_rows() -> None:
    with pytest.raises(ValueError, match="even row count, got 15"):
        fused_matvec(X, W[:15], swiglu=True)


def test_swiglu_with_residual() -> None:
    with pytest.raises(ValueError, match="swiglu and residual cannot be combined"):
        fused_matvec(X, W, residual=mx.zeros((2, OUT // 2)), swiglu=True)


@pytest.mark.parametrize(
    "norm_weight", [mx.ones((IN + 1,)), mx.ones((1, IN)), mx.ones((IN,), dtype=mx.float16)]
)
def test_norm_weight_wrong_shape_or_dtype(norm_weight: mx.array) -> None:
    with pytest.raises(ValueError, match=r"norm_weight must be \[128\] in .*float32"):
        fused_matvec(X, W, norm_weight=norm_weight)


def test_norm_weight_must_be_an_array() -> None:
    with pytest.raises(TypeError, match=r"norm_weight must be an mx\.array"):
        fused_matvec(X, W, norm_weight=np.ones(IN, np.float32))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "residual",
    [mx.zeros((2, OUT + 1)), mx.zeros((OUT,)), mx.zeros((1, 2, OUT)), mx.zeros((2, OUT), dtype=mx.float16)],
)
def test_residual_wrong_shape_or_dtype(residual: mx.array) -> None:
    with pytest.raises(ValueError, match=r"residual must be \(2, 16\) in .*float32"):
        fused_matvec(X, W, residual=residual)


def test_residual_shape_follows_weight_rows() -> None:
    # residual is [..., O] for the weight's O rows; the message names the expected shape.
    with pytest.raises(ValueError, match=r"residual must be \(2, 15\)"):
        fused_matvec(X, W[:15], residual=mx.zeros((2, OUT)))


@pytest.mark.parametrize("eps", [-1e-6, float("nan"), float("inf")])
def test_eps_must_be_finite_non_negative(eps: float) -> None:
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        fused_matvec(X, W, norm_weight=mx.ones((IN,)), eps=eps)


@pytest.mark.parametrize("eps", [True, "1e-6", None])
def test_eps_must_be_a_float(eps: Any) -> None:
    with pytest.raises(TypeError, match="eps must be a Python float"):
        fused_matvec(X, W, norm_weight=mx.ones((IN,)), eps=eps)


def test_bad_backend_name() -> None:
    with pytest.raises(ValueError, match="not a kernels backend"):
        fused_matvec(X, W, backend="tpu")


# --------------------------------------------------------------------------- matvec_kernel_supports


@pytest.mark.parametrize(
    ("rows", "in_features", "dtype", "bits", "group_size", "expected"),
    [
        (0, 1024, mx.bfloat16, None, 64, False),  # no rows
        (9, 1024, mx.bfloat16, None, 64, False),  # more than 8 rows
        (8, 1024, mx.bfloat16, None, 64, True),
        (1, 1024, mx.bfloat16, None, 64, True),  # bf16 dense: I a multiple of 8 * 32 = 256
        (1, 1000, mx.bfloat16, None, 64, False),
        (1, 1280, mx.bfloat16, None, 64, True),
        (1, 1152, mx.bfloat16, None, 64, False),  # 1152 = 4.5 * 256
        (1, 384, mx.float32, None, 64, True),  # f32 dense: a multiple of 4 * 32 = 128
        (1, 320, mx.float32, None, 64, False),
        (1, 1024, mx.bfloat16, 4, 64, True),  # 4 bits: 32 values per 16 bytes -> I % 1024
        (1, 512, mx.bfloat16, 4, 64, False),
        (1, 1024, mx.bfloat16, 4, 128, True),
        (1, 1024, mx.bfloat16, 4, 16, False),  # group not in (32, 64, 128)
        (1, 512, mx.bfloat16, 8, 32, True),  # 8 bits: 16 values per 16 bytes -> I % 512
        (1, 256, mx.bfloat16, 8, 32, False),
        (1, 1024, mx.bfloat16, 3, 64, False),  # no 3-bit kernel
        (1, 1024, mx.bfloat16, 2, 64, False),
        # Shared memory: rows * I * itemsize <= 40 KiB.
        (8, 2560, mx.bfloat16, None, 64, True),  # exactly 40960 bytes
        (8, 2816, mx.bfloat16, None, 64, False),  # 45056 bytes
        (1, 2816, mx.bfloat16, None, 64, True),
        (8, 1280, mx.float32, None, 64, True),  # exactly 40960 bytes
        (8, 1408, mx.float32, None, 64, False),
        (4, 3072, mx.bfloat16, 4, 64, True),  # x is in shared memory, not the packed weight: 24 KiB
        (8, 3072, mx.bfloat16, 4, 64, False),  # 48 KiB
    ],
)
def test_matvec_kernel_supports(
    rows: int, in_features: int, dtype: mx.Dtype, bits: int | None, group_size: int, expected: bool
) -> None:
    assert matvec_kernel_supports(rows, in_features, dtype, bits, group_size) is expected


# --------------------------------------------------------------------------- kernel_scalars


def test_kernel_scalars_pads_float32_to_16_bytes() -> None:
    a = kernel_scalars((1.5,))
    assert a.dtype == mx.float32 and a.ndim == 1
    assert a.nbytes >= DEVICE_MIN_BYTES == 16
    assert a.tolist() == [1.5, 0.0, 0.0, 0.0]


def test_kernel_scalars_keeps_values_and_longer_tuples() -> None:
    values = (0.125, -2.0, 3.0e-6)
    a = kernel_scalars(values)
    np.testing.assert_array_equal(np.array(a)[:3], np.array(values, np.float32))
    assert a.nbytes >= 16 and a.size == 4
    long = kernel_scalars((1.0, 2.0, 3.0, 4.0, 5.0, 6.0))
    assert long.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # no padding needed, none added


def test_kernel_scalars_int32_and_float16() -> None:
    a = kernel_scalars((7, -3), mx.int32)
    assert a.dtype == mx.int32 and a.nbytes >= 16
    assert a.tolist() == [7, -3, 0, 0]
    h = kernel_scalars((0.5,), mx.float16)
    assert h.dtype == mx.float16 and h.nbytes >= 16 and h.size == 8
    assert h.tolist() == [0.5] + [0.0] * 7


def test_kernel_scalars_cached_per_arguments() -> None:
    assert kernel_scalars((0.3, 1e-6)) is kernel_scalars((0.3, 1e-6))
    assert kernel_scalars((5,), mx.int32) is kernel_scalars((5,), mx.int32)
    assert kernel_scalars((0.3, 1e-6)) is not kernel_scalars((0.3, 1e-5))
    assert kernel_scalars((5,), mx.int32) is not kernel_scalars((5,), mx.float32)


def test_biases_dtype_must_match() -> None:
    packed, scales, biases = _quantized()
    with pytest.raises(TypeError, match="scales/biases dtypes"):
        fused_matvec(X, packed, scales, biases.astype(mx.float16), bits=4, group_size=32)
