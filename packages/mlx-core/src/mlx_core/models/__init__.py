"""Reference model family built only from mlx-core parts, its loader, and tensor parallelism."""

from .fusion import fuse_linears, fuse_projections, fused_projection_count
from .llama import MLP, Attention, LlamaModel, Model, ModelArgs, TransformerBlock
from .loading import (
    ModelLoadError,
    count_parameters,
    load_config,
    load_model,
    load_model_weights,
    load_tokenizer_for,
    load_weights,
    model_from_config,
    quantize_like_checkpoint,
    resolve_model_path,
)
from .sharded_loading import ShardedCheckpoint, load_sharded, load_sharded_weights, read_safetensors_index
from .sharding import (
    ShardingError,
    VocabShardedHead,
    check_shardable,
    collectives_per_step,
    distributed_group,
    leave_group,
    shard_model,
    tensor_parallel_size,
)
from .shipped import demo_model_path

__all__ = [
    "MLP",
    "Attention",
    "LlamaModel",
    "Model",
    "ModelArgs",
    "ModelLoadError",
    "ShardedCheckpoint",
    "ShardingError",
    "TransformerBlock",
    "VocabShardedHead",
    "check_shardable",
    "collectives_per_step",
    "count_parameters",
    "demo_model_path",
    "distributed_group",
    "fuse_linears",
    "fuse_projections",
    "fused_projection_count",
    "leave_group",
    "load_config",
    "load_model",
    "load_model_weights",
    "load_sharded",
    "load_sharded_weights",
    "load_tokenizer_for",
    "load_weights",
    "model_from_config",
    "quantize_like_checkpoint",
    "read_safetensors_index",
    "resolve_model_path",
    "shard_model",
    "tensor_parallel_size",
]
