"""End to end with mlx_core.cache: prefill + decode through each cache kind vs full float64 attention."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.attn import create_attention_mask, scaled_dot_product_attention
from mlx_core.cache import KVCache, QuantizedKVCache, RotatingKVCache, StaticKVCache


def naive_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, mask: np.ndarray):
    """float64 softmax attention with GQA by repeating kv heads and a boolean [Lq, Lk] mask."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = np.where(mask, scale * q @ np.swapaxes(k, -1, -2), -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def windowed_causal(lq: int, lk: int, window: int | None) -> np.ndarray:
    i = np.arange(lk - lq, lk)[:, None]
    j = np.arange(lk)[None]
    return (j <= i) & ((j > i - window) if window else True)


CACHES = {
    "kv": (lambda: KVCache(), None, 1e-5),
    "static": (lambda: StaticKVCache(max_size=32), None, 1e-5),
    "rotating": (lambda: RotatingKVCache(max_size=6), 6, 1e-5),
    "quantized": (lambda: QuantizedKVCache(group_size=32, bits=8), None, 3e-2),
}


@pytest.mark.parametrize("name", list(CACHES))
def test_prefill_then_decode_matches_full_attention(name: str) -> None:
    factory, window, tol = CACHES[name]
    cache = factory()
    b, n_q, n_kv, d = 1, 4, 2, 32
    rng = np.random.default_rng(len(name))
    all_k = np.zeros((b, n_kv, 0, d), np.float32)
    all_v = np.zeros((b, n_kv, 0, d), np.float32)
    for step_len in (7, 1, 1, 3, 1):
        q = rng.standard_normal((b, n_q, step_len, d)).astype(np.float32)
        k = rng.standard_normal((b, n_kv, step_len, d)).astype(np.float32)
        v = rng.standard_normal((b, n_kv, step_len, d)).astype(np.float32)
        all_k, all_v = np.concatenate([all_k, k], 2), np.concatenate([all_v, v], 2)
        mask = create_attention_mask(mx.zeros((b, step_len, 8)), cache, window_size=window)
        keys, values = cache.update_and_fetch(mx.array(k), mx.array(v))
        out = scaled_dot_product_attention(mx.array(q), keys, values, scale=d**-0.5, mask=mask, cache=cache)
        lk = all_k.shape[2]
        ref = naive_attention(q, all_k, all_v, d**-0.5, windowed_causal(step_len, lk, window))
        np.testing.assert_allclose(np.array(out), ref, rtol=tol, atol=tol)
