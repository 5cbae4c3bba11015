"""decode_attention on the CPU (mx.fast path) against a float64 numpy reference; argument checks."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import decode_attention, decode_attention_append
from mlx_core.kernels.decode_attention import (
    _mma_covers,
    fold_num_splits,
    mma_launch,
    mma_num_splits,
    num_splits,
)


def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, lengths: list[int]) -> np.ndarray:
    b, hq, _, d = q.shape
    group = hq // k.shape[1]
    out = np.zeros((b, hq, 1, d))
    for bi in range(b):
        for h in range(hq):
            kk = k[bi, h // group, : lengths[bi]].astype(np.float64)
            vv = v[bi, h // group, : lengths[bi]].astype(np.float64)
            s = kk @ q[bi, h, 0].astype(np.float64) * scale
            p = np.exp(s - s.max())
            out[bi, h, 0] = p @ vv / p.sum()
    return out


def make(b: int, hq: int, hkv: int, lk: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((b, hq, 1, d)).astype(np.float32)
    k = rng.standard_normal((b, hkv, lk, d)).astype(np.float32)
    v = rng.standard_normal((b, hkv, lk, d)).astype(np.float32)
    return q, k, v


@pytest.mark.parametrize(
    ("b", "hq", "hkv", "lk", "d"), [(1, 4, 1, 37, 32), (2, 8, 2, 100, 64), (1, 3, 3, 5, 16)]
)
def test_matches_float64_reference(b: int, hq: int, hkv: int, lk: int, d: int) -> None:
    q, k, v = make(b, hq, hkv, lk, d, 0)
    scale = d**-0.5
    out = decode_attention(mx.array(q), mx.array(k), mx.array(v), scale)
    assert out.shape == (b, hq, 1, d)
    np.testing.assert_allclose(np.array(out), reference(q, k, v, scale, [lk] * b), rtol=1e-4, atol=1e-5)


def test_valid_length_int_and_per_batch_array() -> None:
    q, k, v = make(3, 4, 2, 50, 32, 1)
    qa, ka, va = mx.array(q), mx.array(k), mx.array(v)
    out = decode_attention(qa, ka, va, 0.2, valid_length=17)
    np.testing.assert_allclose(np.array(out), reference(q, k, v, 0.2, [17] * 3), rtol=1e-4, atol=1e-5)
    lengths = [50, 1, 23]
    out = decode_attention(qa, ka, va, 0.2, valid_length=mx.array(lengths))
    np.testing.assert_allclose(np.array(out), reference(q, k, v, 0.2, lengths), rtol=1e-4, atol=1e-5)
    out = decode_attention(qa, ka, va, 0.2, valid_length=mx.array(9))
    np.testing.assert_allclose(np.array(out), reference(q, k, v, 0.2, [9] * 3), rtol=1e-4, atol=1e-5)


def test_strided_cache_view() -> None:
    q, k, v = make(1, 4, 2, 64, 32, 2)
    kv = mx.array(np.stack([k, v], axis=2))  # [B, Hkv, 2, Lk, D]
    out = decode_attention(mx.array(q), kv[:, :, 0, :40], kv[:, :, 1, :40], 0.3)
    np.testing.assert_allclose(
        np.array(out), reference(q, k[:, :, :40], v[:, :, :40], 0.3, [40]), rtol=1e-4, atol=1e-5
    )


def test_num_splits_fills_the_gpu_but_keeps_work_per_split() -> None:
    assert num_splits(1, 8, 65536) == 66  # 528 blocks: four per SM of a 132-SM H100
    assert num_splits(8, 8, 1024) == 9  # filling the GPU at batch 8 ...
    assert num_splits(8, 8, 16384) == 64  # ... and one split per 256 keys for long caches
    assert num_splits(8, 8, 65536) == 66  # capped
    assert num_splits(1, 8, 768) == 24  # >= 32 keys per split (decode-step lengths: as before)
    assert num_splits(1, 8, 100) == 4
    assert num_splits(64, 64, 1024) == 4
    assert num_splits(64, 64, 64) == 1


def test_mma_num_splits_aims_at_1056_warps_with_a_tile_each() -> None:
    assert mma_num_splits(1, 8, 16384) == 33  # 8 kv heads x 33 splits x 4 warps = 1056 warps
    assert mma_num_splits(1, 8, 65536) == 33
    assert mma_num_splits(8, 8, 16384) == 5
    assert mma_num_splits(1, 8, 1024) == 16  # one 16-key tile per warp
    assert mma_num_splits(1, 8, 100) == 2
    assert mma_num_splits(64, 64, 4096) == 1
    assert mma_num_splits(1, 1, 1_000_000) == 256  # capped


def test_fold_num_splits_caps_long_caches_at_24() -> None:
    assert fold_num_splits(1, 8, 4096, 4) == 24  # mma_num_splits gives 33
    assert fold_num_splits(1, 8, 776, 4) == 13  # short caches: unchanged
    assert fold_num_splits(8, 8, 16384, 4) == 5
    assert fold_num_splits(1, 8, 100, 4) == mma_num_splits(1, 8, 100, 4)


def test_mma_launch_takes_one_wave_of_wide_blocks_for_few_heads_and_long_caches() -> None:
    assert mma_launch(1, 8, 4096) == (8, 16)  # 8 kv heads x 16 splits = 128 blocks of 8 warps, 2 tiles a warp
    assert mma_launch(1, 8, 65536) == (8, 16)
    assert mma_launch(1, 2, 100_000) == (8, 66)
    assert mma_launch(1, 1, 1_000_000) == (8, 132)
    assert mma_launch(1, 8, 2048) == (4, mma_num_splits(1, 8, 2048))  # one tile a warp: 4-warp blocks
    assert mma_launch(1, 8, 1024) == (4, 16)
    assert mma_launch(2, 8, 16384) == (4, mma_num_splits(2, 8, 16384))  # 16 kv heads: < 16 splits each
    assert mma_launch(8, 8, 16384) == (4, 5)


@pytest.mark.parametrize(
    ("dtype", "group", "d", "covered"),
    [
        (mx.bfloat16, 4, 128, True),
        (mx.float16, 8, 64, True),
        (mx.bfloat16, 1, 128, True),
        (mx.float32, 4, 128, False),  # tensor cores take 16-bit inputs here
        (mx.bfloat16, 16, 128, False),  # more heads than the mma's 8 columns
        (mx.bfloat16, 4, 96, False),
        (mx.bfloat16, 4, 256, False),
    ],
)
def test_mma_covers(dtype: mx.Dtype, group: int, d: int, covered: bool) -> None:
    assert _mma_covers(dtype, group, d) is covered


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "match"),
    [
        ((1, 4, 2, 32), (1, 2, 8, 32), "one query token"),
        ((1, 4, 1, 32), (1, 3, 8, 32), "multiple of kv heads"),
        ((1, 4, 1, 32), (2, 2, 8, 32), "batch or head dim"),
        ((1, 4, 1, 32), (1, 2, 8, 16), "batch or head dim"),
        ((1, 4, 1, 32), (1, 2, 0, 32), "no keys"),
        ((1, 4, 1, 32), (2, 8, 32), r"\[B, Hkv, Lk, D\]"),
    ],
)
def test_bad_shapes(q_shape: tuple[int, ...], k_shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_attention(mx.zeros(q_shape), mx.zeros(k_shape), mx.zeros(k_shape), 1.0)


def test_bad_arguments() -> None:
    q, k = mx.zeros((1, 2, 1, 32)), mx.zeros((1, 1, 8, 32))
    with pytest.raises(ValueError, match="valid_length=9"):
        decode_attention(q, k, k, 1.0, valid_length=9)
    with pytest.raises(ValueError, match="valid_length=0"):
        decode_attention(q, k, k, 1.0, valid_length=0)
    with pytest.raises(TypeError, match="integer array"):
        decode_attention(q, k, k, 1.0, valid_length=mx.array([2.0]))
    with pytest.raises(ValueError, match="scalar or"):
        decode_attention(q, k, k, 1.0, valid_length=mx.array([2, 3]))
    with pytest.raises(TypeError, match="share a dtype"):
        decode_attention(q.astype(mx.float16), k, k, 1.0)
    with pytest.raises(TypeError, match="scale must be"):
        decode_attention(q, k, k, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="q has dtype"):
        decode_attention(q.astype(mx.int32), k, k, 1.0)


def test_append_writes_the_row_and_attends_over_it() -> None:
    q, k, v = make(2, 8, 2, 40, 32, seed=5)
    rng = np.random.default_rng(6)
    k_new, v_new = (rng.standard_normal((2, 2, 1, 32)).astype(np.float32) for _ in range(2))
    pos = 17
    out, k2, v2 = decode_attention_append(
        mx.array(q), mx.array(k), mx.array(v), mx.array(k_new), mx.array(v_new), mx.array(pos), 0.3
    )
    k_ref, v_ref = k.copy(), v.copy()
    k_ref[:, :, pos : pos + 1], v_ref[:, :, pos : pos + 1] = k_new, v_new
    np.testing.assert_array_equal(np.array(k2), k_ref)
    np.testing.assert_array_equal(np.array(v2), v_ref)
    want = reference(q, k_ref, v_ref, 0.3, [pos + 1, pos + 1])
    np.testing.assert_allclose(np.array(out), want, rtol=1e-5, atol=1e-6)


def test_append_rejects_mismatched_rows() -> None:
    q, k, v = (mx.array(a) for a in make(1, 4, 2, 8, 32, seed=1))
    row = mx.zeros((1, 2, 1, 32))
    with pytest.raises(ValueError, match=r"\[B, Hkv, 1, D\]"):
        decode_attention_append(q, k, v, mx.zeros((1, 2, 2, 32)), mx.zeros((1, 2, 2, 32)), 3, 1.0)
    with pytest.raises(ValueError, match="does not match the cache"):
        decode_attention_append(q, k, v, mx.zeros((1, 1, 1, 32)), mx.zeros((1, 1, 1, 32)), 3, 1.0)
    with pytest.raises(TypeError, match="cache dtype"):
        decode_attention_append(q, k, v, row.astype(mx.float16), row.astype(mx.float16), 3, 1.0)


def test_counters_are_validated_then_unused_off_cuda() -> None:
    """Off CUDA ``counters`` changes nothing (same output, still zero); a wrong one is named."""
    q, k, v = (mx.array(a) for a in make(2, 8, 2, 40, 32, seed=7))
    counters = mx.zeros((4,), dtype=mx.int32)
    plain = decode_attention(q, k, v, 0.3, valid_length=33)
    counted = decode_attention(q, k, v, 0.3, valid_length=33, counters=counters)
    np.testing.assert_array_equal(np.array(counted), np.array(plain))
    row = mx.array(make(2, 2, 2, 1, 32, seed=8)[1])
    appended = decode_attention_append(q, k, v, row, row, 5, 0.3, counters=counters)[0]
    np.testing.assert_array_equal(
        np.array(appended), np.array(decode_attention_append(q, k, v, row, row, 5, 0.3)[0])
    )
    assert not np.array(counters).any()
    with pytest.raises(ValueError, match=r"N >= B \* Hkv = 4, got \(3,\)"):
        decode_attention(q, k, v, 0.3, counters=mx.zeros((3,), dtype=mx.int32))
    with pytest.raises(ValueError, match=r"zeroed int32 .*float32"):
        decode_attention_append(q, k, v, row, row, 5, 0.3, counters=mx.zeros((4,)))
    with pytest.raises(TypeError, match=r"counters must be an mx\.array"):
        decode_attention(q, k, v, 0.3, counters=[0, 0, 0, 0])  # type: ignore[arg-type]
