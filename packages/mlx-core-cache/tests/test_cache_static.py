"""StaticKVCache: reference contents and masks, compiled decode with identical shapes, capacity errors."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.cache import CacheCapacityError, KeyValueCache, StaticKVCache


def test_matches_reference_and_mask() -> None:
    rng = np.random.default_rng(0)
    c = StaticKVCache(16)
    assert isinstance(c, KeyValueCache)
    ref = np.zeros((1, 2, 16, 4), np.float32)
    pos = 0
    for n in (5, 1, 1, 3, 1):
        m = np.array(c.make_mask(n))
        expect = np.arange(16)[None] <= (pos + np.arange(n))[:, None]
        np.testing.assert_array_equal(m, expect)
        mw = np.array(c.make_mask(n, window_size=3))
        np.testing.assert_array_equal(mw, expect & (np.arange(16)[None] > (pos + np.arange(n))[:, None] - 3))
        k = rng.standard_normal((1, 2, n, 4)).astype(np.float32)
        ref[:, :, pos : pos + n] = k
        pos += n
        gk, gv = c.update_and_fetch(mx.array(k), mx.array(2 * k))
        assert gk.shape == (1, 2, 16, 4)
        np.testing.assert_array_equal(np.array(gk), ref)
        np.testing.assert_array_equal(np.array(gv), 2 * ref)
        assert c.offset == pos
    assert c.trim(2) == 2 and c.offset == pos - 2
    with pytest.raises(CacheCapacityError, match="max_size=16"):
        c.update_and_fetch(mx.zeros((1, 2, 8, 4)), mx.zeros((1, 2, 8, 4)))


def test_compiled_decode_step_advances_in_place() -> None:
    rng = np.random.default_rng(1)
    c = StaticKVCache(12)
    prompt = rng.standard_normal((1, 1, 4, 8)).astype(np.float32)
    c.update_and_fetch(mx.array(prompt), mx.array(prompt))
    state = c.compile_state
    q = mx.array(rng.standard_normal((1, 1, 1, 8)).astype(np.float32))

    def step(x: mx.array) -> mx.array:
        mask = c.make_mask(1)
        k, v = c.update_and_fetch(x, x)
        return mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=mask)

    compiled = mx.compile(step, inputs=state, outputs=state)
    seen = [prompt[0, 0, i] for i in range(4)]
    for _ in range(5):
        x = rng.standard_normal((1, 1, 1, 8)).astype(np.float32)
        out = compiled(mx.array(x))
        seen.append(x[0, 0, 0])
        keys = np.stack(seen).astype(np.float64)
        s = keys @ np.array(q[0, 0, 0], np.float64)
        p = np.exp(s - s.max())
        expect = (p / p.sum()) @ keys
        np.testing.assert_allclose(np.array(out)[0, 0, 0], expect, rtol=1e-5, atol=1e-5)
    assert c.offset == 9
    assert int(c.position.item()) == 9


def test_bad_size() -> None:
    with pytest.raises(ValueError, match="max_size"):
        StaticKVCache(0)


def test_array_offset_lets_models_read_offset_while_compiled() -> None:
    """Inside ``array_offset()`` ``offset`` is the position array, so ``rope(x, offset=cache.offset)``
    can be traced once and still rotate each step by the live position (checked against float64 numpy).
    """
    rng = np.random.default_rng(2)
    c = StaticKVCache(10)
    c.update_and_fetch(mx.zeros((1, 1, 3, 4)), mx.zeros((1, 1, 3, 4)))
    state = c.compile_state
    seen_types: list[type] = []

    def step(x: mx.array) -> mx.array:
        with c.array_offset():
            seen_types.append(type(c.offset))
            rotated = mx.fast.rope(x, 4, traditional=False, base=10000.0, scale=1.0, offset=c.offset)
            c.update_and_fetch(rotated, rotated)
        return rotated

    compiled = mx.compile(step, inputs=state, outputs=state)
    inv = 10000.0 ** (-np.arange(0, 4, 2) / 4)
    for pos in range(3, 8):
        x = rng.standard_normal((1, 1, 1, 4))
        out = np.array(compiled(mx.array(x.astype(np.float32))), np.float64)[0, 0, 0]
        cos, sin = np.cos(pos * inv), np.sin(pos * inv)
        a, b = x[0, 0, 0, :2], x[0, 0, 0, 2:]
        np.testing.assert_allclose(out, np.concatenate([a * cos - b * sin, a * sin + b * cos]), atol=1e-5)
    assert seen_types == [mx.array]  # traced once
    assert isinstance(c.offset, int) and c.offset == 8  # outside the block: a synced Python int


def test_valid_length_follows_position_unless_windowed() -> None:
    c = StaticKVCache(8)
    c.update_and_fetch(mx.ones((1, 2, 3, 4)), mx.ones((1, 2, 3, 4)))
    mask = c.make_mask(1)  # models make the mask first, then write the token
    c.update_and_fetch(mx.ones((1, 2, 1, 4)), mx.ones((1, 2, 1, 4)))
    assert int(c.valid_length(mask).item()) == 4 == np.array(mask).sum()  # a prefix of 4 keys
    assert c.valid_length(c.make_mask(1, window_size=2)) is None  # not a prefix
    assert c.valid_length(mx.ones((1, 8), dtype=mx.bool_)) is None  # unknown provenance
    assert c.valid_length(None) is None


def test_deferred_append_protocol() -> None:
    rng = np.random.default_rng(7)
    new = [mx.array(rng.standard_normal((1, 2, 1, 8)).astype(np.float32)) for _ in range(2)]
    c = StaticKVCache(6)
    c.update_and_fetch(*(mx.array(rng.standard_normal((1, 2, 3, 8)).astype(np.float32)) for _ in range(2)))
    before_k = np.array(c.keys)
    with c.deferred_append():
        k, v = c.update_and_fetch(new[0], new[1])
    # Nothing written yet: the returned buffers lack the new row, the position already counts it.
    np.testing.assert_array_equal(np.array(k), before_k)
    assert c.pending_append is not None and c.offset == 4
    k, v = c.apply_pending_append()
    assert c.pending_append is None
    np.testing.assert_array_equal(np.array(k)[:, :, 3:4], np.array(new[0]))
    np.testing.assert_array_equal(np.array(v)[:, :, 3:4], np.array(new[1]))
    np.testing.assert_array_equal(np.array(k)[:, :, :3], before_k[:, :, :3])
    # `state` and an ordinary update both flush a pending row first; prompts (S > 1) never defer.
    with c.deferred_append():
        c.update_and_fetch(new[1], new[0])
        assert c.pending_append is not None
        state = c.state
        assert c.pending_append is None
        np.testing.assert_array_equal(np.array(state[0])[:, :, 4:5], np.array(new[1]))
        c.trim(1)
        c.update_and_fetch(new[0], new[1])
        c.update_and_fetch(new[1], new[0])  # a second write in one step: the first is applied then
        np.testing.assert_array_equal(np.array(c.keys)[:, :, 4:5], np.array(new[0]))
        c.apply_pending_append()
        np.testing.assert_array_equal(np.array(c.keys)[:, :, 5:6], np.array(new[1]))
    c.reset()
    assert c.pending_append is None and c.keys is None


def test_store_appended_advances_position_and_keeps_buffers() -> None:
    """An appending kernel hands back the buffers it wrote row `position` into; the cache adopts them."""
    rng = np.random.default_rng(8)
    c = StaticKVCache(5)
    assert not c.defers_append
    with pytest.raises(ValueError, match="allocated buffers"):
        c.store_appended(mx.zeros((1, 2, 5, 4)), mx.zeros((1, 2, 5, 4)))
    c.update_and_fetch(*(mx.array(rng.standard_normal((1, 2, 3, 4)).astype(np.float32)) for _ in range(2)))
    row = mx.array(rng.standard_normal((1, 2, 1, 4)).astype(np.float32))
    with c.deferred_append():
        assert c.defers_append
        keys = mx.slice_update(c.keys, row, c.position.reshape(1), axes=(2,))  # what a kernel would write
        values = mx.slice_update(c.values, -row, c.position.reshape(1), axes=(2,))
        c.store_appended(keys, values)
    assert not c.defers_append
    assert c.offset == 4 and c.keys is keys and c.values is values
    np.testing.assert_array_equal(np.array(c.keys)[:, :, 3:4], np.array(row))
    # A kernel may compute the next position itself; the cache takes it as given.
    c.store_appended(c.keys, c.values, mx.array(5, dtype=mx.int32))
    assert c.offset == 5
    with pytest.raises(CacheCapacityError, match="full"):
        c.store_appended(c.keys, c.values)


def test_kernel_counters_are_zero_persistent_and_grow() -> None:
    cache = StaticKVCache(8)
    first = cache.kernel_counters(3)
    assert first.dtype == mx.int32 and first.size >= 4  # at least 16 bytes
    assert not np.array(first).any()
    assert cache.kernel_counters(2) is first  # the same array every step
    bigger = cache.kernel_counters(40)
    assert bigger.size >= 40 and not np.array(bigger).any()
    assert cache.kernel_counters(40) is bigger
    assert StaticKVCache(8).kernel_counters(3) is not first  # one per cache


def test_kernel_counters_are_a_constant_inside_compile() -> None:
    """Requested first while ``mx.compile`` traces, the array is still real (usable after the trace)."""
    cache = StaticKVCache(8)

    @mx.compile
    def step(x: mx.array) -> mx.array:
        return x + cache.kernel_counters(4)[:4].astype(x.dtype)

    out = step(mx.array(np.arange(4, dtype=np.float32)))
    np.testing.assert_array_equal(np.array(out), np.arange(4))
    assert not np.array(cache.kernel_counters(4)).any()


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_kernel_counters_rejects_bad_counts(n: object) -> None:
    with pytest.raises(ValueError, match="kernel_counters needs a positive int count"):
        StaticKVCache(8).kernel_counters(n)  # type: ignore[arg-type]
