"""Error types raised by mlx_core.attn: each names what was wrong and what to do."""

from __future__ import annotations


class RopeConfigError(ValueError):
    """A RoPE scaling config is unusable: unknown type, missing key or inconsistent value."""


class AttentionShapeError(ValueError):
    """Queries, keys, values, mask or sinks have shapes that cannot be attended together."""
