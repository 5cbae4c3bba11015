"""RoPE modules and initialize_rope: float64 formulas, mlx-lm parity, per-row offsets, config handling."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx_core.attn import (
    LongRoPE,
    MRoPE,
    RopeConfigError,
    RotationTable,
    apply_yarn_mscale,
    initialize_rope,
    resolve_rope_parameters,
    rotation_table,
)

RNG = np.random.default_rng(0)
TOL = {"rtol": 2e-5, "atol": 2e-5}  # float32 angles at positions < ~100 against float64


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------- float64 reference, written from the formulas
def np_inv_freq_default(dims: int, base: float) -> np.ndarray:
    return 1.0 / base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)


def np_inv_freq_llama3(
    dims: int, base: float, factor: float, low: float, high: float, orig: int
) -> np.ndarray:
    """transformers' _compute_llama3_parameters."""
    inv = np_inv_freq_default(dims, base)
    low_wl, high_wl = orig / low, orig / high
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > low_wl, inv / factor, inv)
    smooth = (orig / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = (wavelen >= high_wl) & (wavelen <= low_wl)
    return np.where(medium, smoothed, out)


def np_yarn(dims: int, base: float, factor: float, orig: int, beta_fast: float, beta_slow: float):
    """transformers' _compute_yarn_parameters (truncate, default mscale): (inv_freq, attention_factor)."""

    def corr_dim(rot: float) -> float:
        return dims * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(corr_dim(beta_fast)), 0)
    high = min(math.ceil(corr_dim(beta_slow)), dims - 1)
    if low == high:
        high += 0.001
    pos_freqs = base ** (np.arange(0, dims, 2, dtype=np.float64) / dims)
    inv_extra, inv_inter = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    ramp = np.clip((np.arange(dims // 2, dtype=np.float64) - low) / (high - low), 0, 1)
    extra_factor = 1 - ramp
    inv = inv_inter * (1 - extra_factor) + inv_extra * extra_factor
    return inv, 0.1 * math.log(factor) + 1.0


def np_rope(
    x: np.ndarray, dims: int, inv_freq: np.ndarray, offsets, traditional: bool = False, mscale: float = 1.0
) -> np.ndarray:
    """x: [B, H, L, D]; offsets: int or [B]; position scale folded into inv_freq."""
    x = x.astype(np.float64)
    b, _, seq, _ = x.shape
    offs = np.broadcast_to(np.asarray(offsets, dtype=np.float64), (b,))
    pos = offs[:, None] + np.arange(seq)[None]  # [B, L]
    ang = pos[:, None, :, None] * inv_freq[None, None, None, :]  # [B, 1, L, dims/2]
    cos, sin = np.cos(ang), np.sin(ang)
    rot = x[..., :dims] * mscale
    if traditional:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out = np.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).reshape(rot.shape)
    else:
        x1, x2 = rot[..., : dims // 2], rot[..., dims // 2 :]
        out = np.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    return np.concatenate([out, x[..., dims:]], axis=-1)


# ---------------------------------------------------------------- float64 formulas
@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize("offset", [0, 13])
def test_default_and_linear_match_float64(traditional: bool, offset: int) -> None:
    x = rand(2, 3, 9, 40, seed=offset)  # rotate 32 of 40 features
    ref_inv = np_inv_freq_default(32, 500.0)
    got = initialize_rope(32, 500.0, traditional)(mx.array(x), offset=offset)
    np.testing.assert_allclose(np.array(got), np_rope(x, 32, ref_inv, offset, traditional), **TOL)
    lin = initialize_rope(32, 500.0, traditional, {"type": "linear", "factor": 4.0})
    got = lin(mx.array(x), offset=offset)
    np.testing.assert_allclose(np.array(got), np_rope(x, 32, ref_inv / 4.0, offset, traditional), **TOL)


def test_llama3_matches_float64() -> None:
    cfg = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    dims, base = 64, 10000.0
    x = rand(1, 2, 11, dims, seed=3)
    ref = np_rope(x, dims, np_inv_freq_llama3(dims, base, 8.0, 1.0, 4.0, 64), 20)
    got = initialize_rope(dims, base, False, cfg)(mx.array(x), offset=20)
    np.testing.assert_allclose(np.array(got), ref, **TOL)
    # the three regimes all occur at this small original context
    inv = np_inv_freq_llama3(dims, base, 8.0, 1.0, 4.0, 64)
    ratio = inv / np_inv_freq_default(dims, base)
    assert np.any(ratio == 1.0) and np.any(np.isclose(ratio, 1 / 8)) and np.any((ratio < 1) & (ratio > 1 / 8))


@pytest.mark.parametrize("rope_type", ["yarn", "deepseek_yarn"])
def test_yarn_matches_float64(rope_type: str) -> None:
    dims, base, factor, orig = 32, 10000.0, 4.0, 256
    cfg = {"type": rope_type, "factor": factor, "original_max_position_embeddings": orig}
    inv, attn = np_yarn(dims, base, factor, orig, 32.0, 1.0)
    x = rand(2, 2, 7, dims, seed=4)
    rope = initialize_rope(dims, base, False, cfg)
    assert rope.mscale == pytest.approx(attn, rel=1e-12)
    got = rope(mx.array(x), offset=9)
    np.testing.assert_allclose(np.array(got), np_rope(x, dims, inv, 9, mscale=attn), **TOL)
    # inverse undoes the rotation and the mscale
    back = rope(got, offset=9, inverse=True)
    np.testing.assert_allclose(np.array(back), x, rtol=1e-5, atol=1e-5)


def test_yarn_attention_factor_and_truncate() -> None:
    cfg = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "attention_factor": 1.5}
    assert initialize_rope(16, 10000.0, False, cfg).mscale == 1.5
    a = initialize_rope(16, 10000.0, False, {**cfg, "truncate": False})
    b = initialize_rope(16, 10000.0, False, cfg)
    assert not np.allclose(np.array(a._freqs), np.array(b._freqs))


def test_apply_yarn_mscale() -> None:
    cfg = {"type": "yarn", "factor": 40.0, "mscale": 1.0, "mscale_all_dim": 0.707}
    m = 0.1 * 0.707 * math.log(40.0) + 1.0
    assert apply_yarn_mscale(0.125, cfg) == pytest.approx(0.125 * m * m, rel=1e-12)
    assert apply_yarn_mscale(0.125, {"type": "linear", "factor": 2.0}) == 0.125
    assert apply_yarn_mscale(0.125, None) == 0.125
    assert apply_yarn_mscale(0.125, {**cfg, "factor": 1.0}) == 0.125


def test_longrope_short_below_and_long_above_original() -> None:
    dims, base, orig, max_pos = 16, 10000.0, 32, 128
    short = list(np.linspace(1.0, 1.5, dims // 2))
    long = list(np.linspace(1.0, 6.0, dims // 2))
    cfg = {"type": "su", "short_factor": short, "long_factor": long, "original_max_position_embeddings": orig}
    rope = initialize_rope(dims, base, False, cfg, max_position_embeddings=max_pos)
    m = math.sqrt(1 + math.log(max_pos / orig) / math.log(orig))
    x = rand(1, 2, 8, dims, seed=5)
    inv = np_inv_freq_default(dims, base)
    below = rope(mx.array(x), offset=orig - 8)  # last position orig-1: short factors
    np.testing.assert_allclose(
        np.array(below), np_rope(x, dims, inv / np.array(short), orig - 8, mscale=m), **TOL
    )
    above = rope(mx.array(x), offset=orig - 7)  # last position == orig: long factors
    np.testing.assert_allclose(
        np.array(above), np_rope(x, dims, inv / np.array(long), orig - 7, mscale=m), **TOL
    )


def test_longrope_mscale_overrides() -> None:
    cfg = {
        "type": "longrope",
        "short_factor": 1.0,
        "long_factor": 2.0,
        "original_max_position_embeddings": 8,
        "short_mscale": 1.1,
        "long_mscale": 1.3,
    }
    rope = initialize_rope(8, 10000.0, False, cfg, 64)
    assert isinstance(rope, LongRoPE)
    x = mx.array(rand(1, 1, 2, 8, seed=6))
    inv = np_inv_freq_default(8, 10000.0)
    np.testing.assert_allclose(
        np.array(rope(x, offset=0)), np_rope(np.array(x), 8, inv, 0, mscale=1.1), **TOL
    )
    np.testing.assert_allclose(
        np.array(rope(x, offset=10)), np_rope(np.array(x), 8, inv / 2.0, 10, mscale=1.3), **TOL
    )


def test_mrope_sections_match_float64_and_reduce_to_default() -> None:
    dims, sections = 16, [2, 3, 3]
    rope = initialize_rope(dims, 10000.0, False, {"type": "mrope", "mrope_section": sections})
    assert isinstance(rope, MRoPE)
    x = rand(2, 3, 5, dims, seed=7)
    pos = np.random.default_rng(8).integers(0, 40, size=(3, 2, 5))
    got = np.array(rope(mx.array(x), position_ids=mx.array(pos)))
    inv = np_inv_freq_default(dims, 10000.0)
    sec = np.repeat(np.arange(3), sections)
    ref = np.empty_like(got, dtype=np.float64)
    for b in range(2):
        for t in range(5):
            ang = pos[sec, b, t] * inv
            c, s = np.cos(ang), np.sin(ang)
            x1, x2 = x[b, :, t, : dims // 2].astype(np.float64), x[b, :, t, dims // 2 :].astype(np.float64)
            ref[b, :, t] = np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)
    np.testing.assert_allclose(got, ref, **TOL)
    same = np.broadcast_to(np.arange(4, 9)[None, None], (3, 2, 5))
    np.testing.assert_allclose(
        np.array(rope(mx.array(x), position_ids=mx.array(same))), np.array(rope(mx.array(x), offset=4)), **TOL
    )


# ---------------------------------------------------------------- per-row offsets
ALL_CONFIGS = {
    "default": None,
    "linear": {"type": "linear", "factor": 2.0},
    "dynamic": {"type": "dynamic", "factor": 2.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 64},
    "yarn": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    "deepseek_yarn": {
        "type": "deepseek_yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 64,
        "mscale": 0.8,
        "mscale_all_dim": 0.8,
        "beta_fast": 16,
        "beta_slow": 2,
    },
    "longrope": {
        "type": "longrope",
        "short_factor": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7],
        "long_factor": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        "original_max_position_embeddings": 16,
    },
    "proportional": {"type": "proportional", "factor": 2.0, "partial_rotary_factor": 0.5},
    "mrope": {"type": "mrope", "mrope_section": [2, 3, 3]},
}


@pytest.mark.parametrize("name", [n for n in ALL_CONFIGS if n != "dynamic"])
def test_array_offsets_equal_rowwise_int_offsets(name: str) -> None:
    rope = initialize_rope(16, 10000.0, False, ALL_CONFIGS[name], max_position_embeddings=24)
    x = mx.array(rand(3, 2, 4, 16, seed=9))
    offsets = [0, 5, 11]  # last position 15: below longrope's original context for every row
    batched = rope(x, offset=mx.array(offsets))
    for i, off in enumerate(offsets):
        row = rope(x[i : i + 1], offset=off)
        np.testing.assert_allclose(np.array(batched[i : i + 1]), np.array(row), rtol=1e-5, atol=1e-5)


def test_dynamic_array_offset_uses_batch_max_position() -> None:
    rope = initialize_rope(16, 10000.0, False, ALL_CONFIGS["dynamic"], max_position_embeddings=8)
    x = mx.array(rand(2, 1, 4, 16, seed=10))
    batched = rope(x, offset=mx.array([2, 20]))  # last position 23 > 8 → base grows for the whole batch
    # equivalent: standard rope with the grown base, row by row
    seq = 24
    grown = 10000.0 * ((2.0 * seq / 8) - 1.0) ** (16 / 14)
    for i, off in enumerate([2, 20]):
        ref = np_rope(np.array(x[i : i + 1]), 16, np_inv_freq_default(16, grown), off)
        np.testing.assert_allclose(np.array(batched[i : i + 1]), ref, rtol=1e-4, atol=1e-4)


def test_longrope_array_offset_switches_on_batch_max() -> None:
    rope = initialize_rope(16, 10000.0, False, ALL_CONFIGS["longrope"], max_position_embeddings=64)
    x = mx.array(rand(2, 1, 4, 16, seed=11))
    batched = rope(x, offset=mx.array([0, 14]))  # last position 17 > 16 → long factors for the batch
    long_only = initialize_rope(
        16,
        10000.0,
        False,
        {**ALL_CONFIGS["longrope"], "short_factor": ALL_CONFIGS["longrope"]["long_factor"]},
        max_position_embeddings=64,
    )
    for i, off in enumerate([0, 14]):
        ref = long_only(x[i : i + 1], offset=off)
        np.testing.assert_allclose(np.array(batched[i : i + 1]), np.array(ref), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- config handling and errors
def test_transformers5_rope_parameters() -> None:
    x = mx.array(rand(1, 2, 3, 16, seed=12))
    nested = {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}}
    got = initialize_rope(16, 10000.0, False, nested)(x, offset=3)
    ref = np_rope(np.array(x), 16, np_inv_freq_default(16, 500.0) / 2.0, 3)
    np.testing.assert_allclose(np.array(got), ref, **TOL)
    per_layer = {
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
    }
    rope = initialize_rope(16, 1.0, False, per_layer, layer_type="sliding_attention")
    assert rope.base == 1e4
    with pytest.raises(RopeConfigError, match="layer_type"):
        initialize_rope(16, 1.0, False, per_layer)
    assert resolve_rope_parameters({}) is None


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"type": "linear"}, "'factor'"),
        ({"rope_type": "llama3"}, "'factor'"),
        ({"type": "yarn"}, "'factor'"),
        ({"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8}, "original_max_position"),
        (
            {"type": "longrope", "original_max_position_embeddings": 8, "long_factor": [1.0] * 8},
            "short_factor",
        ),
        ({"type": "mrope"}, "mrope_section"),
        ({"type": "mrope", "mrope_section": [1, 2]}, "3 entries"),
        ({"type": "mrope", "mrope_section": [1, 2, 3]}, "sums to 6"),
        ({"type": "nope"}, "'nope'"),
        (
            {
                "type": "longrope",
                "original_max_position_embeddings": 8,
                "short_factor": [1.0],
                "long_factor": 1.0,
            },
            "8",
        ),
    ],
)
def test_config_errors_name_the_problem(cfg: dict, needle: str) -> None:
    with pytest.raises(RopeConfigError, match=needle):
        initialize_rope(16, 10000.0, False, cfg, max_position_embeddings=None)


def test_dynamic_needs_max_position() -> None:
    with pytest.raises(RopeConfigError, match="max_position_embeddings"):
        initialize_rope(16, 10000.0, False, {"type": "dynamic", "factor": 2.0})


# ---------------------------------------------------------------- mlx-lm parity
PARITY = {
    **ALL_CONFIGS,
    "linear_rope_type": {"rope_type": "linear", "factor": 3.0},
    "yarn_defaults": {"type": "yarn", "factor": 2.0},
}


@pytest.mark.parity
@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(sorted(PARITY)), offset=st.integers(0, 60), traditional=st.booleans())
def test_matches_mlx_lm_initialize_rope(name: str, offset: int, traditional: bool) -> None:
    rope_utils = pytest.importorskip("mlx_lm.models.rope_utils")
    cfg = PARITY[name]
    if name.startswith("longrope"):
        traditional = False  # mlx-lm's SuScaledRoPE ignores `traditional`
        offset = max(offset, 16)  # mlx-lm always uses long_factor: compare above the original context
    ours = initialize_rope(16, 10000.0, traditional, cfg, 48)
    theirs = rope_utils.initialize_rope(16, 10000.0, traditional, cfg, 48)
    x = mx.array(rand(2, 3, 5, 24, seed=offset))
    np.testing.assert_allclose(
        np.array(ours(x, offset=offset)), np.array(theirs(x, offset=offset)), rtol=2e-5, atol=2e-5
    )


@pytest.mark.parity
@pytest.mark.parametrize("name", sorted(PARITY))
def test_every_type_matches_mlx_lm(name: str) -> None:
    """Deterministic sweep (hypothesis above samples offsets/layouts on top of it)."""
    rope_utils = pytest.importorskip("mlx_lm.models.rope_utils")
    cfg = PARITY[name]
    dims = 16
    ours = initialize_rope(dims, 5000.0, False, cfg, 24)
    theirs = rope_utils.initialize_rope(dims, 5000.0, False, cfg, 24)
    x = mx.array(rand(2, 2, 6, 24, seed=len(name)))
    for offset in (16, 37):
        np.testing.assert_allclose(
            np.array(ours(x, offset=offset)), np.array(theirs(x, offset=offset)), rtol=2e-5, atol=2e-5
        )
    if name.startswith("yarn") or name == "deepseek_yarn":
        assert ours.mscale == pytest.approx(theirs.mscale, rel=1e-9)
        assert apply_yarn_mscale(0.1, cfg) == pytest.approx(rope_utils.apply_yarn_mscale(0.1, cfg), rel=1e-12)


# ------------------------------------------------------- rotation_table: the rope as fused kernels take it
def rotate_with_table(x: np.ndarray, offset: int, table: RotationTable) -> np.ndarray:
    """float64 RoPE from a RotationTable: angle (offset + l) * inv_freq[j], features scaled first."""
    x = x.astype(np.float64) * table.input_scale
    inv = np.array(table.inv_freq).astype(np.float64)
    pos = offset + np.arange(x.shape[-2], dtype=np.float64)[:, None]
    cos, sin = np.cos(pos * inv), np.sin(pos * inv)
    if table.traditional:
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


@pytest.mark.parametrize("traditional", [False, True])
@pytest.mark.parametrize(
    "config",
    [
        None,
        {"type": "linear", "factor": 4.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "attention_factor": 1.5},
    ],
    ids=["default", "linear", "llama3", "yarn"],
)
def test_rotation_table_reproduces_the_module(config: dict | None, traditional: bool) -> None:
    rope = initialize_rope(32, 10000.0, traditional, config, max_position_embeddings=256)
    table = rotation_table(rope, 32)
    assert table is not None and table.traditional == traditional
    assert table.inv_freq.dtype == mx.float32 and table.inv_freq.shape == (16,)
    x = rand(1, 2, 3, 32, seed=5)
    got = np.array(rope(mx.array(x), offset=37))
    np.testing.assert_allclose(got, rotate_with_table(x, 37, table), rtol=1e-4, atol=1e-4)
    assert table.input_scale == (1.5 if config and config.get("type") == "yarn" else 1.0)


def test_rotation_table_declines_ropes_it_cannot_express() -> None:
    assert rotation_table(initialize_rope(32, 10000.0, False, None), 64) is None  # partial rotation
    dynamic = initialize_rope(
        32, 10000.0, False, {"type": "dynamic", "factor": 2.0}, max_position_embeddings=64
    )
    assert rotation_table(dynamic, 32) is None  # angles depend on the sequence length
    orig = 64
    su = {
        "type": "longrope",
        "short_factor": [1.0] * 16,
        "long_factor": [2.0] * 16,
        "original_max_position_embeddings": orig,
    }
    assert rotation_table(initialize_rope(32, 10000.0, False, su, max_position_embeddings=256), 32) is None
    assert rotation_table(MRoPE(32, mrope_section=[4, 6, 6]), 32) is None
    assert rotation_table(object(), 32) is None
