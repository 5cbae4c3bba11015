"""Rotary position embedding modules, one per scaling scheme.

Every module is called as ``rope(x, offset=0)`` with ``x`` of shape ``[B, H, L, D]`` (or any ``[B, *, L, D]``)
and rotates the first ``dims`` features; ``offset`` is an int or an ``mx.array`` of shape ``[B]`` giving each
row's first position (batched decoding with ragged prompts). Frequencies are computed once, in float64
Python arithmetic, then stored as float32 in ``_freqs`` (underscore: not a model parameter) and applied with
``mx.fast.rope``. ``freqs`` follow MLX's convention: the rotation angle at position ``p`` is ``p / freqs[i]``.

Each module carries ``mscale``: the factor by which the rotated features are multiplied (1.0 except for
yarn and longrope), so a model can see what part of the attention-scale correction the rope already applied.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_core.attn.errors import RopeConfigError

Offset = int | mx.array

__all__ = [
    "DynamicNTKRoPE",
    "FreqsRoPE",
    "Llama3RoPE",
    "LongRoPE",
    "MRoPE",
    "Offset",
    "ProportionalRoPE",
    "RoPE",
    "RotationTable",
    "YarnRoPE",
    "rope_wavelengths",
    "rotation_table",
    "yarn_get_mscale",
]


def rope_wavelengths(dims: int, base: float) -> list[float]:
    """``base ** (2i / dims)`` for ``i < dims // 2`` in float64: the unscaled ``freqs`` of standard RoPE."""
    return [base ** (i / dims) for i in range(0, dims, 2)]


def yarn_get_mscale(scale: float = 1.0, mscale: float = 1.0) -> float:
    """YaRN's attention temperature ``0.1 * mscale * ln(scale) + 1`` (1.0 when ``scale <= 1``)."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def _scale_rotated(x: mx.array, dims: int, scale: float | mx.array) -> mx.array:
    """Multiply the first ``dims`` features by ``scale`` (the rope's mscale), leave the rest unchanged."""
    if dims == x.shape[-1]:
        return x * scale
    return x.at[..., :dims].multiply(scale)


def _max_position(offset: Offset, length: int) -> int | mx.array:
    """Last position + 1 across the batch: a Python int for int offsets, a scalar array otherwise."""
    if isinstance(offset, mx.array):
        return mx.max(offset) + length
    return offset + length


class RoPE(nn.Module):
    """Standard RoPE (``default``) and position interpolation (``linear``: ``scale = 1 / factor``)."""

    def __init__(self, dims: int, base: float = 10000.0, traditional: bool = False, scale: float = 1.0):
        super().__init__()
        self.dims = dims
        self.base = float(base)
        self.traditional = traditional
        self.scale = float(scale)
        self.mscale = 1.0

    def _extra_repr(self) -> str:
        return f"{self.dims}, base={self.base}, traditional={self.traditional}, scale={self.scale}"

    def __call__(self, x: mx.array, offset: Offset = 0) -> mx.array:
        return mx.fast.rope(
            x, self.dims, traditional=self.traditional, base=self.base, scale=self.scale, offset=offset
        )


class FreqsRoPE(nn.Module):
    """RoPE with precomputed per-pair ``freqs`` (length ``dims // 2``) and an optional input ``mscale``."""

    def __init__(self, dims: int, freqs: Sequence[float], traditional: bool = False, mscale: float = 1.0):
        super().__init__()
        if len(freqs) != dims // 2:
            raise RopeConfigError(f"RoPE over {dims} dims needs {dims // 2} frequencies, got {len(freqs)}.")
        self.dims = dims
        self.traditional = traditional
        self.mscale = float(mscale)
        self._freqs = mx.array(list(freqs), dtype=mx.float32)
        # The float32 reciprocal mx.fast.rope takes of ``freqs`` (infinite wavelengths give 0), computed once
        # here rather than by every decode step that asks for `rotation_table` (one kernel per layer).
        self._rotation_inv_freqs = 1.0 / self._freqs
        mx.eval(self._rotation_inv_freqs)

    def _extra_repr(self) -> str:
        return f"{self.dims}, traditional={self.traditional}, mscale={self.mscale}"

    def __call__(self, x: mx.array, offset: Offset = 0) -> mx.array:
        if self.mscale != 1.0:
            x = _scale_rotated(x, self.dims, self.mscale)
        return mx.fast.rope(
            x,
            self.dims,
            traditional=self.traditional,
            base=None,
            scale=1.0,
            offset=offset,
            freqs=self._freqs,
        )


class Llama3RoPE(FreqsRoPE):
    """Llama 3.1 frequency-dependent scaling: long wavelengths / ``factor``, short kept, smooth in between."""

    def __init__(
        self,
        dims: int,
        base: float = 10000.0,
        traditional: bool = False,
        factor: float = 8.0,
        low_freq_factor: float = 1.0,
        high_freq_factor: float = 4.0,
        original_max_position_embeddings: int = 8192,
    ):
        if high_freq_factor == low_freq_factor:
            raise RopeConfigError(
                "llama3 rope needs 'high_freq_factor' != 'low_freq_factor' "
                f"(both are {low_freq_factor}); check the rope scaling config."
            )
        low_freq_wavelen = original_max_position_embeddings / low_freq_factor
        high_freq_wavelen = original_max_position_embeddings / high_freq_factor
        freqs = []
        for f in rope_wavelengths(dims, base):
            wavelen = 2 * math.pi * f
            if wavelen > low_freq_wavelen:
                freqs.append(f * factor)
            elif wavelen > high_freq_wavelen and wavelen < low_freq_wavelen:
                smooth = (original_max_position_embeddings / wavelen - low_freq_factor) / (
                    high_freq_factor - low_freq_factor
                )
                freqs.append(f / ((1 - smooth) / factor + smooth))
            else:
                freqs.append(f)
        super().__init__(dims, freqs, traditional=traditional)


class YarnRoPE(FreqsRoPE):
    """YaRN (NTK-by-parts) scaling with its attention temperature applied to the rotated features.

    ``mscale`` here is ``get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)`` (or the config's
    ``attention_factor``); DeepSeek-style models fold the remaining
    ``get_mscale(factor, mscale_all_dim) ** 2`` into the softmax scale with
    :func:`mlx_core.attn.apply_yarn_mscale`.
    """

    def __init__(
        self,
        dims: int,
        base: float = 10000.0,
        traditional: bool = False,
        factor: float = 1.0,
        original_max_position_embeddings: int = 4096,
        beta_fast: float = 32.0,
        beta_slow: float = 1.0,
        mscale: float = 1.0,
        mscale_all_dim: float = 0.0,
        attention_factor: float | None = None,
        truncate: bool = True,
    ):
        def correction_dim(num_rotations: float) -> float:
            return (dims * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (
                2 * math.log(base)
            )

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dims - 1)
        if low == high:
            high += 0.001  # avoid a zero-width ramp
        freqs = []
        for i, extra in enumerate(rope_wavelengths(dims, base)):
            inter = factor * extra
            keep = 1.0 - min(max((i - low) / (high - low), 0.0), 1.0)  # 1: extrapolate, 0: interpolate
            freqs.append(inter * extra / (inter * keep + extra * (1 - keep)))
        if attention_factor is None:
            attention_factor = yarn_get_mscale(factor, mscale) / yarn_get_mscale(factor, mscale_all_dim)
        super().__init__(dims, freqs, traditional=traditional, mscale=attention_factor)

    def __call__(self, x: mx.array, offset: Offset = 0, inverse: bool = False) -> mx.array:
        """Rotate ``x``; ``inverse=True`` undoes a previous rotation (and its mscale)."""
        if not inverse:
            return super().__call__(x, offset)
        if self.mscale != 1.0:
            x = _scale_rotated(x, self.dims, 1.0 / self.mscale)
        freqs = -self._freqs
        return mx.fast.rope(
            x, self.dims, traditional=self.traditional, base=None, scale=1.0, offset=offset, freqs=freqs
        )


class ProportionalRoPE(FreqsRoPE):
    """Rotate only ``rotated_dims`` of ``dims`` with exponents over the full ``dims`` (Gemma-3n style).

    The remaining pairs get infinite wavelength, i.e. they pass through unchanged.
    """

    def __init__(
        self,
        dims: int,
        rotated_dims: int,
        base: float = 10000.0,
        traditional: bool = False,
        factor: float = 1.0,
    ):
        if not 0 <= rotated_dims <= dims:
            raise RopeConfigError(
                f"proportional rope: rotated dims ({rotated_dims}) must be within 0..{dims}; "
                "check 'partial_rotary_factor' (expected 0 < factor <= 1)."
            )
        freqs = [factor * base ** (i / dims) for i in range(0, rotated_dims, 2)]
        freqs += [math.inf] * ((dims - rotated_dims) // 2)
        super().__init__(dims, freqs, traditional=traditional)


class DynamicNTKRoPE(nn.Module):
    """Dynamic NTK scaling: the base grows once ``offset + L`` exceeds ``max_position_embeddings``."""

    def __init__(
        self,
        dims: int,
        max_position_embeddings: int,
        base: float = 10000.0,
        traditional: bool = False,
        factor: float = 1.0,
    ):
        super().__init__()
        if dims <= 2:
            raise RopeConfigError(f"dynamic rope needs dims > 2, got {dims}.")
        self.dims = dims
        self.max_position_embeddings = int(max_position_embeddings)
        self.base = float(base)
        self.traditional = traditional
        self.factor = float(factor)
        self.mscale = 1.0
        self._exponents = mx.array([i / dims for i in range(0, dims, 2)], dtype=mx.float32)

    def _extra_repr(self) -> str:
        return (
            f"{self.dims}, traditional={self.traditional}, "
            f"max_position_embeddings={self.max_position_embeddings}, factor={self.factor}"
        )

    def __call__(self, x: mx.array, offset: Offset = 0) -> mx.array:
        seq_len = _max_position(offset, x.shape[-2])
        power = self.dims / (self.dims - 2)
        if isinstance(seq_len, int):
            seq_len = max(seq_len, self.max_position_embeddings)
            ratio = self.factor * seq_len / self.max_position_embeddings - (self.factor - 1)
            base = self.base * ratio**power
            return mx.fast.rope(
                x, self.dims, traditional=self.traditional, base=base, scale=1.0, offset=offset
            )
        grown = mx.maximum(seq_len, self.max_position_embeddings).astype(mx.float32)
        grown_ratio = self.factor * grown / self.max_position_embeddings - (self.factor - 1)
        freqs = (self.base * grown_ratio**power) ** self._exponents
        return mx.fast.rope(
            x, self.dims, traditional=self.traditional, base=None, scale=1.0, offset=offset, freqs=freqs
        )


class LongRoPE(nn.Module):
    """LongRoPE / Phi-3 "su" scaling: ``short_factor`` up to the original context, ``long_factor`` beyond.

    The choice is made per call from the largest position in the batch (``offset + L``), as transformers
    does; mlx-lm always uses ``long_factor``. Features are scaled by ``short_mscale`` / ``long_mscale``
    (default ``sqrt(1 + ln(factor) / ln(original))`` with ``factor = max / original``).
    """

    def __init__(
        self,
        dims: int,
        short_factor: Sequence[float] | float,
        long_factor: Sequence[float] | float,
        original_max_position_embeddings: int,
        base: float = 10000.0,
        traditional: bool = False,
        factor: float = 1.0,
        short_mscale: float | None = None,
        long_mscale: float | None = None,
    ):
        super().__init__()
        self.dims = dims
        self.traditional = traditional
        self.original_max_position_embeddings = int(original_max_position_embeddings)
        wavelengths = rope_wavelengths(dims, base)

        def scaled(name: str, values: Sequence[float] | float) -> mx.array:
            vals = [float(values)] * len(wavelengths) if isinstance(values, (int, float)) else list(values)
            if len(vals) != len(wavelengths):
                raise RopeConfigError(
                    f"longrope '{name}' has {len(vals)} entries; rope over {dims} dims needs {dims // 2}."
                )
            return mx.array([v * w for v, w in zip(vals, wavelengths, strict=True)], dtype=mx.float32)

        self._short_freqs = scaled("short_factor", short_factor)
        self._long_freqs = scaled("long_factor", long_factor)
        if factor > 1.0:
            default = math.sqrt(1 + math.log(factor) / math.log(self.original_max_position_embeddings))
        else:
            default = 1.0
        self.short_mscale = float(short_mscale) if short_mscale else default
        self.long_mscale = float(long_mscale) if long_mscale else default
        self.mscale = self.long_mscale

    def _extra_repr(self) -> str:
        return (
            f"{self.dims}, traditional={self.traditional}, "
            f"original_max_position_embeddings={self.original_max_position_embeddings}"
        )

    def __call__(self, x: mx.array, offset: Offset = 0) -> mx.array:
        end = _max_position(offset, x.shape[-2])
        if isinstance(end, int):
            long = end > self.original_max_position_embeddings
            freqs = self._long_freqs if long else self._short_freqs
            mscale: float | mx.array = self.long_mscale if long else self.short_mscale
        else:
            use_long = end > self.original_max_position_embeddings
            freqs = mx.where(use_long, self._long_freqs, self._short_freqs)
            mscale = mx.where(use_long, self.long_mscale, self.short_mscale).astype(x.dtype)
        if not isinstance(mscale, float) or mscale != 1.0:
            x = _scale_rotated(x, self.dims, mscale)
        return mx.fast.rope(
            x, self.dims, traditional=self.traditional, base=None, scale=1.0, offset=offset, freqs=freqs
        )


class MRoPE(nn.Module):
    """Multimodal RoPE (Qwen2-VL): frequency pairs split into (temporal, height, width) sections.

    Called as ``rope(x, offset)`` for text it equals standard RoPE (all three position streams agree).
    With ``position_ids`` of shape ``[3, B, L]`` (absolute positions; ``offset`` ignored) pair ``i`` rotates
    by the position of its section: the first ``mrope_section[0]`` pairs use stream 0, and so on.
    """

    def __init__(
        self, dims: int, mrope_section: Sequence[int], base: float = 10000.0, traditional: bool = False
    ):
        super().__init__()
        sections = [int(s) for s in mrope_section]
        if len(sections) != 3:
            raise RopeConfigError(
                f"mrope needs 'mrope_section' with 3 entries (temporal, height, width), got {sections}."
            )
        if sum(sections) != dims // 2:
            raise RopeConfigError(
                f"mrope 'mrope_section' {sections} sums to {sum(sections)}; rope over {dims} dims needs "
                f"{dims // 2} (one entry per rotated pair)."
            )
        self.dims = dims
        self.base = float(base)
        self.traditional = traditional
        self.mrope_section = sections
        self.mscale = 1.0
        self._inv_freqs = mx.array([1.0 / w for w in rope_wavelengths(dims, base)], dtype=mx.float32)
        self._section_index = mx.array([k for k, s in enumerate(sections) for _ in range(s)], dtype=mx.int32)

    def _extra_repr(self) -> str:
        return f"{self.dims}, mrope_section={self.mrope_section}, traditional={self.traditional}"

    def __call__(self, x: mx.array, offset: Offset = 0, position_ids: mx.array | None = None) -> mx.array:
        if position_ids is None:
            return mx.fast.rope(
                x, self.dims, traditional=self.traditional, base=self.base, scale=1.0, offset=offset
            )
        if position_ids.ndim != 3 or position_ids.shape[0] != 3 or position_ids.shape[-1] != x.shape[-2]:
            raise ValueError(
                f"mrope position_ids must have shape [3, B, L] with L = {x.shape[-2]}, "
                f"got {tuple(position_ids.shape)}."
            )
        pos = mx.take(position_ids.astype(mx.float32), self._section_index, axis=0)  # [dims/2, B, L]
        angles = mx.moveaxis(pos, 0, -1) * self._inv_freqs  # [B, L, dims/2]
        angles = mx.expand_dims(angles, tuple(range(1, x.ndim - 2)))  # broadcast over head axes
        cos, sin = mx.cos(angles).astype(x.dtype), mx.sin(angles).astype(x.dtype)
        rot = x[..., : self.dims]
        if self.traditional:
            x1, x2 = rot[..., 0::2], rot[..., 1::2]
            out = mx.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(rot.shape)
        else:
            half = self.dims // 2
            x1, x2 = rot[..., :half], rot[..., half:]
            out = mx.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        if self.dims == x.shape[-1]:
            return out
        return mx.concatenate([out, x[..., self.dims :]], axis=-1)


@dataclass(frozen=True)
class RotationTable:
    """A RoPE as fused kernels take it: angle ``position * inv_freq[j]`` for pair ``j``.

    ``inv_freq`` is float32 ``[dims / 2]``; ``traditional`` rotates interleaved pairs instead of halves;
    ``input_scale`` (YaRN's mscale, else 1) multiplies the features before the rotation.
    """

    inv_freq: mx.array
    traditional: bool
    input_scale: float


@functools.lru_cache(maxsize=64)
def _linear_inv_freqs(dims: int, base: float, scale: float) -> mx.array:
    """float32 ``scale / wavelength`` per pair of a default RoPE, built once per configuration."""
    return mx.array([scale / w for w in rope_wavelengths(dims, base)], dtype=mx.float32)


def rotation_table(rope: Any, head_dim: int) -> RotationTable | None:
    """``rope`` as a `RotationTable` if it rotates all ``head_dim`` features by position-linear angles.

    Covers `RoPE` (default, linear) and the `FreqsRoPE` family (llama3, yarn, proportional); returns
    ``None`` for ropes whose angles depend on more than the position (dynamic NTK, LongRoPE, MRoPE) or
    that rotate only part of the head: callers then apply the module itself.
    """
    if type(rope) is RoPE and rope.dims == head_dim:
        return RotationTable(_linear_inv_freqs(rope.dims, rope.base, rope.scale), rope.traditional, 1.0)
    if (
        isinstance(rope, FreqsRoPE)
        and type(rope).__call__ in (FreqsRoPE.__call__, YarnRoPE.__call__)
        and rope.dims == head_dim
    ):
        return RotationTable(rope._rotation_inv_freqs, rope.traditional, rope.mscale)
    return None
