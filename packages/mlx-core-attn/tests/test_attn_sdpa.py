"""Scaled dot-product attention: float64 naive softmax reference, quantized path, sinks, shape errors."""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.attn import (
    AttentionShapeError,
    quantized_scaled_dot_product_attention,
    scaled_dot_product_attention,
)


@pytest.fixture(autouse=True)
def float64_comparisons_on_the_cpu(request: pytest.FixtureRequest) -> Iterator[None]:
    """Unmarked tests hold float32 results to float64 at ~1e-5, which is the CPU's arithmetic. On CUDA, MLX
    computes float32 matmuls in TF32 (H100: 3.0e-4 relative against the CPU's 6e-7, and ``mx.fast``
    attention at Lq = 7 5e-4 apart from the CPU's), so on a GPU machine they run on the CPU; the ``gpu``
    tests check the GPU paths at their own tolerances."""
    if request.node.get_closest_marker("gpu") is not None or mx.default_device().type == mx.cpu:
        yield
        return
    previous = mx.default_device()
    mx.set_default_device(mx.cpu)
    try:
        yield
    finally:
        mx.set_default_device(previous)


class QuantCache:
    """The two attributes a quantized KV cache exposes to attention."""

    def __init__(self, group_size: int = 64, bits: int = 8) -> None:
        self.group_size, self.bits = group_size, bits


def rand(*shape: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def naive_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    scale: float,
    mask: str | np.ndarray | None = None,
    sinks: np.ndarray | None = None,
) -> np.ndarray:
    """float64 softmax attention; GQA by repeating kv heads; ``"causal"`` lower-right aligned."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = scale * q @ np.swapaxes(k, -1, -2)
    lq, lk = s.shape[-2:]
    if isinstance(mask, str):
        mask = np.arange(lk - lq, lk)[:, None] >= np.arange(lk)[None]
    if mask is not None:
        s = np.where(mask, s, -np.inf) if mask.dtype == bool else s + mask
    if sinks is not None:
        col = np.broadcast_to(sinks.astype(np.float64)[None, :, None, None], (*s.shape[:-1], 1))
        s = np.concatenate([col, s], axis=-1)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if sinks is not None:
        p = p[..., 1:]
    return p @ v


def make_mask(kind: str, b: int, h: int, lq: int, lk: int, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "none":
        return None, None
    if kind == "causal":
        return "causal", "causal"
    if kind == "bool":  # per-batch, per-head random, diagonal kept so no row is empty
        m = rng.random((b, h, lq, lk)) > 0.3
        m[..., np.arange(lq), lk - lq + np.arange(lq)] = True
        return mx.array(m), m
    add = (rng.standard_normal((b, 1, lq, lk)) * 2).astype(np.float32)
    return mx.array(add), add


GQA = [1, 2, 4, 8]
LQ = [1, 7, 64]
MASKS = ["none", "causal", "bool", "additive"]


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("lq", LQ)
@pytest.mark.parametrize("ratio", GQA)
def test_fast_path_matches_float64(ratio: int, lq: int, mask_kind: str) -> None:
    b, n_kv, d = 2, 2, 32
    lk = lq + 9
    seed = ratio * 100 + lq
    q, k, v = (
        rand(b, n_kv * ratio, lq, d, seed=seed),
        rand(b, n_kv, lk, d, seed=seed + 1),
        rand(b, n_kv, lk, d, seed=seed + 2),
    )
    mask, np_mask = make_mask(mask_kind, b, n_kv * ratio, lq, lk, seed)
    out = scaled_dot_product_attention(mx.array(q), mx.array(k), mx.array(v), scale=d**-0.5, mask=mask)
    np.testing.assert_allclose(
        np.array(out), naive_attention(q, k, v, d**-0.5, np_mask), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool"])
@pytest.mark.parametrize("ratio", [1, 4])
@pytest.mark.parametrize("quantized", [False, True])
def test_sinks_match_float64(ratio: int, mask_kind: str, quantized: bool) -> None:
    b, n_kv, lq, lk, d = 1, 2, 5, 12, 64
    q, k, v = rand(b, n_kv * ratio, lq, d, seed=1), rand(b, n_kv, lk, d, seed=2), rand(b, n_kv, lk, d, seed=3)
    sinks = rand(n_kv * ratio, seed=4) * 3
    mask, np_mask = make_mask(mask_kind, b, n_kv * ratio, lq, lk, 5)
    if quantized:
        qk, qv = mx.quantize(mx.array(k), 64, 8), mx.quantize(mx.array(v), 64, 8)
        k = np.array(mx.dequantize(*qk, group_size=64, bits=8))
        v = np.array(mx.dequantize(*qv, group_size=64, bits=8))
        out = scaled_dot_product_attention(
            mx.array(q), qk, qv, scale=0.125, mask=mask, cache=QuantCache(), sinks=mx.array(sinks)
        )
    else:
        out = scaled_dot_product_attention(
            mx.array(q), mx.array(k), mx.array(v), scale=0.125, mask=mask, sinks=mx.array(sinks)
        )
    ref = naive_attention(q, k, v, 0.125, np_mask, sinks)
    np.testing.assert_allclose(np.array(out), ref, rtol=1e-5, atol=1e-5)
    # the sinks matter: without them the answer differs
    assert not np.allclose(ref, naive_attention(q, k, v, 0.125, np_mask), atol=1e-3)


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("lq", LQ)
@pytest.mark.parametrize(("ratio", "bits", "group_size"), [(1, 8, 64), (2, 4, 32), (4, 8, 32), (8, 4, 64)])
def test_quantized_path_matches_dequantize_then_attend(
    ratio: int, bits: int, group_size: int, lq: int, mask_kind: str
) -> None:
    b, n_kv, d = 1, 2, 64
    lk = lq + 6
    seed = ratio * 10 + lq + bits
    q, k, v = (
        rand(b, n_kv * ratio, lq, d, seed=seed),
        rand(b, n_kv, lk, d, seed=seed + 1),
        rand(b, n_kv, lk, d, seed=seed + 2),
    )
    qk = mx.quantize(mx.array(k), group_size=group_size, bits=bits)
    qv = mx.quantize(mx.array(v), group_size=group_size, bits=bits)
    mask, np_mask = make_mask(mask_kind, b, n_kv * ratio, lq, lk, seed)
    out = scaled_dot_product_attention(
        mx.array(q), qk, qv, scale=d**-0.5, mask=mask, cache=QuantCache(group_size, bits)
    )
    k_dq = np.array(mx.dequantize(*qk, group_size=group_size, bits=bits))
    v_dq = np.array(mx.dequantize(*qv, group_size=group_size, bits=bits))
    np.testing.assert_allclose(
        np.array(out), naive_attention(q, k_dq, v_dq, d**-0.5, np_mask), rtol=1e-4, atol=1e-4
    )
    # and within quantization error of the unquantized attention
    err = np.abs(np.array(out) - naive_attention(q, k, v, d**-0.5, np_mask)).max()
    assert err < (0.05 if bits == 8 else 0.5)


@pytest.mark.parity
@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool"])
def test_quantized_matches_mlx_lm(mask_kind: str) -> None:
    base = pytest.importorskip("mlx_lm.models.base")
    b, n_kv, ratio, lq, lk, d = 1, 2, 4, 3, 10, 64
    q = mx.array(rand(b, n_kv * ratio, lq, d, seed=7))
    qk = mx.quantize(mx.array(rand(b, n_kv, lk, d, seed=8)), group_size=64, bits=8)
    qv = mx.quantize(mx.array(rand(b, n_kv, lk, d, seed=9)), group_size=64, bits=8)
    mask, _ = make_mask(mask_kind, 1, 1, lq, lk, 3)  # head-broadcast mask: mlx-lm supports only that
    ours = scaled_dot_product_attention(q, qk, qv, scale=0.125, mask=mask, cache=QuantCache())
    theirs = base.scaled_dot_product_attention(q, qk, qv, QuantCache(), scale=0.125, mask=mask)
    np.testing.assert_allclose(np.array(ours), np.array(theirs), rtol=1e-5, atol=1e-6)


def test_fast_path_is_mx_fast_exactly() -> None:
    q, k, v = (mx.array(rand(1, 4, 3, 16, seed=s)) for s in (1, 2, 3))
    k, v = k[:, :2], v[:, :2]
    ours = scaled_dot_product_attention(q, k, v, scale=0.3, mask="causal")
    ref = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask="causal")
    assert mx.array_equal(ours, ref).item()


def test_quantized_does_not_mutate_queries() -> None:
    q = mx.array(rand(1, 2, 1, 64, seed=1))
    before = np.array(q)
    qk = mx.quantize(mx.array(rand(1, 2, 4, 64, seed=2)), group_size=64, bits=8)
    quantized_scaled_dot_product_attention(q, qk, qk, scale=0.5)
    np.testing.assert_array_equal(np.array(q), before)


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "kwargs", "needle"),
    [
        ((1, 6, 2, 16), (1, 4, 5, 16), {}, "multiple of key/value heads"),
        ((1, 4, 2, 16), (1, 2, 5, 32), {}, "head dim"),
        ((2, 4, 2, 16), (1, 2, 5, 16), {}, "batch"),
        ((4, 2, 16), (1, 2, 5, 16), {}, "4-D"),
        ((1, 4, 2, 16), (1, 2, 5, 16), {"mask": mx.ones((3, 5), dtype=mx.bool_)}, "does not broadcast"),
        ((1, 4, 2, 16), (1, 2, 5, 16), {"sinks": mx.zeros((2,))}, "sinks"),
        ((1, 4, 6, 16), (1, 2, 5, 16), {"mask": "causal"}, "Lq <= Lk"),
        ((1, 4, 2, 16), (1, 2, 5, 16), {"mask": "full"}, "causal"),
    ],
)
def test_shape_errors(q_shape: tuple, k_shape: tuple, kwargs: dict, needle: str) -> None:
    q, k = mx.zeros(q_shape), mx.zeros(k_shape)
    with pytest.raises(ValueError, match=needle):
        scaled_dot_product_attention(q, k, k, scale=1.0, **kwargs)


def test_quantized_errors() -> None:
    q = mx.zeros((1, 4, 2, 64))
    qk = mx.quantize(mx.zeros((1, 2, 5, 64)) + 1, group_size=64, bits=8)
    with pytest.raises(TypeError, match="no quantized cache"):
        scaled_dot_product_attention(q, qk, qk, scale=1.0)
    with pytest.raises(TypeError, match="tuples"):
        scaled_dot_product_attention(
            q, mx.zeros((1, 2, 5, 64)), mx.zeros((1, 2, 5, 64)), scale=1.0, cache=QuantCache()
        )
    with pytest.raises(AttentionShapeError, match="head dim"):
        scaled_dot_product_attention(mx.zeros((1, 4, 2, 128)), qk, qk, scale=1.0, cache=QuantCache())
    with pytest.raises(AttentionShapeError, match="multiple"):
        scaled_dot_product_attention(mx.zeros((1, 3, 2, 64)), qk, qk, scale=1.0, cache=QuantCache())


@pytest.mark.gpu
@pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend")
@pytest.mark.parametrize("quantized", [False, True])
def test_bf16_on_gpu(quantized: bool) -> None:
    b, n_kv, ratio, lq, lk, d = 1, 8, 4, 1, 1024, 128
    q, k, v = rand(b, n_kv * ratio, lq, d, seed=1), rand(b, n_kv, lk, d, seed=2), rand(b, n_kv, lk, d, seed=3)
    sinks = rand(n_kv * ratio, seed=4)
    qb, kb, vb = (mx.array(a).astype(mx.bfloat16) for a in (q, k, v))
    if quantized:
        qk, qv = mx.quantize(kb, group_size=64, bits=8), mx.quantize(vb, group_size=64, bits=8)
        k = np.array(mx.dequantize(*qk, group_size=64, bits=8).astype(mx.float32))
        v = np.array(mx.dequantize(*qv, group_size=64, bits=8).astype(mx.float32))
        out = scaled_dot_product_attention(
            qb, qk, qv, scale=d**-0.5, cache=QuantCache(), sinks=mx.array(sinks)
        )
    else:
        out = scaled_dot_product_attention(qb, kb, vb, scale=d**-0.5, sinks=mx.array(sinks))
    q = np.array(qb.astype(mx.float32))
    if not quantized:
        k, v = np.array(kb.astype(mx.float32)), np.array(vb.astype(mx.float32))
    ref = naive_attention(q, k, v, d**-0.5, None, sinks)
    np.testing.assert_allclose(np.array(out.astype(mx.float32)), ref, rtol=1e-2, atol=1e-2)
