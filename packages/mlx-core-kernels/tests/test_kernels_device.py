"""CUDA and Metal kernels against the compiled fallback (CUDA ran on the lent H100; each backend's cases
are skipped where it is absent).

Outputs are pre-filled with NaN (``init_value``) so any element the kernel fails to write shows up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import backend, clear_backend_cache, fused_modulate, fused_swiglu
from mlx_core.kernels.modulate import modulate_cuda, modulate_fallback, modulate_metal, prepare_modulate
from mlx_core.kernels.swiglu import swiglu_cuda, swiglu_fallback, swiglu_metal


@dataclass(frozen=True)
class DeviceKernels:
    """One backend's kernel entry points, so every case below runs against CUDA and Metal alike."""

    name: str
    swiglu: Callable[..., mx.array]
    modulate: Callable[..., mx.array]


@pytest.fixture(
    params=[
        pytest.param(
            DeviceKernels("cuda", swiglu_cuda, modulate_cuda),
            marks=[pytest.mark.gpu, pytest.mark.skipif(not mx.cuda.is_available(), reason="needs CUDA")],
            id="cuda",
        ),
        pytest.param(
            DeviceKernels("metal", swiglu_metal, modulate_metal),
            marks=[pytest.mark.metal, pytest.mark.skipif(not mx.metal.is_available(), reason="needs Metal")],
            id="metal",
        ),
    ]
)
def kernels(request: pytest.FixtureRequest) -> DeviceKernels:
    return request.param


DTYPES = [mx.float32, mx.float16, mx.bfloat16]
NAN = float("nan")


def tol(dtype: mx.Dtype) -> dict[str, float]:
    return {"rtol": 1e-5, "atol": 2e-5} if dtype == mx.float32 else {"rtol": 1e-2, "atol": 1e-2}


def f32(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32))


def rand(shape: tuple[int, ...], dtype: mx.Dtype, seed: int, scale: float = 1.0) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array((rng.standard_normal(shape) * scale).astype(np.float32)).astype(dtype)


def check_equal(out: mx.array, expected: mx.array) -> None:
    got = f32(out)
    assert not np.isnan(got).any(), f"{int(np.isnan(got).sum())} of {got.size} outputs never written"
    np.testing.assert_allclose(got, f32(expected), **tol(out.dtype))


def test_device_is_the_auto_backend(kernels: DeviceKernels) -> None:
    clear_backend_cache()
    for dtype in DTYPES:
        assert backend(dtype) == kernels.name


SWIGLU_SHAPES = [
    (1,),
    (3,),
    (7,),
    (8,),
    (9,),
    (15,),
    (16,),
    (17,),
    (31,),
    (33,),
    (255,),
    (257,),
    (1000,),
    (2049,),
    (4097,),
    (11008,),
    (65537,),
    (1_000_003,),
    (1, 11008),
    (3, 5, 7),
    (4099, 13),
    (64, 11008),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SWIGLU_SHAPES)
def test_swiglu_kernel_matches_fallback_and_covers_output(
    kernels: DeviceKernels, shape: tuple[int, ...], dtype: mx.Dtype
) -> None:
    x = rand(shape, dtype, 1, 2.0)
    g = rand(shape, dtype, 2, 3.0)
    out = kernels.swiglu(x, g, init_value=NAN)
    assert out.shape == shape and out.dtype == dtype
    check_equal(out, swiglu_fallback(x, g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [8, 100, 4097])
def test_swiglu_misaligned_views(kernels: DeviceKernels, n: int, dtype: mx.Dtype) -> None:
    big_x = rand((n + 1,), dtype, 3)
    big_g = rand((n + 3,), dtype, 4)
    x = big_x[1:]
    g = big_g[3:]
    check_equal(kernels.swiglu(x, g, init_value=NAN), swiglu_fallback(x, g))
    check_equal(kernels.swiglu(big_x[:n], g, init_value=NAN), swiglu_fallback(big_x[:n], g))


def test_swiglu_float32_against_float64(kernels: DeviceKernels) -> None:
    x = rand((37, 1031), mx.float32, 5, 2.0)
    g = rand((37, 1031), mx.float32, 6, 4.0)
    g64 = np.array(g).astype(np.float64)
    expected = np.array(x).astype(np.float64) * g64 / (1 + np.exp(-g64))
    np.testing.assert_allclose(np.array(fused_swiglu(x, g)), expected, rtol=1e-5, atol=1e-6)


def test_swiglu_public_path_uses_the_kernel_and_handles_views(kernels: DeviceKernels) -> None:
    x = rand((33, 70), mx.bfloat16, 7)
    g = rand((70, 33), mx.bfloat16, 8).T
    np.testing.assert_array_equal(f32(fused_swiglu(x, g)), f32(kernels.swiglu(x, mx.contiguous(g))))
    check_equal(fused_swiglu(x, g), fused_swiglu(x, g, backend="fallback"))


MODULATE_SHAPES = [
    (1, 1, 1),
    (1, 1, 7),
    (2, 3, 8),
    (2, 5, 31),
    (3, 7, 64),
    (1, 4, 129),
    (2, 3, 1000),
    (2, 4, 3072),
    (1, 3, 4099),
    (1, 2, 8197),
    (2, 33, 1152),
    (2, 512, 3072),
]
FORMS = ["shared", "sample2d", "sample3d", "token"]


def cond(form: str, b: int, s: int, d: int, dtype: mx.Dtype, seed: int, scale: float) -> mx.array:
    shape = {"shared": (d,), "sample2d": (b, d), "sample3d": (b, 1, d), "token": (b, s, d)}[form]
    return rand(shape, dtype, seed, scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", MODULATE_SHAPES)
def test_modulate_kernel_matches_fallback_and_covers_output(
    kernels: DeviceKernels, shape: tuple[int, int, int], dtype: mx.Dtype
) -> None:
    b, s, d = shape
    x = rand(shape, dtype, 10, 2.0) + 0.5
    for i, (shift_form, scale_form) in enumerate(zip(FORMS, FORMS[1:] + FORMS[:1], strict=True)):
        shift = cond(shift_form, b, s, d, dtype, 11 + i, 1.0)
        scale = cond(scale_form, b, s, d, dtype, 21 + i, 0.5)
        x3, sh3, sc3, eps = prepare_modulate(x, shift, scale, 1e-6)
        out = kernels.modulate(x3, sh3, sc3, eps, init_value=NAN)
        assert out.shape == shape and out.dtype == dtype
        check_equal(out, modulate_fallback(x3, sh3, sc3, eps))


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_modulate_float32_conditioning(kernels: DeviceKernels, dtype: mx.Dtype) -> None:
    x = rand((2, 17, 3072), dtype, 30)
    shift = rand((2, 3072), mx.float32, 31)
    scale = rand((3072,), mx.float32, 32, 0.5)
    x3, sh3, sc3, eps = prepare_modulate(x, shift, scale, 1e-6)
    assert sh3.dtype == mx.float32
    check_equal(kernels.modulate(x3, sh3, sc3, eps, init_value=NAN), modulate_fallback(x3, sh3, sc3, eps))


def test_modulate_misaligned_rows_and_views(kernels: DeviceKernels) -> None:
    # D = 1001 (odd) makes most bf16 rows start off a 16-byte boundary; offset views misalign the base.
    big = rand((2 * 5 * 1001 + 1,), mx.bfloat16, 40)
    x = big[1:].reshape(2, 5, 1001)
    shift = rand((2, 1001), mx.bfloat16, 41)
    scale = rand((1002,), mx.bfloat16, 42)[1:]
    x3, sh3, sc3, eps = prepare_modulate(x, shift, scale, 1e-6)
    check_equal(kernels.modulate(x3, sh3, sc3, eps, init_value=NAN), modulate_fallback(x3, sh3, sc3, eps))
    xt = rand((2, 1001, 5), mx.bfloat16, 43).transpose(0, 2, 1)
    check_equal(fused_modulate(xt, shift, scale), fused_modulate(xt, shift, scale, backend="fallback"))


def test_modulate_float32_against_float64_with_large_mean(kernels: DeviceKernels) -> None:
    rng = np.random.default_rng(50)
    x = (1e3 + rng.standard_normal((2, 64, 3072))).astype(np.float32)
    shift = rng.standard_normal((2, 3072)).astype(np.float32)
    scale = rng.standard_normal((2, 1, 3072)).astype(np.float32)
    x64 = x.astype(np.float64)
    mean = x64.mean(-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(-1, keepdims=True)
    expected = (x64 - mean) / np.sqrt(var + 1e-6) * (1 + scale) + shift[:, None]
    out = np.array(fused_modulate(mx.array(x), mx.array(shift), mx.array(scale)))
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


def test_modulate_two_dimensional_x(kernels: DeviceKernels) -> None:
    x = rand((300, 257), mx.bfloat16, 60)
    shift = rand((300, 257), mx.bfloat16, 61)
    scale = rand((257,), mx.bfloat16, 62)
    check_equal(fused_modulate(x, shift, scale), fused_modulate(x, shift, scale, backend="fallback"))
