"""RotatingKVCache: exact parity with mlx-lm on random op sequences, a naive window reference, trim
after wrap.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx.utils import tree_flatten
from mlx_core.cache import CacheTrimError, QuantizedRotatingKVCache, RotatingKVCache

B, H, D = 1, 2, 32


def ids_kv(start: int, n: int, rng: np.random.Generator) -> tuple[mx.array, mx.array]:
    """Keys whose channel 0 is the token index (so returned slots can be identified), rest random."""
    k = rng.standard_normal((B, H, n, D)).astype(np.float32)
    k[..., 0] = np.arange(start, start + n, dtype=np.float32)
    v = rng.standard_normal((B, H, n, D)).astype(np.float32)
    return mx.array(k), mx.array(v)


def assert_same(a: object, b: object) -> None:
    fa, fb = tree_flatten(a), tree_flatten(b)
    assert len(fa) == len(fb)
    for (_, x), (_, y) in zip(fa, fb, strict=False):
        assert x.shape == y.shape and mx.array_equal(x, y)


@pytest.mark.parity
@settings(max_examples=40, deadline=None)
@given(
    st.integers(3, 40),
    st.integers(0, 4),
    st.lists(st.one_of(st.just(1), st.just(1), st.integers(2, 60)), min_size=1, max_size=30),
    st.one_of(st.none(), st.integers(1, 12)),
    st.integers(0, 2**31 - 1),
)
def test_parity_with_mlx_lm(
    max_size: int, keep: int, sizes: list[int], window: int | None, seed: int
) -> None:
    C = pytest.importorskip("mlx_lm.models.cache")
    keep = min(keep, max_size - 1)
    rng = np.random.default_rng(seed)
    ours, theirs = RotatingKVCache(max_size, keep=keep), C.RotatingKVCache(max_size, keep=keep)
    pos = 0
    for n in sizes:
        for ws in (None, window):
            for ra in (False, True):
                m1, m2 = (
                    ours.make_mask(n, return_array=ra, window_size=ws),
                    theirs.make_mask(n, return_array=ra, window_size=ws),
                )
                assert type(m1) is type(m2)
                if isinstance(m1, mx.array):
                    assert mx.array_equal(m1, m2)
                else:
                    assert m1 == m2
        k, v = ids_kv(pos, n, rng)
        pos += n
        assert_same(ours.update_and_fetch(k, v), theirs.update_and_fetch(k, v))
        assert ours.offset == theirs.offset and ours.size() == theirs.size()


@pytest.mark.parity
def test_trim_before_wrap_matches_mlx_lm() -> None:
    C = pytest.importorskip("mlx_lm.models.cache")
    rng = np.random.default_rng(1)
    ours, theirs = RotatingKVCache(32, keep=2), C.RotatingKVCache(32, keep=2)
    for n, t in [(10, 3), (1, 1), (5, 4), (1, 0)]:
        k, v = ids_kv(0, n, rng)
        assert_same(ours.update_and_fetch(k, v), theirs.update_and_fetch(k, v))
        assert ours.is_trimmable() and theirs.is_trimmable()
        assert ours.trim(t) == theirs.trim(t)
        assert ours.offset == theirs.offset


ref_ops = st.lists(
    st.one_of(st.tuples(st.just("u"), st.just(1)), st.tuples(st.just("t"), st.integers(0, 12))),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 20), st.integers(0, 3), st.integers(0, 19), ref_ops, st.integers(0, 2**31 - 1))
def test_single_token_decoding_matches_window_reference(
    max_size: int, keep: int, prefill: int, seq: list[tuple[str, int]], seed: int
) -> None:
    """Reference: a list of token ids; appending past max_size drops the oldest non-keep token."""
    keep = min(keep, max_size - 1)
    prefill = min(prefill, max_size - 1)
    rng = np.random.default_rng(seed)
    cache = RotatingKVCache(max_size, keep=keep, step=4)
    held: list[int] = []
    dropped = False
    nxt = 0
    if prefill:
        k, v = ids_kv(0, prefill, rng)
        cache.update_and_fetch(k, v)
        held, nxt = list(range(prefill)), prefill
    for op, n in seq:
        if op == "t":
            limit = len(held) - keep if dropped else len(held)
            if n > limit:
                with pytest.raises(CacheTrimError):
                    cache.trim(n)
                continue
            assert cache.trim(n) == n
            del held[len(held) - n :]
            nxt -= n
        else:
            assert cache.make_mask(1) is None
            k, v = ids_kv(nxt, 1, rng)
            nxt += 1
            held.append(nxt - 1)
            if len(held) > max_size:
                del held[keep]
                dropped = True
            gk, gv = cache.update_and_fetch(k, v)
            got = sorted(np.array(gk[0, 0, :, 0]).astype(int).tolist())
            assert got == sorted(held)
            # values travel with their keys
            order = np.argsort(np.array(gk[0, 0, :, 0]))
            assert np.array(gv)[0, 0, order].shape == (len(held), D)
        assert cache.offset == nxt


def test_trim_after_wrap_then_continue() -> None:
    rng = np.random.default_rng(0)
    c = RotatingKVCache(8, keep=2, step=4)
    for i in range(20):
        c.update_and_fetch(*ids_kv(i, 1, rng))
    assert c.trimmable_tokens() == 6
    with pytest.raises(CacheTrimError, match="wrapped"):
        c.trim(7)
    c.trim(3)  # drop tokens 17, 18, 19
    assert c.offset == 17
    k, _ = c.update_and_fetch(*ids_kv(17, 3, rng))  # multi-token after trim
    assert np.array(k[0, 0, :, 0]).astype(int).tolist() == [0, 1, 14, 15, 16, 17, 18, 19]
    mask = c.make_mask(2, return_array=True)
    assert mask.shape == (2, 9)


def test_errors() -> None:
    with pytest.raises(ValueError, match="keep"):
        RotatingKVCache(4, keep=4)
    with pytest.raises(ValueError):
        RotatingKVCache(0)
    with pytest.raises(TypeError):
        RotatingKVCache(4.0)  # type: ignore[arg-type]
    c = RotatingKVCache(4)
    with pytest.raises(ValueError, match="rank 4"):
        c.update_and_fetch(mx.zeros((2, 3)), mx.zeros((2, 3)))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(3, 30),
    st.integers(0, 3),
    st.lists(st.one_of(st.just(1), st.integers(2, 40)), min_size=1, max_size=20),
    st.integers(0, 2**31 - 1),
)
def test_quantized_rotating_equals_quantized_rotating_output(
    max_size: int, keep: int, sizes: list[int], seed: int
) -> None:
    """Quantization is per token and group, so storing quantized equals quantizing RotatingKVCache's
    output.
    """
    keep = min(keep, max_size - 1)
    rng = np.random.default_rng(seed)
    q, f = QuantizedRotatingKVCache(max_size, keep, group_size=32, bits=4), RotatingKVCache(max_size, keep)
    for n in sizes:
        k, v = ids_kv(0, n, rng)
        m1, m2 = q.make_mask(n, return_array=True), f.make_mask(n, return_array=True)
        assert (m1 is None and m2 is None) or mx.array_equal(m1, m2)
        (qk, qv), (fk, fv) = q.update_and_fetch(k, v), f.update_and_fetch(k, v)
        assert_same(qk, mx.quantize(fk, group_size=32, bits=4))
        assert_same(qv, mx.quantize(fv, group_size=32, bits=4))
    assert q.bits == 4 and q.group_size == 32 and q.offset == f.offset
    fq = f.to_quantized(group_size=32, bits=4)
    assert fq.offset == q.offset and fq.size() == q.size()
