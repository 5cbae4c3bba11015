"""Reference model family built only from mlx-core parts, and its loader."""

from .llama import MLP, Attention, LlamaModel, Model, ModelArgs, TransformerBlock
from .loading import (
    ModelLoadError,
    count_parameters,
    load_config,
    load_model,
    load_model_weights,
    load_weights,
    model_from_config,
    quantize_like_checkpoint,
    resolve_model_path,
)
from .shipped import demo_model_path

__all__ = [
    "MLP",
    "Attention",
    "LlamaModel",
    "Model",
    "ModelArgs",
    "ModelLoadError",
    "TransformerBlock",
    "count_parameters",
    "demo_model_path",
    "load_config",
    "load_model",
    "load_model_weights",
    "load_weights",
    "model_from_config",
    "quantize_like_checkpoint",
    "resolve_model_path",
]
