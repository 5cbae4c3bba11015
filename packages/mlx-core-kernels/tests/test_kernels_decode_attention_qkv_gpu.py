"""CUDA packed decode attention (q/k-norm + RoPE + append + attention) against the MLX-ops path."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import MatvecWeights, OutputProjection, decode_attention_qkv, fused_matvec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend"),
]


BACKEND = "cuda"


def rand(shape: tuple[int, ...], dtype: mx.Dtype, seed: int) -> mx.array:
    rng = np.random.default_rng(seed)
    return mx.array(rng.standard_normal(shape).astype(np.float32)).astype(dtype)


def f32(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32))


@pytest.mark.parametrize("dtype", [mx.bfloat16])
@pytest.mark.parametrize("rope", ["halves", "interleaved", "none"])
@pytest.mark.parametrize("qk_norm", [True, False])
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "d", "pos"), [(1, 16, 8, 128, 700), (2, 32, 8, 64, 37), (1, 4, 4, 64, 0)]
)
def test_kernel_matches_ops(
    b: int, hq: int, hkv: int, d: int, pos: int, qk_norm: bool, rope: str, dtype: mx.Dtype
) -> None:
    cap = pos + 9
    k_cache, v_cache = rand((b, hkv, cap, d), dtype, 1), rand((b, hkv, cap, d), dtype, 2)
    qkv = rand((b, 1, (hq + 2 * hkv) * d), dtype, 3)
    norms = {"q_norm": rand((d,), dtype, 4), "k_norm": rand((d,), dtype, 5)} if qk_norm else {}
    inv = (1.0 / (10000.0 ** (np.arange(0, d, 2) / d))).astype(np.float32) * 0.7
    rot = (
        {} if rope == "none" else {"rope_inv_freq": mx.array(inv), "rope_traditional": rope == "interleaved"}
    )
    kw = {"n_heads": hq, "eps": 1e-6, **norms, **rot, "rope_input_scale": 1.0 if rope != "halves" else 1.1}
    mx.eval(k_cache, v_cache)
    k_ref, v_ref = k_cache + 0, v_cache + 0  # copies: the CUDA call writes k_cache/v_cache in place
    mx.eval(k_ref, v_ref)
    want, k_want, v_want, _ = decode_attention_qkv(qkv, k_ref, v_ref, pos, d**-0.5, backend="fallback", **kw)
    mx.eval(want, k_want, v_want)
    got, k_got, v_got, next_pos = decode_attention_qkv(
        qkv, k_cache, v_cache, mx.array(pos), d**-0.5, backend=BACKEND, **kw
    )
    mx.eval(got, k_got, v_got, next_pos)
    assert next_pos.item() == pos + 1
    t = {"rtol": 2e-2, "atol": 2e-2} if dtype != mx.float32 else {"rtol": 1e-4, "atol": 1e-4}
    assert got.shape == (b, 1, hq * d)
    np.testing.assert_allclose(f32(got), f32(want), **t)
    # The new row was appended (in place on CUDA: the same buffers come back), nothing else changed.
    assert BACKEND != "cuda" or (k_got is k_cache and v_got is v_cache)
    np.testing.assert_allclose(f32(k_got), f32(k_want), **t)
    np.testing.assert_allclose(f32(v_got), f32(v_want), **t)
    assert np.abs(f32(k_got)[:, :, pos] - f32(k_ref)[:, :, pos]).max() > 0.01


@pytest.mark.parametrize("dtype", [mx.float16, mx.float32])
def test_other_dtypes(dtype: mx.Dtype) -> None:
    test_kernel_matches_ops(1, 16, 8, 128, 700, True, "halves", dtype)


@pytest.mark.parametrize(
    ("b", "hq", "hkv", "d", "pos"),
    [
        (1, 16, 8, 128, 700),
        (2, 32, 8, 64, 37),
        (1, 4, 4, 64, 0),
        (1, 16, 2, 128, 5000),
        (1, 8, 1, 256, 20000),
    ],
)
def test_folded_merge_matches_two_launches_and_leaves_counters_zero(
    b: int, hq: int, hkv: int, d: int, pos: int
) -> None:
    """With ``counters`` the last block per kv head merges the splits: same result as the merge kernel,
    over several consecutive steps (the counters must come back to zero after every launch).
    """
    dtype = mx.bfloat16
    cap = pos + 9
    first = [rand((b, hkv, cap, d), dtype, 10), rand((b, hkv, cap, d), dtype, 20)]
    mx.eval(first)
    caches = [first, [first[0] + 0, first[1] + 0]]  # identical contents, separate buffers (in-place writes)
    mx.eval(caches)
    inv = mx.array((1.0 / (1e6 ** (np.arange(0, d, 2) / d))).astype(np.float32))
    kw = {"n_heads": hq, "q_norm": rand((d,), dtype, 4), "k_norm": rand((d,), dtype, 5), "rope_inv_freq": inv}
    counters = mx.array(np.zeros(b * hkv + 3, dtype=np.int32))
    for step in range(3):
        qkv = rand((b, 1, (hq + 2 * hkv) * d), dtype, 30 + step)
        plain = decode_attention_qkv(qkv, *caches[0], pos + step, d**-0.5, backend=BACKEND, **kw)
        folded = decode_attention_qkv(
            qkv, *caches[1], pos + step, d**-0.5, backend=BACKEND, counters=counters, **kw
        )
        mx.eval(plain, folded)
        np.testing.assert_allclose(f32(folded[0]), f32(plain[0]), rtol=1e-2, atol=1e-2)
        assert folded[3].item() == pos + step + 1
        assert not np.array(counters).any(), f"counters not reset after step {step}: {np.array(counters)}"


@pytest.mark.parametrize("bits", [None, 4, 8])
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "d", "hidden", "pos"),
    [(1, 32, 8, 64, 2048, 600), (1, 16, 8, 128, 1024, 37), (2, 8, 2, 128, 512, 300), (1, 4, 4, 64, 256, 0)],
)
def test_output_projection_in_the_same_launch(
    b: int, hq: int, hkv: int, d: int, hidden: int, pos: int, bits: int | None
) -> None:
    """With counters for its tickets the kernel applies o_proj + residual itself: the attention followed by
    `fused_matvec` (bit-identical for dense weights, whose launch keeps the attention's shape), over
    consecutive steps, with the counters back at zero."""
    dtype = mx.bfloat16
    cap = pos + 9
    first = [rand((b, hkv, cap, d), dtype, 12), rand((b, hkv, cap, d), dtype, 22)]
    mx.eval(first)
    caches = [first, [first[0] + 0, first[1] + 0]]
    inv = mx.array((1.0 / (5e5 ** (np.arange(0, d, 2) / d))).astype(np.float32))
    kw = {"n_heads": hq, "rope_inv_freq": inv, "backend": BACKEND}
    dense = rand((hidden, hq * d), dtype, 60) * (hq * d) ** -0.5
    weight, quant = dense, {}
    if bits is not None:
        weight, scales, biases = mx.quantize(dense, group_size=64, bits=bits)
        quant = {"scales": scales, "biases": biases}
    mx.eval(caches, weight, quant)
    counters = [mx.array(np.zeros(b * hkv, dtype=np.int32)), mx.array(np.zeros(b * hkv + 3, dtype=np.int32))]
    for step in range(3):
        qkv = rand((b, 1, (hq + 2 * hkv) * d), dtype, 70 + step)
        residual = rand((b, 1, hidden), dtype, 80 + step)
        attn = decode_attention_qkv(qkv, *caches[0], pos + step, d**-0.5, counters=counters[0], **kw)
        want = fused_matvec(attn[0], weight, **quant, bits=bits, residual=residual, backend=BACKEND)
        proj = OutputProjection(
            MatvecWeights(weight, quant.get("scales"), quant.get("biases"), bits), residual
        )
        got = decode_attention_qkv(
            qkv, *caches[1], pos + step, d**-0.5, counters=counters[1], output_projection=proj, **kw
        )
        mx.eval(want, got)
        assert got[0].shape == (b, 1, hidden)
        if bits is None:  # same launch shape as the reference attention: the same bits
            np.testing.assert_array_equal(f32(got[0]), f32(want))
        else:
            # The launch takes the quantized matvec's warps, so the attention's splits (and its rounding)
            # differ: two bf16 results, each within 1e-2 of the exact one, are within 2e-2 of each other.
            np.testing.assert_allclose(f32(got[0]), f32(want), rtol=2e-2, atol=2e-2)
        np.testing.assert_array_equal(f32(got[1]), f32(attn[1]))
        assert got[3].item() == pos + step + 1
        assert not np.array(counters[1]).any(), (
            f"counters not reset after step {step}: {np.array(counters[1])}"
        )
