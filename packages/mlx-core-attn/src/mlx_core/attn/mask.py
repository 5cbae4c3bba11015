"""Attention masks for a model's forward pass: ``None``, ``"causal"`` or an explicit array.

``create_causal_mask`` itself lives in :mod:`mlx_core.cache` (every cache's ``make_mask`` builds on it) and
is re-exported from here; this module decides which of the three mask kinds a forward pass needs.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import mlx.core as mx
from mlx_core.cache import create_causal_mask

__all__ = ["AttentionMask", "create_attention_mask", "create_causal_mask", "mask_to_array"]

AttentionMask: TypeAlias = Literal["causal"] | mx.array | None
"""What :func:`mlx_core.attn.scaled_dot_product_attention` accepts as ``mask``.

- ``None``: every query sees every key (a single decode token with no sliding window).
- ``"causal"``: lower-right aligned causal mask (the last query sees the last key), computed inside
  ``mx.fast.scaled_dot_product_attention`` without materialising an array; needs ``Lq <= Lk``.
- ``mx.array``: boolean (``True`` = may attend) or additive float mask, broadcastable to ``[B, H, Lq, Lk]``
  (``[Lq, Lk]`` from :func:`create_causal_mask`, ``[B, 1, Lq, Lk]`` with padding ``lengths``).
"""


def create_attention_mask(
    h: mx.array, cache: Any = None, window_size: int | None = None, return_array: bool = False
) -> AttentionMask:
    """The mask for hidden states ``h`` of shape ``[B, L, hidden]`` given the layer's cache (as mlx-lm does).

    A cache with ``make_mask`` decides (it knows its offset, window and ring layout). Without one the new
    tokens start at the cache's integer ``offset`` (0 without a cache): ``None`` for a single token that sees
    everything, an array when a window cuts in or ``return_array`` is set, else ``"causal"``.
    """
    if not isinstance(h, mx.array) or h.ndim < 2:
        shape = getattr(h, "shape", None)
        raise ValueError(f"create_attention_mask expects hidden states h [B, L, hidden], got shape {shape}.")
    if window_size is not None and (not isinstance(window_size, int) or window_size <= 0):
        raise ValueError(f"window_size must be a positive int or None, got {window_size!r}.")
    n = h.shape[1]
    if cache is not None and cache and hasattr(cache, "make_mask"):
        return cache.make_mask(n, return_array=return_array, window_size=window_size)
    offset = getattr(cache, "offset", 0) if cache is not None else 0
    offset = offset if isinstance(offset, int) else 0
    windowed = window_size is not None and offset + n > window_size
    if n == 1 and not windowed:
        return None
    if return_array or windowed:
        return create_causal_mask(n, offset, window_size=window_size)
    return "causal"


def mask_to_array(mask: AttentionMask, q_len: int, k_len: int) -> mx.array | None:
    """An explicit mask for ``q_len`` queries over ``k_len`` keys (``"causal"`` → lower-right boolean)."""
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"the only string mask is 'causal', got {mask!r}.")
        q_idx = mx.arange(k_len - q_len, k_len)
        return q_idx[:, None] >= mx.arange(k_len)[None]
    return mask
