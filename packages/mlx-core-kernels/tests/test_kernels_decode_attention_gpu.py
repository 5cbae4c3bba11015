"""CUDA split-K decode attention against mx.fast.scaled_dot_product_attention (lent H100 only)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import decode_attention
from mlx_core.kernels.decode_attention import decode_attention_cuda

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend"),
]

NAN = float("nan")


def rand(shape: tuple[int, ...], dtype: mx.Dtype, seed: int) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dtype)


def f32(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32))


def tol(dtype: mx.Dtype) -> dict[str, float]:
    return {"rtol": 1e-3, "atol": 1e-4} if dtype == mx.float32 else {"rtol": 2e-2, "atol": 1e-2}


def lengths_of(b: int, lk: int) -> mx.array:
    return mx.full((b,), lk, dtype=mx.int32)


@pytest.mark.parametrize("dtype", [mx.float32, mx.float16, mx.bfloat16])
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "lk", "d"),
    [
        (1, 1, 1, 1, 32),
        (1, 4, 1, 3, 64),
        (2, 8, 2, 77, 128),
        (1, 32, 8, 1024, 128),
        (8, 32, 8, 4099, 128),
        (1, 16, 2, 333, 96),
        (2, 16, 16, 257, 256),
        (1, 32, 2, 2000, 128),
        (1, 14, 2, 8191, 64),
    ],
)
def test_kernel_matches_mx_fast(b: int, hq: int, hkv: int, lk: int, d: int, dtype: mx.Dtype) -> None:
    q, k, v = rand((b, hq, 1, d), dtype, 1), rand((b, hkv, lk, d), dtype, 2), rand((b, hkv, lk, d), dtype, 3)
    scale = d**-0.5
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale)
    for splits in (None, 1, 7):
        for mma in (None, False):  # the tensor-core key loop where it applies, and the SIMT loop
            out = decode_attention_cuda(
                q, k, v, scale, lengths_of(b, lk), splits=splits, init_value=NAN, mma=mma
            )
            got = f32(out)
            assert not np.isnan(got).any(), "output not fully written"
            np.testing.assert_allclose(got, f32(expected), **tol(dtype))


@pytest.mark.parametrize("mma", [None, False])
@pytest.mark.parametrize(("warps", "rows_in_flight"), [(1, 1), (2, 8), (4, 3), (4, 4), (8, 2), (16, 4)])
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "lk", "d"), [(1, 32, 8, 5001, 128), (3, 16, 2, 700, 64), (2, 12, 4, 1000, 96)]
)
def test_launch_shapes_match_mx_fast(
    b: int, hq: int, hkv: int, lk: int, d: int, warps: int, rows_in_flight: int, mma: bool | None
) -> None:
    """Every warps-per-block / rows-in-flight / split combination covers every key exactly once, with either
    key loop (more than 8 warps are capped at 8)."""
    q, k, v = (
        rand((b, hq, 1, d), mx.bfloat16, 11),
        rand((b, hkv, lk, d), mx.bfloat16, 12),
        rand((b, hkv, lk, d), mx.bfloat16, 13),
    )
    expected = f32(mx.fast.scaled_dot_product_attention(q, k, v, scale=d**-0.5))
    for splits in (1, 5, 66):
        out = decode_attention_cuda(
            q,
            k,
            v,
            d**-0.5,
            lengths_of(b, lk),
            splits=splits,
            init_value=NAN,
            warps=warps,
            rows_in_flight=rows_in_flight,
            mma=mma,
        )
        got = f32(out)
        assert not np.isnan(got).any(), "output not fully written"
        np.testing.assert_allclose(got, expected, **tol(mx.bfloat16))


def test_public_path_views_and_per_batch_lengths() -> None:
    b, hq, hkv, cap, d = 3, 32, 8, 2048, 128
    q = rand((b, 1, hq, d), mx.bfloat16, 4).transpose(0, 2, 1, 3)  # [B, Hq, 1, D], strided
    k_buf = rand((b, hkv, cap, d), mx.bfloat16, 5)
    v_buf = rand((b, hkv, cap, d), mx.bfloat16, 6)
    k, v = k_buf[:, :, :1500], v_buf[:, :, :1500]  # cache views, read in place
    lengths = mx.array([1500, 1, 999], dtype=mx.int32)
    out = decode_attention(q, k, v, d**-0.5, valid_length=lengths)
    mask = (mx.arange(1500)[None, :] < lengths[:, None])[:, None, None, :]
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=d**-0.5, mask=mask)
    np.testing.assert_allclose(f32(out), f32(expected), **tol(mx.bfloat16))
    out = decode_attention(q, k, v, d**-0.5, valid_length=700)
    expected = mx.fast.scaled_dot_product_attention(q, k[:, :, :700], v[:, :, :700], scale=d**-0.5)
    np.testing.assert_allclose(f32(out), f32(expected), **tol(mx.bfloat16))


def test_transposed_keys_layout() -> None:
    # [B, Lk, Hkv, D] storage viewed as [B, Hkv, Lk, D]: not row-contiguous, last axis contiguous.
    k = rand((2, 300, 4, 64), mx.float16, 7).transpose(0, 2, 1, 3)
    v = rand((2, 64, 4, 300), mx.float16, 8).transpose(0, 2, 3, 1)  # last-axis stride != 1
    q = rand((2, 8, 1, 64), mx.float16, 9)
    out = decode_attention(q, k, v, 0.125)
    expected = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.125)
    np.testing.assert_allclose(f32(out), f32(expected), **tol(mx.float16))


def test_float32_against_float64() -> None:
    rng = np.random.default_rng(10)
    q = rng.standard_normal((1, 8, 1, 128)).astype(np.float32)
    k = rng.standard_normal((1, 2, 5000, 128)).astype(np.float32)
    v = rng.standard_normal((1, 2, 5000, 128)).astype(np.float32)
    out = np.array(decode_attention(mx.array(q), mx.array(k), mx.array(v), 128**-0.5))
    s = np.einsum("hgd,hld->hgl", q[0, :, 0].reshape(2, 4, 128).astype(np.float64), k[0].astype(np.float64))
    p = np.exp(s / np.sqrt(128) - (s / np.sqrt(128)).max(-1, keepdims=True))
    ref = np.einsum("hgl,hld->hgd", p / p.sum(-1, keepdims=True), v[0].astype(np.float64)).reshape(
        1, 8, 1, 128
    )
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "lk", "d"), [(1, 16, 8, 768, 128), (2, 8, 2, 77, 64), (1, 4, 4, 5, 32)]
)
def test_append_in_place_over_many_steps(b: int, hq: int, hkv: int, lk: int, d: int, dtype: mx.Dtype) -> None:
    """Step after step the kernel writes each row into the same buffers and equals slice_update + mx.fast."""
    from mlx_core.kernels import decode_attention_append

    k_buf, v_buf = rand((b, hkv, lk, d), dtype, 1), rand((b, hkv, lk, d), dtype, 2)
    mx.eval(k_buf, v_buf)
    k_ref, v_ref = mx.array(k_buf), mx.array(v_buf)
    start = max(lk - 6, 0)
    for step, pos in enumerate(range(start, lk)):
        q = rand((b, hq, 1, d), dtype, 10 + step)
        k_new = rand((b, hkv, 1, d), dtype, 20 + step)
        v_new = rand((b, hkv, 1, d), dtype, 30 + step)
        out, k_out, v_out = decode_attention_append(q, k_buf, v_buf, k_new, v_new, mx.array(pos), d**-0.5)
        assert k_out is k_buf and v_out is v_buf  # updated in place, no new buffers
        k_ref = mx.slice_update(k_ref, k_new, mx.array([pos]), axes=(2,))
        v_ref = mx.slice_update(v_ref, v_new, mx.array([pos]), axes=(2,))
        want = mx.fast.scaled_dot_product_attention(
            q, k_ref[:, :, : pos + 1], v_ref[:, :, : pos + 1], scale=d**-0.5
        )
        np.testing.assert_allclose(f32(out), f32(want), **tol(dtype))
        mx.eval(out)
        np.testing.assert_array_equal(f32(k_buf), f32(k_ref))
        np.testing.assert_array_equal(f32(v_buf), f32(v_ref))


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])  # the SIMT and the tensor-core key loops
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "lk", "d"), [(1, 32, 8, 4099, 128), (8, 16, 2, 1000, 64), (2, 4, 4, 5, 32)]
)
def test_one_launch_with_counters_matches_two_launches(
    b: int, hq: int, hkv: int, lk: int, d: int, dtype: mx.Dtype
) -> None:
    """With ``counters`` the last block per kv head merges the splits: the same result as the merge kernel
    and as mx.fast, at several split counts, with the counters back at zero after every launch."""
    q, k, v = (
        rand((b, hq, 1, d), dtype, 41),
        rand((b, hkv, lk, d), dtype, 42),
        rand((b, hkv, lk, d), dtype, 43),
    )
    scale = d**-0.5
    lengths = mx.array([lk - 3 * i for i in range(b)], dtype=mx.int32)
    mask = (mx.arange(lk)[None, :] < lengths[:, None])[:, None, None, :]
    expected = f32(mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask))
    counters = mx.array(np.zeros(b * hkv, dtype=np.int32))
    for splits in (None, 1, 7, 33):
        two = f32(decode_attention_cuda(q, k, v, scale, lengths, splits=splits))
        one = f32(decode_attention_cuda(q, k, v, scale, lengths, splits=splits, counters=counters))
        assert not np.array(counters).any(), f"counters not reset (splits={splits}): {np.array(counters)}"
        np.testing.assert_allclose(one, two, rtol=1e-6, atol=1e-6 if dtype == mx.float32 else 1e-2)
        np.testing.assert_allclose(one, expected, **tol(dtype))
    public = decode_attention(q, k, v, scale, valid_length=lengths, counters=counters)
    np.testing.assert_allclose(f32(public), expected, **tol(dtype))
    assert not np.array(counters).any()


@pytest.mark.parametrize("valid", [1, 17, 4000, 9001, 16384])
def test_wide_default_launch_matches_four_warp_launch(valid: int) -> None:
    """One sequence, 8 kv heads, a 16k cache: the default launch is one wave of 8-warp blocks
    (`mma_launch`); at every valid length it agrees with mx.fast and with the 4-warp launch."""
    b, hq, hkv, lk, d = 1, 32, 8, 16384, 128
    dtype = mx.bfloat16
    q, k, v = (
        rand((b, hq, 1, d), dtype, 51),
        rand((b, hkv, lk, d), dtype, 52),
        rand((b, hkv, lk, d), dtype, 53),
    )
    scale = d**-0.5
    lengths = mx.array([valid] * 4, dtype=mx.int32)  # the kernel reads entry 0
    expected = f32(mx.fast.scaled_dot_product_attention(q, k[:, :, :valid], v[:, :, :valid], scale=scale))
    counters = mx.array(np.zeros(b * hkv, dtype=np.int32))
    wide = f32(decode_attention_cuda(q, k, v, scale, lengths, counters=counters))
    narrow = f32(decode_attention_cuda(q, k, v, scale, lengths, counters=counters, warps=4))
    assert not np.isnan(wide).any(), "output not fully written"
    assert not np.array(counters).any()
    np.testing.assert_allclose(wide, expected, **tol(dtype))
    np.testing.assert_allclose(wide, narrow, rtol=1e-2, atol=1e-2)


def test_append_with_counters_over_many_steps() -> None:
    """The appending kernel with counters: each step writes its row in place and merges in one launch."""
    from mlx_core.kernels import decode_attention_append

    b, hq, hkv, cap, d, dtype = 2, 16, 4, 640, 128, mx.bfloat16
    k_buf, v_buf = rand((b, hkv, cap, d), dtype, 51), rand((b, hkv, cap, d), dtype, 52)
    mx.eval(k_buf, v_buf)
    k_ref, v_ref = mx.array(k_buf), mx.array(v_buf)
    counters = mx.array(np.zeros(b * hkv, dtype=np.int32))
    for step, pos in enumerate(range(600, 605)):
        q = rand((b, hq, 1, d), dtype, 60 + step)
        k_new, v_new = rand((b, hkv, 1, d), dtype, 70 + step), rand((b, hkv, 1, d), dtype, 80 + step)
        out, _, _ = decode_attention_append(
            q, k_buf, v_buf, k_new, v_new, mx.array(pos), d**-0.5, counters=counters
        )
        k_ref = mx.slice_update(k_ref, k_new, mx.array([pos]), axes=(2,))
        v_ref = mx.slice_update(v_ref, v_new, mx.array([pos]), axes=(2,))
        want = mx.fast.scaled_dot_product_attention(
            q, k_ref[:, :, : pos + 1], v_ref[:, :, : pos + 1], scale=d**-0.5
        )
        np.testing.assert_allclose(f32(out), f32(want), **tol(dtype))
        assert not np.array(counters).any(), f"counters not reset after step {step}"
        np.testing.assert_array_equal(f32(k_buf), f32(k_ref))
