"""Result types: a whole `Response` and per-token `GenerationChunk`s for streaming."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Response:
    """The outcome of one generation call.

    ``tokens`` are the generated ids (EOS excluded); ``generation_tokens`` counts every sampled token
    (EOS included); ``finish_reason`` is ``"stop"`` (EOS or stop string) or ``"length"`` (max_tokens);
    ``prompt_tps``/``generation_tps`` are tokens per second; ``peak_memory`` is MLX's peak in GB.
    """

    text: str
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prompt_tps: float = 0.0
    generation_tps: float = 0.0
    peak_memory: float = 0.0


@dataclass
class GenerationChunk:
    """One streamed step: the text segment it released, its token and, on the last chunk, why it ended."""

    text: str
    token: int
    finish_reason: str | None = None
