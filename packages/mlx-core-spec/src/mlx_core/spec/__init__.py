"""Lossless speculative decoding: draft models, prompt lookup, metrics."""

__all__: list[str] = []
