"""Causal attention masks shared by every cache (and re-exported by mlx_core.attn)."""

from __future__ import annotations

from typing import Literal

import mlx.core as mx

#: What ``make_mask`` returns: no mask (single query, no window), mlx's "causal" shortcut, or a boolean array.
MaskLike = None | Literal["causal"] | mx.array


def create_causal_mask(
    N: int,
    offset: int = 0,
    window_size: int | None = None,
    lengths: mx.array | None = None,
) -> mx.array:
    """Boolean causal mask for ``N`` queries at positions ``offset .. offset+N-1`` over ``offset+N`` keys.

    ``True`` means "may attend". Query ``i`` sees key ``j`` when ``j <= offset + i`` and, with a window,
    ``j > offset + i - window_size`` (same as mlx-lm's ``create_causal_mask``). ``lengths`` (``[B]`` ints)
    additionally hides keys at index ``>= lengths[b]`` (right padding); the result is then ``[B, 1, N,
    offset+N]``,
    otherwise ``[N, offset+N]``.
    """
    if N < 0 or offset < 0:
        raise ValueError(f"create_causal_mask needs N >= 0 and offset >= 0, got N={N}, offset={offset}")
    if window_size is not None and window_size <= 0:
        raise ValueError(f"window_size must be a positive int or None, got {window_size}")
    rinds = mx.arange(offset + N)
    linds = mx.arange(offset, offset + N) if offset else rinds
    linds = linds[:, None]
    rinds = rinds[None]
    mask = linds >= rinds
    if window_size is not None:
        mask = mask & (linds < rinds + window_size)
    if lengths is not None:
        lengths = mx.array(lengths) if not isinstance(lengths, mx.array) else lengths
        if lengths.ndim != 1:
            raise ValueError(
                f"lengths must be a 1-D [B] array of valid key counts, got shape {lengths.shape}"
            )
        mask = mask[None, None] & (rinds[None, None] < lengths[:, None, None, None])
    return mask


def attention_mask_for_offset(
    N: int, offset: int, return_array: bool = False, window_size: int | None = None
) -> MaskLike:
    """The mask an mlx-lm-style model wants for ``N`` new queries after ``offset`` cached tokens.

    ``None`` for a single query without window, ``"causal"`` (mlx's fused shortcut) for a prefill, else an
    array. Matches mlx-lm's ``cache.create_attention_mask``.
    """
    if window_size is not None:
        return create_causal_mask(N, offset, window_size=window_size)
    if N == 1:
        return None
    if return_array:
        return create_causal_mask(N, offset)
    return "causal"
