"""Whisper-exact log-mel, vocoder mel, audio loading and resampling."""

__all__: list[str] = []
