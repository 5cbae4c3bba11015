"""Decode steps (Lq = 1) on CUDA use mlx_core.kernels.decode_attention when the mask allows it."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.attn import scaled_dot_product_attention
from mlx_core.attn import sdpa as sdpa_module
from mlx_core.cache import KVCache, StaticKVCache
from mlx_core.kernels import decode_attention


def _naive(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, visible: int) -> np.ndarray:
    """float64 attention of one query over the first ``visible`` keys (GQA by repeating heads)."""
    rep = q.shape[1] // k.shape[1]
    k = np.repeat(k[:, :, :visible].astype(np.float64), rep, axis=1)
    v = np.repeat(v[:, :, :visible].astype(np.float64), rep, axis=1)
    s = scale * q.astype(np.float64) @ np.swapaxes(k, -1, -2)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Pretend the backend is CUDA; record the kernel calls and run the kernel's mx.fast fallback."""
    calls = KernelCalls()

    def kernel(
        q: mx.array, k: mx.array, v: mx.array, scale: float, valid_length: Any = None, *, counters: Any = None
    ) -> mx.array:
        calls.append(valid_length)
        calls.counters.append(counters)
        return decode_attention(q, k, v, scale, valid_length, counters=counters, backend="fallback")

    monkeypatch.setattr(sdpa_module, "backend", lambda dtype: "cuda")
    monkeypatch.setattr(sdpa_module, "decode_attention", kernel)
    monkeypatch.setattr(sdpa_module, "_decode_kernel_mode", True)
    return calls


class KernelCalls(list[Any]):
    """The ``valid_length`` of each faked kernel call; ``counters`` holds what each call got for its merge."""

    def __init__(self) -> None:
        super().__init__()
        self.counters: list[Any] = []


def _static_step(cache: StaticKVCache, rng: np.random.Generator, window: int | None = None) -> tuple:
    """One decode step of a model: make the mask, write the token, fetch the full buffers."""
    mask = cache.make_mask(1, window_size=window)
    k_new = mx.array(rng.standard_normal((1, 2, 1, 32)), mx.float16)
    v_new = mx.array(rng.standard_normal((1, 2, 1, 32)), mx.float16)
    k, v = cache.update_and_fetch(k_new, v_new)
    return mask, k, v


def test_static_cache_decode_uses_kernel_with_valid_length(fake_cuda: list[Any]) -> None:
    rng = np.random.default_rng(0)
    cache = StaticKVCache(64)
    prompt = mx.array(rng.standard_normal((1, 2, 20, 32)), mx.float16)
    cache.update_and_fetch(prompt, prompt * 0.5)
    mask, k, v = _static_step(cache, rng)
    q = mx.array(rng.standard_normal((1, 8, 1, 32)), mx.float16)
    out = scaled_dot_product_attention(q, k, v, scale=32**-0.5, mask=mask, cache=cache)
    assert len(fake_cuda) == 1 and int(fake_cuda[0].item()) == 21
    # The cache's own counters, so the kernel merges its splits in the same launch.
    assert len(fake_cuda.counters) == 1 and fake_cuda.counters[0] is cache.kernel_counters(2)
    ref = _naive(np.array(q, np.float32), np.array(k, np.float32), np.array(v, np.float32), 32**-0.5, 21)
    np.testing.assert_allclose(np.array(out, np.float32), ref, atol=1e-2, rtol=1e-2)


def test_windowed_or_foreign_masks_and_other_dtypes_use_mx_fast(fake_cuda: list[Any]) -> None:
    rng = np.random.default_rng(1)
    cache = StaticKVCache(32)
    prompt = mx.array(rng.standard_normal((1, 2, 10, 32)), mx.float16)
    cache.update_and_fetch(prompt, prompt)
    mask, k, v = _static_step(cache, rng, window=4)
    q = mx.array(rng.standard_normal((1, 4, 1, 32)), mx.float16)
    out = scaled_dot_product_attention(q, k, v, scale=0.2, mask=mask, cache=cache)
    assert fake_cuda == []  # a window is not a prefix: the mask must be applied
    ref = np.array(mx.fast.scaled_dot_product_attention(q, k, v, scale=0.2, mask=mask), np.float32)
    np.testing.assert_array_equal(np.array(out, np.float32), ref)
    own = mx.array(np.arange(32)[None] < 5)
    scaled_dot_product_attention(q, k, v, scale=0.2, mask=own, cache=KVCache())
    scaled_dot_product_attention(q.astype(mx.float32), k.astype(mx.float32), v.astype(mx.float32), scale=0.2)
    assert fake_cuda == []


@pytest.mark.parametrize("mask", [None, "causal"])
def test_unmasked_decode_uses_kernel_over_all_keys(fake_cuda: list[Any], mask: Any) -> None:
    rng = np.random.default_rng(2)
    q = mx.array(rng.standard_normal((1, 4, 1, 32)), mx.bfloat16)
    k = mx.array(rng.standard_normal((1, 1, 17, 32)), mx.bfloat16)
    v = mx.array(rng.standard_normal((1, 1, 17, 32)), mx.bfloat16)
    out = scaled_dot_product_attention(q, k, v, scale=0.3, mask=mask)
    assert fake_cuda == [None]
    assert fake_cuda.counters == [None]  # no cache owns counters: the two-launch merge
    ref = _naive(*(np.array(a.astype(mx.float32)) for a in (q, k, v)), 0.3, 17)
    np.testing.assert_allclose(np.array(out.astype(mx.float32)), ref, atol=2e-2, rtol=2e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend")
@pytest.mark.parametrize("dtype", [mx.bfloat16, mx.float16])
def test_cuda_kernel_matches_mx_fast_on_static_cache(dtype: mx.Dtype) -> None:
    rng = np.random.default_rng(3)
    cache = StaticKVCache(4096)
    prompt = mx.array(rng.standard_normal((1, 8, 3000, 128)), dtype)
    cache.update_and_fetch(prompt, prompt * 0.5)
    mask = cache.make_mask(1)
    k, v = cache.update_and_fetch(*(mx.array(rng.standard_normal((1, 8, 1, 128)), dtype) for _ in range(2)))
    q = mx.array(rng.standard_normal((1, 32, 1, 128)), dtype)
    out = scaled_dot_product_attention(q, k, v, scale=128**-0.5, mask=mask, cache=cache)
    ref = _naive(*(np.array(a.astype(mx.float32)) for a in (q, k, v)), 128**-0.5, 3001)
    np.testing.assert_allclose(np.array(out.astype(mx.float32)), ref, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("mode", [None, False])
def test_unmasked_decode_stays_on_mx_fast_unless_forced(monkeypatch: pytest.MonkeyPatch, mode: Any) -> None:
    """Unmasked decode measured slower in the kernel than in mx.fast on an H100: auto and off skip it."""
    calls: list[Any] = []
    monkeypatch.setattr(sdpa_module, "backend", lambda dtype: "cuda")
    monkeypatch.setattr(sdpa_module, "decode_attention", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(sdpa_module, "_decode_kernel_mode", mode)
    rng = np.random.default_rng(0)
    q = mx.array(rng.standard_normal((1, 4, 1, 32)), dtype=mx.float16)
    k = mx.array(rng.standard_normal((1, 2, 9, 32)), dtype=mx.float16)
    out = scaled_dot_product_attention(q, k, k, scale=0.2)
    mx.eval(out)
    assert calls == []


def test_auto_mode_uses_kernel_for_static_cache_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def kernel(
        q: mx.array, k: mx.array, v: mx.array, scale: float, valid_length: Any = None, *, counters: Any = None
    ) -> mx.array:
        calls.append(valid_length)
        return decode_attention(q, k, v, scale, valid_length, counters=counters, backend="fallback")

    monkeypatch.setattr(sdpa_module, "backend", lambda dtype: "cuda")
    monkeypatch.setattr(sdpa_module, "decode_attention", kernel)
    monkeypatch.setattr(sdpa_module, "_decode_kernel_mode", None)
    cache = StaticKVCache(16)
    rng = np.random.default_rng(1)
    for _ in range(2):
        mask, k, v = _static_step(cache, rng)
        q = mx.array(rng.standard_normal((1, 4, 1, 32)), mx.float16)
        mx.eval(scaled_dot_product_attention(q, k, v, scale=0.2, mask=mask, cache=cache))
    assert [int(c.item()) for c in calls] == [1, 2]


def test_env_var_rejects_unknown_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sdpa_module.DECODE_KERNEL_ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match="auto, 1, 0"):
        sdpa_module._mode_from_env()


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_deferred_static_write_is_appended_by_the_attention(dtype: mx.Dtype) -> None:
    """A StaticKVCache that deferred its write gets it back from SDPA (CUDA: in place; here: slice_update)."""
    rng = np.random.default_rng(4)
    cache, plain = StaticKVCache(40), StaticKVCache(40)
    prompt = mx.array(rng.standard_normal((1, 2, 12, 32)), dtype)
    for c in (cache, plain):
        c.update_and_fetch(prompt, prompt * 0.5)
    for step in range(3):
        q = mx.array(rng.standard_normal((1, 8, 1, 32)), dtype)
        rows = [mx.array(rng.standard_normal((1, 2, 1, 32)), dtype) for _ in range(2)]
        mask = cache.make_mask(1)
        with cache.deferred_append():
            k, v = cache.update_and_fetch(*rows)
        assert cache.pending_append is not None
        out = scaled_dot_product_attention(q, k, v, scale=0.2, mask=mask, cache=cache)
        assert cache.pending_append is None
        mx.eval(out)  # on CUDA the attention kernel writes the row in place when it runs
        pk, pv = plain.update_and_fetch(*rows)
        want = scaled_dot_product_attention(q, pk, pv, scale=0.2, mask=mask, cache=plain)
        np.testing.assert_array_equal(
            np.array(cache.keys.astype(mx.float32)), np.array(pk.astype(mx.float32))
        )
        ref = _naive(*(np.array(a.astype(mx.float32)) for a in (q, pk, pv)), 0.2, 13 + step)
        tol = 1e-5 if dtype == mx.float32 else 2e-2
        np.testing.assert_allclose(np.array(out.astype(mx.float32)), ref, atol=tol, rtol=tol)
        np.testing.assert_allclose(
            np.array(out.astype(mx.float32)), np.array(want.astype(mx.float32)), atol=tol
        )


def test_deferred_write_with_sinks_falls_back_to_slice_update() -> None:
    rng = np.random.default_rng(5)
    cache = StaticKVCache(16)
    prompt = mx.array(rng.standard_normal((1, 2, 5, 32)), mx.float32)
    cache.update_and_fetch(prompt, prompt)
    mask = cache.make_mask(1)
    row = mx.array(rng.standard_normal((1, 2, 1, 32)), mx.float32)
    with cache.deferred_append():
        k, v = cache.update_and_fetch(row, row)
    q = mx.array(rng.standard_normal((1, 4, 1, 32)), mx.float32)
    sinks = mx.zeros((4,))
    out = scaled_dot_product_attention(q, k, v, scale=0.2, mask=mask, cache=cache, sinks=sinks)
    assert cache.pending_append is None
    np.testing.assert_array_equal(np.array(cache.keys)[:, :, 5:6], np.array(row))
    ref = mx.fast.scaled_dot_product_attention(q, cache.keys, cache.values, scale=0.2, mask=mask, sinks=sinks)
    np.testing.assert_allclose(np.array(out), np.array(ref), atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not mx.cuda.is_available(), reason="needs MLX's CUDA backend")
def test_cuda_deferred_writes_land_in_place() -> None:
    rng = np.random.default_rng(9)
    cache, plain = StaticKVCache(1024), StaticKVCache(1024)
    prompt = mx.array(rng.standard_normal((1, 8, 700, 128)), mx.bfloat16)
    for c in (cache, plain):
        c.update_and_fetch(prompt, prompt * 0.5)
    mx.eval(cache.keys, cache.values, plain.keys, plain.values)
    for _ in range(4):
        q = mx.array(rng.standard_normal((1, 32, 1, 128)), mx.bfloat16)
        rows = [mx.array(rng.standard_normal((1, 8, 1, 128)), mx.bfloat16) for _ in range(2)]
        mask = cache.make_mask(1)
        buffers = (cache.keys, cache.values)
        with cache.deferred_append():
            k, v = cache.update_and_fetch(*rows)
        out = scaled_dot_product_attention(q, k, v, scale=128**-0.5, mask=mask, cache=cache)
        assert cache.keys is buffers[0] and cache.values is buffers[1]  # no new buffers: written in place
        pk, pv = plain.update_and_fetch(*rows)
        want = mx.fast.scaled_dot_product_attention(q, pk, pv, scale=128**-0.5, mask=mask)
        np.testing.assert_allclose(
            np.array(out.astype(mx.float32)), np.array(want.astype(mx.float32)), atol=2e-2, rtol=2e-2
        )
        np.testing.assert_array_equal(
            np.array(cache.keys.astype(mx.float32)), np.array(pk.astype(mx.float32))
        )
