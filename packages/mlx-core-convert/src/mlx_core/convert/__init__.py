"""Hugging Face checkpoints to MLX: streamed, quantized, loadable by mlx-lm."""

from .casting import DTYPES, cast_floating, resolve_dtype
from .checkpoint import Checkpoint
from .convert import convert
from .dequantize import dequantize
from .errors import (
    ConvertError,
    CorruptCheckpointError,
    DestinationExistsError,
    HubUnavailableError,
    PickleCheckpointError,
)
from .mapping import WeightMapping
from .quantize import QUANT_RECIPES, QuantParams, mixed_recipe, quantize_weight, regex_predicate
from .safetensors_file import SafetensorsHeader, TensorInfo, read_header
from .source import HUB_ALLOW_PATTERNS, resolve_source
from .writer import ShardWriter, parse_size

__all__ = [
    "DTYPES",
    "HUB_ALLOW_PATTERNS",
    "QUANT_RECIPES",
    "Checkpoint",
    "ConvertError",
    "CorruptCheckpointError",
    "DestinationExistsError",
    "HubUnavailableError",
    "PickleCheckpointError",
    "QuantParams",
    "SafetensorsHeader",
    "ShardWriter",
    "TensorInfo",
    "WeightMapping",
    "cast_floating",
    "convert",
    "dequantize",
    "mixed_recipe",
    "parse_size",
    "quantize_weight",
    "read_header",
    "regex_predicate",
    "resolve_dtype",
    "resolve_source",
]
