"""Lossless speculative decoding: draft models, prompt lookup, metrics."""

from .draft_length import AdaptiveDraftLength, DraftLengthPolicy, FixedDraftLength
from .drafters import Draft, Drafter, DraftModelDrafter, PromptLookupDrafter
from .draw import inverse_cdf_draw
from .errors import DraftError, SpeculativeError
from .metrics import SpecMetrics
from .speculative import (
    SpeculativeGenerate,
    SpeculativeGenerateBuilder,
    SpeculativeResponse,
    speculative_generate,
)
from .verify import greedy_verify, point_mass, rejection_verify, residual_distribution

__all__ = [
    "AdaptiveDraftLength",
    "Draft",
    "DraftError",
    "DraftLengthPolicy",
    "DraftModelDrafter",
    "Drafter",
    "FixedDraftLength",
    "PromptLookupDrafter",
    "SpecMetrics",
    "SpeculativeError",
    "SpeculativeGenerate",
    "SpeculativeGenerateBuilder",
    "SpeculativeResponse",
    "greedy_verify",
    "inverse_cdf_draw",
    "point_mass",
    "rejection_verify",
    "residual_distribution",
    "speculative_generate",
]
