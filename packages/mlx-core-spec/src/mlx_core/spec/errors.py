"""Error types of mlx_core.spec; each message says what was wrong and what to do."""

from __future__ import annotations

__all__ = ["DraftError", "SpeculativeError"]


class SpeculativeError(ValueError):
    """Invalid speculative decoding setup (sampler without probabilities, untrimmable cache, ...)."""


class DraftError(SpeculativeError):
    """A drafter cannot propose tokens (vocabulary mismatch, untrimmable draft cache, misuse)."""
