"""Model protocols: what the generation loop needs from a model.

A model is any callable ``model(inputs [B, L] int, cache=caches) -> logits [B, L, V]`` (mlx-lm's
convention, so every mlx-lm model works unchanged), or one returning an object with ``.logits``
(`ModelOutput`). Models that need more than token ids (embeddings, positions) set the attribute
``accepts_model_input = True`` and receive a single `ModelInput` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import mlx.core as mx


@runtime_checkable
class ModelOutput(Protocol):
    """An object carrying logits [B, L, V] (other fields, e.g. hidden states, are ignored)."""

    @property
    def logits(self) -> mx.array: ...


@dataclass
class ModelInput:
    """Everything one forward pass gets, for models that declare ``accepts_model_input = True``.

    ``tokens`` is [B, L] int; ``caches`` is the per-layer cache list (updated in place); ``extra`` holds
    optional model-specific state such as input embeddings or explicit positions.
    """

    tokens: mx.array
    caches: list[Any]
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LanguageModel(Protocol):
    """mlx-lm's model convention: ``model(inputs, cache=caches) -> logits | ModelOutput``."""

    def __call__(self, inputs: mx.array, cache: list[Any] | None = None) -> Any: ...


def wants_model_input(model: Any) -> bool:
    """True when the model declared that it takes a `ModelInput` instead of token ids."""
    return bool(getattr(model, "accepts_model_input", False))
