"""decode_attention_qkv on the CPU (MLX-ops path) against a float64 numpy reference; argument checks."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.kernels import MatvecWeights, OutputProjection, decode_attention_append, decode_attention_qkv

D = 16
S = 12  # cache capacity
EPS = 1e-5
GARBAGE = 50.0  # magnitude of the junk in cache rows past `position`: visible if it were attended


def f64(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32)).astype(np.float64)


def rms_norm64(a: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return a / np.sqrt(np.mean(a * a, axis=-1, keepdims=True) + eps) * w


def rope64(a: np.ndarray, position: int, inv_freq: np.ndarray, traditional: bool) -> np.ndarray:
    """Rotate the last axis of ``a`` by angle ``position * inv_freq[j]`` for pair j."""
    theta = position * inv_freq
    cos, sin = np.cos(theta), np.sin(theta)
    out = np.empty_like(a)
    half = a.shape[-1] // 2
    if traditional:  # pairs (2j, 2j + 1)
        x1, x2 = a[..., 0::2], a[..., 1::2]
        out[..., 0::2] = x1 * cos - x2 * sin
        out[..., 1::2] = x1 * sin + x2 * cos
    else:  # pairs (j, j + D / 2)
        x1, x2 = a[..., :half], a[..., half:]
        out[..., :half] = x1 * cos - x2 * sin
        out[..., half:] = x1 * sin + x2 * cos
    return out


def reference(
    qkv: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    position: int,
    scale: float,
    *,
    n_heads: int,
    q_norm: np.ndarray | None,
    k_norm: np.ndarray | None,
    eps: float,
    inv_freq: np.ndarray | None,
    traditional: bool,
    input_scale: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float64 naive: prepare q/k per head, write row ``position``, attend over rows [0, position]."""
    b, hkv, _, d = k_cache.shape
    q = qkv[:, 0, : n_heads * d].reshape(b, n_heads, d)
    k = qkv[:, 0, n_heads * d : (n_heads + hkv) * d].reshape(b, hkv, d)
    v = qkv[:, 0, (n_heads + hkv) * d :].reshape(b, hkv, d)
    if q_norm is not None and k_norm is not None:
        q, k = rms_norm64(q, q_norm, eps), rms_norm64(k, k_norm, eps)
    if inv_freq is not None:
        q, k = q * input_scale, k * input_scale
        q, k = rope64(q, position, inv_freq, traditional), rope64(k, position, inv_freq, traditional)
    k_out, v_out = k_cache.copy(), v_cache.copy()
    k_out[:, :, position] = k
    v_out[:, :, position] = v
    group = n_heads // hkv
    out = np.zeros((b, 1, n_heads * d))
    for bi in range(b):
        for h in range(n_heads):
            keys = k_out[bi, h // group, : position + 1]
            vals = v_out[bi, h // group, : position + 1]
            s = scale * (keys @ q[bi, h])
            p = np.exp(s - s.max())
            out[bi, 0, h * d : (h + 1) * d] = p @ vals / p.sum()
    return out, k_out, v_out


def make_case(
    b: int, hq: int, hkv: int, position: int, seed: int
) -> tuple[mx.array, mx.array, mx.array, mx.array, mx.array, mx.array]:
    """qkv, caches (normal rows up to `position`, large junk after it), norm weights, RoPE table."""
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((b, 1, (hq + 2 * hkv) * D)).astype(np.float32)
    k_cache = rng.standard_normal((b, hkv, S, D)).astype(np.float32)
    v_cache = rng.standard_normal((b, hkv, S, D)).astype(np.float32)
    for c in (k_cache, v_cache):
        c[:, :, position + 1 :] = GARBAGE * rng.uniform(-1.0, 1.0, c[:, :, position + 1 :].shape)
    q_norm = rng.uniform(0.5, 1.5, D).astype(np.float32)
    k_norm = rng.uniform(0.5, 1.5, D).astype(np.float32)
    inv_freq = (1.0 / (10000.0 ** (np.arange(0, D, 2) / D))).astype(np.float32) * 0.7
    return tuple(mx.array(a) for a in (qkv, k_cache, v_cache, q_norm, k_norm, inv_freq))  # type: ignore[return-value]


ROPES = {"halves": (True, False), "interleaved": (True, True), "none": (False, False)}


@pytest.mark.parametrize("input_scale", [1.0, 1.3])
@pytest.mark.parametrize("rope", list(ROPES))
@pytest.mark.parametrize("qk_norm", [True, False], ids=["norm", "no_norm"])
@pytest.mark.parametrize(
    ("b", "hq", "hkv", "position"),
    [(1, 4, 2, 0), (2, 4, 2, 7), (2, 2, 2, 5), (1, 2, 2, S - 1)],
    ids=["gqa2-b1-pos0", "gqa2-b2-pos7", "mha-b2-pos5", "mha-b1-last-row"],
)
def test_matches_float64_reference(
    b: int, hq: int, hkv: int, position: int, qk_norm: bool, rope: str, input_scale: float
) -> None:
    # rope "none" with input_scale 1.3: the scale multiplies q and k only as part of RoPE (as the CUDA
    # kernel does), so the reference ignores it there and this case checks that it is ignored.
    seed = 17 * position + 3 * hq + b
    qkv, k_cache, v_cache, q_norm, k_norm, inv_freq = make_case(b, hq, hkv, position, seed)
    use_rope, traditional = ROPES[rope]
    kw: dict[str, Any] = {"n_heads": hq, "eps": EPS, "rope_input_scale": input_scale}
    if qk_norm:
        kw.update(q_norm=q_norm, k_norm=k_norm)
    if use_rope:
        kw.update(rope_inv_freq=inv_freq, rope_traditional=traditional)
    scale = D**-0.5
    k_before, v_before = np.array(k_cache), np.array(v_cache)
    out, k_new, v_new, next_pos = decode_attention_qkv(qkv, k_cache, v_cache, position, scale, **kw)
    want, k_want, v_want = reference(
        f64(qkv),
        f64(k_cache),
        f64(v_cache),
        position,
        scale,
        n_heads=hq,
        q_norm=f64(q_norm) if qk_norm else None,
        k_norm=f64(k_norm) if qk_norm else None,
        eps=EPS,
        inv_freq=f64(inv_freq) if use_rope else None,
        traditional=traditional,
        input_scale=input_scale,
    )
    assert out.shape == (b, 1, hq * D) and out.dtype == mx.float32
    np.testing.assert_allclose(f64(out), want, rtol=1e-5, atol=1e-5)
    assert k_new.shape == k_cache.shape and v_new.shape == v_cache.shape
    got_k, got_v = np.array(k_new), np.array(v_new)
    # Row `position` holds the prepared key and the raw value ...
    np.testing.assert_allclose(got_k[:, :, position], k_want[:, :, position], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_v[:, :, position], v_want[:, :, position].astype(np.float32))
    # ... and every other row (the junk past `position` included) is bit-for-bit unchanged.
    others = np.arange(S) != position
    np.testing.assert_array_equal(got_k[:, :, others], k_before[:, :, others])
    np.testing.assert_array_equal(got_v[:, :, others], v_before[:, :, others])
    # The inputs themselves are not modified on the CPU path.
    np.testing.assert_array_equal(np.array(k_cache), k_before)
    assert next_pos.dtype == mx.int32 and next_pos.item() == position + 1


def test_rows_past_position_are_ignored() -> None:
    """Changing only the junk rows past `position` must not change the output (negative control:
    the reference that attends over every row differs)."""
    qkv, k_cache, v_cache, q_norm, k_norm, inv_freq = make_case(2, 4, 2, 4, seed=5)
    kw: dict[str, Any] = {"n_heads": 4, "q_norm": q_norm, "k_norm": k_norm, "rope_inv_freq": inv_freq}
    out_a = decode_attention_qkv(qkv, k_cache, v_cache, 4, 0.25, **kw)[0]
    k_other = mx.concatenate([k_cache[:, :, :5], -k_cache[:, :, 5:]], axis=2)
    v_other = mx.concatenate([v_cache[:, :, :5], 2 * v_cache[:, :, 5:]], axis=2)
    out_b = decode_attention_qkv(qkv, k_other, v_other, 4, 0.25, **kw)[0]
    np.testing.assert_array_equal(np.array(out_a), np.array(out_b))
    everything, _, _ = reference(
        f64(qkv),
        f64(k_cache),
        f64(v_cache),
        S - 1,
        0.25,
        n_heads=4,
        q_norm=f64(q_norm),
        k_norm=f64(k_norm),
        eps=1e-6,
        inv_freq=f64(inv_freq),
        traditional=False,
        input_scale=1.0,
    )
    assert np.abs(everything - f64(out_a)).max() > 0.1


@pytest.mark.parametrize(
    "position",
    [6, mx.array(6, dtype=mx.int32), mx.array([6], dtype=mx.int32)],
    ids=["int", "int32-scalar", "int32-[1]"],
)
def test_position_int_or_int32_array(position: int | mx.array) -> None:
    qkv, k_cache, v_cache, q_norm, k_norm, inv_freq = make_case(2, 4, 2, 6, seed=9)
    kw: dict[str, Any] = {"n_heads": 4, "q_norm": q_norm, "k_norm": k_norm, "rope_inv_freq": inv_freq}
    out, k_new, v_new, next_pos = decode_attention_qkv(qkv, k_cache, v_cache, position, 0.3, **kw)
    base, k_base, v_base, _ = decode_attention_qkv(qkv, k_cache, v_cache, 6, 0.3, **kw)
    np.testing.assert_array_equal(np.array(out), np.array(base))
    np.testing.assert_array_equal(np.array(k_new), np.array(k_base))
    np.testing.assert_array_equal(np.array(v_new), np.array(v_base))
    assert next_pos.dtype == mx.int32
    assert next_pos.shape == (() if isinstance(position, int) else position.shape)
    assert next_pos.reshape(-1).tolist() == [7]


def test_decode_loop_fills_the_cache_step_by_step() -> None:
    """Three chained steps (next_position fed back) equal three independent float64 steps."""
    rng = np.random.default_rng(21)
    hq, hkv = 4, 2
    k_cache = mx.array(rng.standard_normal((1, hkv, S, D)).astype(np.float32))
    v_cache = mx.array(rng.standard_normal((1, hkv, S, D)).astype(np.float32))
    inv_freq = mx.array((1.0 / (10000.0 ** (np.arange(0, D, 2) / D))).astype(np.float32))
    k_ref, v_ref = f64(k_cache), f64(v_cache)
    pos: int | mx.array = 2
    for step in range(3):
        qkv = mx.array(rng.standard_normal((1, 1, (hq + 2 * hkv) * D)).astype(np.float32))
        out, k_cache, v_cache, pos_next = decode_attention_qkv(
            qkv, k_cache, v_cache, pos, 0.2, n_heads=hq, rope_inv_freq=inv_freq
        )
        want, k_ref, v_ref = reference(
            f64(qkv),
            k_ref,
            v_ref,
            2 + step,
            0.2,
            n_heads=hq,
            q_norm=None,
            k_norm=None,
            eps=1e-6,
            inv_freq=f64(inv_freq),
            traditional=False,
            input_scale=1.0,
        )
        np.testing.assert_allclose(f64(out), want, rtol=1e-5, atol=1e-5)
        pos = pos_next
    np.testing.assert_allclose(f64(k_cache), k_ref, rtol=1e-5, atol=1e-5)
    assert int(pos.item()) == 5  # type: ignore[union-attr]


def test_fallback_backend_equals_default_on_cpu() -> None:
    qkv, k_cache, v_cache, q_norm, k_norm, inv_freq = make_case(2, 4, 2, 3, seed=2)
    kw: dict[str, Any] = {
        "n_heads": 4,
        "q_norm": q_norm,
        "k_norm": k_norm,
        "rope_inv_freq": inv_freq,
        "rope_traditional": True,
        "rope_input_scale": 0.9,
    }
    default = decode_attention_qkv(qkv, k_cache, v_cache, 3, 0.25, **kw)
    fallback = decode_attention_qkv(qkv, k_cache, v_cache, 3, 0.25, backend="fallback", **kw)
    for a, b in zip(default, fallback, strict=True):
        np.testing.assert_array_equal(np.array(a), np.array(b))


def test_bfloat16_within_1e_2() -> None:
    qkv, k_cache, v_cache, q_norm, k_norm, inv_freq = make_case(1, 4, 2, 5, seed=4)
    bf = [a.astype(mx.bfloat16) for a in (qkv, k_cache, v_cache, q_norm, k_norm)]
    out, k_new, _, _ = decode_attention_qkv(
        bf[0], bf[1], bf[2], 5, 0.25, n_heads=4, q_norm=bf[3], k_norm=bf[4], rope_inv_freq=inv_freq
    )
    assert out.dtype == mx.bfloat16 and k_new.dtype == mx.bfloat16
    want, k_want, _ = reference(
        *(f64(a) for a in bf[:3]),
        5,
        0.25,
        n_heads=4,
        q_norm=f64(bf[3]),
        k_norm=f64(bf[4]),
        eps=1e-6,
        inv_freq=f64(inv_freq),
        traditional=False,
        input_scale=1.0,
    )
    np.testing.assert_allclose(f64(out), want, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(f64(k_new)[:, :, 5], k_want[:, :, 5], rtol=1e-2, atol=1e-2)


# --------------------------------------------------------------------------- argument checks


def _good() -> dict[str, Any]:
    qkv, k_cache, v_cache, q_norm, k_norm, inv_freq = make_case(1, 4, 2, 3, seed=1)
    return {
        "qkv": qkv,
        "k_cache": k_cache,
        "v_cache": v_cache,
        "position": 3,
        "scale": 0.25,
        "n_heads": 4,
        "q_norm": q_norm,
        "k_norm": k_norm,
        "rope_inv_freq": inv_freq,
    }


def test_good_arguments_run() -> None:
    out = decode_attention_qkv(**_good())[0]
    assert out.shape == (1, 1, 4 * D)


def test_counters_do_not_change_the_result_off_cuda() -> None:
    """Off CUDA ``counters`` is validated, then unused: same output, and it stays zero."""
    counters = mx.zeros((4,), dtype=mx.int32)
    plain = decode_attention_qkv(**_good())[0]
    with_counters = decode_attention_qkv(**_good(), counters=counters)[0]
    np.testing.assert_array_equal(np.array(with_counters), np.array(plain))
    assert not np.array(counters).any()


@pytest.mark.parametrize("quantized", [False, True], ids=["dense", "q4"])
def test_output_projection_is_residual_plus_o_proj(quantized: bool) -> None:
    """``output_projection`` returns ``residual + W_o @ attention`` (float64 reference) in place of the
    attention, with the caches and the next position unchanged."""
    rng = np.random.default_rng(7)
    args = _good()
    hidden, width = 24, 4 * D
    weight = mx.array(rng.standard_normal((hidden, width)).astype(np.float32) * width**-0.5)
    residual = mx.array(rng.standard_normal((1, 1, hidden)).astype(np.float32))
    if quantized:
        packed, scales, biases = mx.quantize(weight, group_size=32, bits=4)
        proj = OutputProjection(MatvecWeights(packed, scales, biases, bits=4, group_size=32), residual)
        weight = mx.dequantize(packed, scales, biases, group_size=32, bits=4)
    else:
        proj = OutputProjection(MatvecWeights(weight), residual)
    plain = decode_attention_qkv(**_good())
    projected = decode_attention_qkv(**args, output_projection=proj)
    want = f64(residual) + f64(plain[0]) @ f64(weight).T
    assert projected[0].shape == (1, 1, hidden)
    np.testing.assert_allclose(f64(projected[0]), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.array(projected[1]), np.array(plain[1]))
    assert projected[3].item() == plain[3].item() == 4


def _projection(residual: mx.array | None = None, **change: Any) -> OutputProjection:
    weights = MatvecWeights(**{"weight": mx.zeros((24, 4 * D)), **change})
    return OutputProjection(weights, mx.zeros((1, 1, 24)) if residual is None else residual)


@pytest.mark.parametrize(
    ("proj", "error", "match"),
    [
        ((mx.zeros((24, 4 * D)), mx.zeros((1, 1, 24))), TypeError, "must be an OutputProjection, got tuple"),
        (
            OutputProjection(mx.zeros((24, 4 * D)), mx.zeros((1, 1, 24))),  # type: ignore[arg-type]
            TypeError,
            "weights must be MatvecWeights, got array",
        ),
        (
            _projection(weight=mx.zeros((24, 4 * D + 1))),
            ValueError,
            r"does not take the 64 features of the attention output",
        ),
        (
            _projection(weight=mx.zeros((24, 4 * D), dtype=mx.float16)),
            TypeError,
            "weight dtype .*float16 differs",
        ),
        (_projection(residual=mx.zeros((1, 1, 23))), ValueError, r"residual must be \(1, 1, 24\)"),
        (_projection(residual=mx.zeros((1, 24))), ValueError, r"residual must be \(1, 1, 24\)"),
        (_projection(bits=4), ValueError, "biases/bits given without scales"),
        (_projection(scales=mx.zeros((24, 2))), TypeError, "biases must be an mx.array, got NoneType"),
    ],
)
def test_output_projection_errors(proj: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        decode_attention_qkv(**_good(), output_projection=proj)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"qkv": mx.zeros((1, 1, 8 * D - 1))}, ValueError, r"qkv must be \[B, 1, \(n_heads \+ 2 \* Hkv\)"),
        ({"qkv": mx.zeros((1, 2, 8 * D))}, ValueError, r"qkv must be .*\(1, 1, 128\)"),
        ({"qkv": mx.zeros((2, 1, 8 * D))}, ValueError, r"qkv must be .*\(1, 1, 128\)"),
        ({"n_heads": 3}, ValueError, "n_heads must be a positive multiple of the cache's 2 kv heads"),
        ({"n_heads": 0}, ValueError, "n_heads must be a positive multiple"),
        ({"n_heads": True}, ValueError, "n_heads must be a positive multiple"),
        ({"k_norm": None}, ValueError, "pass both q_norm and k_norm, or neither"),
        ({"q_norm": None}, ValueError, "pass both q_norm and k_norm, or neither"),
        ({"q_norm": mx.ones((D + 1,))}, ValueError, r"q_norm must be \[16\] in .*float32"),
        ({"k_norm": mx.ones((1, D))}, ValueError, r"k_norm must be \[16\] in .*float32"),
        ({"k_norm": mx.ones((D,), dtype=mx.float16)}, ValueError, r"k_norm must be \[16\] in .*float32"),
        ({"k_norm": np.ones(D, np.float32)}, TypeError, "k_norm must be an mx.array"),
        ({"rope_inv_freq": mx.ones((D,))}, ValueError, r"rope_inv_freq must be float32 \[8\]"),
        ({"rope_inv_freq": mx.ones((D // 2,), dtype=mx.float16)}, ValueError, r"float32 \[8\].*float16"),
        ({"v_cache": mx.zeros((1, 2, S + 1, D))}, ValueError, "k_cache and v_cache must both be"),
        ({"k_cache": mx.zeros((1, 2, S, D)), "v_cache": mx.zeros((1, 2, S, D))[0]}, ValueError, "must both"),
        ({"position": mx.array([3, 4], dtype=mx.int32)}, ValueError, r"one-element int array.*\(2,\)"),
        ({"eps": -1e-6}, ValueError, "eps must be finite and >= 0"),
        ({"eps": float("nan")}, ValueError, "eps must be finite and >= 0"),
        ({"eps": True}, TypeError, "eps must be a Python float"),
        ({"scale": "0.25"}, TypeError, "scale must be a Python float"),
        ({"qkv": np.zeros((1, 1, 8 * D), np.float32)}, TypeError, "qkv must be an mx.array"),
        ({"qkv": mx.zeros((1, 1, 8 * D), dtype=mx.int32)}, TypeError, "qkv has dtype"),
        ({"counters": mx.zeros((4,), dtype=mx.float32)}, ValueError, r"must be a zeroed int32 .*float32"),
        ({"counters": mx.zeros((1,), dtype=mx.int32)}, ValueError, r"N >= B \* Hkv = 2, got \(1,\)"),
        ({"counters": mx.zeros((2, 2), dtype=mx.int32)}, ValueError, r"counters must be .*\(2, 2\)"),
        ({"counters": [0, 0]}, TypeError, "counters must be an mx.array"),
    ],
)
def test_argument_errors(change: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        decode_attention_qkv(**{**_good(), **change})


def test_dtype_mismatch_between_qkv_and_caches() -> None:
    args = _good()
    with pytest.raises(TypeError, match="qkv and the caches must share a dtype"):
        decode_attention_qkv(**{**args, "qkv": args["qkv"].astype(mx.bfloat16)})
    with pytest.raises(TypeError, match="qkv and the caches must share a dtype"):
        decode_attention_qkv(**{**args, "v_cache": args["v_cache"].astype(mx.float16)})


@pytest.mark.parametrize("position", [S, S + 5, -1])
def test_int_position_outside_the_cache_rejected(position: int) -> None:
    with pytest.raises(ValueError, match="position"):
        decode_attention_qkv(**{**_good(), "position": position})


@pytest.mark.parametrize("position", [1.5, True, mx.array(1.0)])
def test_position_type_rejected(position: object) -> None:
    with pytest.raises(TypeError, match="position"):
        decode_attention_qkv(**{**_good(), "position": position})


@pytest.mark.parametrize("position", [S, -1])
def test_append_position_outside_the_cache_rejected(position: int) -> None:
    q = mx.zeros((1, 2, 1, 8))
    cache = mx.zeros((1, 1, S, 8))
    row = mx.ones((1, 1, 1, 8))
    with pytest.raises(ValueError, match="outside the cache"):
        decode_attention_append(q, cache, cache, row, row, position, 0.3)
