"""Error types raised by mlx_core.audio; each message says what was wrong and what to do."""

from __future__ import annotations


class AudioError(ValueError):
    """Base class for every error this package raises about audio data or files."""


class InvalidAudioError(AudioError):
    """The samples themselves are unusable: empty, NaN/inf, wrong rank or dtype, too short."""


class AudioDecodeError(AudioError):
    """A file exists but could not be decoded (corrupt, truncated, not audio)."""


class UnsupportedAudioFormatError(AudioError):
    """The container/codec is not readable by libsndfile (soundfile), e.g. M4A/AAC."""
