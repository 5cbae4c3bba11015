"""RoPE for every scaling scheme, attention masks and scaled dot-product attention with caches."""

from mlx_core.attn.errors import AttentionShapeError, RopeConfigError
from mlx_core.attn.mask import AttentionMask, create_attention_mask, create_causal_mask, mask_to_array
from mlx_core.attn.rope import (
    DynamicNTKRoPE,
    FreqsRoPE,
    Llama3RoPE,
    LongRoPE,
    MRoPE,
    Offset,
    ProportionalRoPE,
    RoPE,
    RotationTable,
    YarnRoPE,
    rope_wavelengths,
    rotation_table,
    yarn_get_mscale,
)
from mlx_core.attn.rope_config import (
    ROPE_TYPES,
    apply_yarn_mscale,
    initialize_rope,
    resolve_rope_parameters,
    rope_type_of,
)
from mlx_core.attn.sdpa import (
    quantized_scaled_dot_product_attention,
    scaled_dot_product_attention,
    use_decode_kernel,
)

__all__ = [
    "ROPE_TYPES",
    "AttentionMask",
    "AttentionShapeError",
    "DynamicNTKRoPE",
    "FreqsRoPE",
    "Llama3RoPE",
    "LongRoPE",
    "MRoPE",
    "Offset",
    "ProportionalRoPE",
    "RoPE",
    "RopeConfigError",
    "RotationTable",
    "YarnRoPE",
    "apply_yarn_mscale",
    "create_attention_mask",
    "create_causal_mask",
    "initialize_rope",
    "mask_to_array",
    "quantized_scaled_dot_product_attention",
    "resolve_rope_parameters",
    "rope_type_of",
    "rope_wavelengths",
    "rotation_table",
    "scaled_dot_product_attention",
    "use_decode_kernel",
    "yarn_get_mscale",
]
