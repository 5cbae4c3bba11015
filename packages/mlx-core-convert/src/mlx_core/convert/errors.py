"""Error classes raised by mlx_core.convert: each names what went wrong and what to do."""

from __future__ import annotations


class ConvertError(ValueError):
    """Base class of every error mlx_core.convert raises on bad input or a bad checkpoint."""


class CorruptCheckpointError(ConvertError):
    """A safetensors file is truncated, has an invalid header, or disagrees with its index."""


class PickleCheckpointError(ConvertError):
    """The checkpoint only ships pickle weights (``.bin``/``.pt``), which are never loaded."""


class HubUnavailableError(ConvertError):
    """A Hub repo id could not be resolved (offline and not cached, unknown repo, network error)."""


class DestinationExistsError(ConvertError, FileExistsError):
    """The destination exists and ``overwrite`` was not requested."""
