"""Generation loop, samplers, logits processors, tokenizers and streaming text."""

__all__: list[str] = []
