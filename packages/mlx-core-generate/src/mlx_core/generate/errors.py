"""Error types raised by mlx_core.generate; each message says what was wrong and what to do."""

from __future__ import annotations


class GenerateError(ValueError):
    """Base class for invalid generation inputs or configuration."""


class PromptError(GenerateError):
    """The prompt is empty, of the wrong rank, or not integer token ids."""


class ModelOutputError(GenerateError):
    """The model returned logits of an unexpected shape or type."""


class SamplerConfigError(GenerateError):
    """A sampling parameter (temperature, top_p, min_p, top_k, XTC) is out of range."""


class TokenizerFilesError(FileNotFoundError):
    """A model directory lacks the files a tokenizer needs (tokenizer.json)."""
