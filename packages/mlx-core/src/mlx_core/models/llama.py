"""The Llama decoder family — Llama 2/3, Mistral, Qwen2/2.5 and Qwen3 — built only from mlx-core parts.

One file, read top-down: the arguments read from ``config.json``, then attention, MLP, block, model.
The differences between the families are a handful of switches in ``ModelArgs``:

- GQA: ``num_key_value_heads < num_attention_heads``.
- Qwen3: RMSNorm over each head of the queries and keys (``qk_norm``) before RoPE.
- Qwen2/2.5: a bias on the q/k/v projections; Llama's ``attention_bias`` also puts one on ``o_proj``.
- Tied embeddings: the logits reuse ``embed_tokens`` as the output projection.
- RoPE scaling (linear, dynamic, llama3, yarn, longrope, ...) via ``mlx_core.attn.initialize_rope``.
- Sliding windows per layer, from ``layer_types`` (transformers >= 4.53), Qwen's ``use_sliding_window`` +
  ``max_window_layers``, or Mistral's ``sliding_window`` (applies to every layer). A sliding layer gets a
  ``RotatingKVCache`` of the window's size and a windowed mask.

Logits equal mlx-lm's ``llama``/``qwen2``/``qwen3`` models for the same weights (see the parity tests).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, TypeVar

import mlx.core as mx
import mlx.nn as nn
from mlx_core.attn import create_attention_mask, initialize_rope, scaled_dot_product_attention
from mlx_core.cache import KVCache, QuantizedKVCache, QuantizedRotatingKVCache, RotatingKVCache
from mlx_core.kernels import fused_swiglu

from .fused_decode import decode_block, head_weights

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"

#: Value type of a mapping passed through ``Model.sanitize`` (it edits only keys, so any value type works).
_V = TypeVar("_V")

#: model_type values of config.json this file implements.
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class ModelArgs:
    """Hyper-parameters of a Llama-family decoder, named as in Hugging Face ``config.json``."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    rms_norm_eps: float = 1e-6
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    rope_theta: float | None = None
    rope_traditional: bool = False
    rope_scaling: dict[str, Any] | None = None
    rope_parameters: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    use_sliding_window: bool | None = None
    max_window_layers: int | None = None
    layer_types: list[str] | None = None
    qk_norm: bool | None = None
    qkv_bias: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> ModelArgs:
        """Build from a config.json dict; unknown keys are kept in ``extra``."""
        names = set(inspect.signature(cls).parameters) - {"extra"}
        missing = [
            k
            for k in ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size")
            if k not in config
        ]
        if missing:
            raise ValueError(f"config.json lacks {', '.join(missing)}: is this a Llama-family decoder?")
        known = {k: v for k, v in config.items() if k in names}
        extra = {k: v for k, v in config.items() if k not in names}
        return cls(**known, extra=extra)

    def __post_init__(self) -> None:
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not a Llama-family model; "
                f"mlx_core.models.llama supports {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        # transformers >= 5 nests rope_theta and the scaling under rope_parameters.
        if self.rope_parameters:
            if self.rope_theta is None:
                self.rope_theta = self.rope_parameters.get("rope_theta")
            if self.rope_scaling is None:
                self.rope_scaling = self.rope_parameters
        if self.rope_theta is None:
            self.rope_theta = 1_000_000.0 if self.model_type.startswith("qwen") else 10_000.0
        if self.qk_norm is None:
            self.qk_norm = self.model_type == "qwen3"
        if self.qkv_bias is None:
            self.qkv_bias = self.model_type == "qwen2" or self.attention_bias
        self.layer_types = self._resolve_layer_types()

    def _resolve_layer_types(self) -> list[str]:
        n = self.num_hidden_layers
        if self.layer_types is not None:
            types = list(self.layer_types)
            if len(types) != n:
                raise ValueError(f"layer_types has {len(types)} entries for {n} layers")
        elif self.use_sliding_window is not None:  # Qwen2/Qwen3 convention
            first = self.max_window_layers if self.max_window_layers is not None else 0
            on = self.use_sliding_window and self.sliding_window is not None
            types = [SLIDING_ATTENTION if on and i >= first else FULL_ATTENTION for i in range(n)]
        elif self.model_type == "mistral" and self.sliding_window is not None:
            types = [SLIDING_ATTENTION] * n
        else:
            types = [FULL_ATTENTION] * n
        unknown = set(types) - {FULL_ATTENTION, SLIDING_ATTENTION}
        if unknown:
            raise ValueError(f"layer_types holds unknown attention types {sorted(unknown)}")
        if SLIDING_ATTENTION in types and not self.sliding_window:
            raise ValueError("layer_types asks for sliding_attention but sliding_window is not set")
        return types


class Attention(nn.Module):
    """Multi-head attention with GQA, optional per-head q/k RMSNorm, RoPE and a KV cache."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        dim, head_dim = args.hidden_size, args.head_dim
        assert head_dim is not None and args.num_key_value_heads is not None
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = head_dim
        self.scale = head_dim**-0.5
        self.q_proj = nn.Linear(dim, self.n_heads * head_dim, bias=bool(args.qkv_bias))
        self.k_proj = nn.Linear(dim, self.n_kv_heads * head_dim, bias=bool(args.qkv_bias))
        self.v_proj = nn.Linear(dim, self.n_kv_heads * head_dim, bias=bool(args.qkv_bias))
        self.o_proj = nn.Linear(self.n_heads * head_dim, dim, bias=args.attention_bias)
        if args.qk_norm:
            self.q_norm = nn.RMSNorm(head_dim, eps=args.rms_norm_eps)
            self.k_norm = nn.RMSNorm(head_dim, eps=args.rms_norm_eps)
        self.rope = initialize_rope(
            head_dim,
            base=float(args.rope_theta or 10_000.0),
            traditional=args.rope_traditional,
            scaling_config=args.rope_scaling,
            max_position_embeddings=args.max_position_embeddings,
        )

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        """x [B, L, hidden] -> [B, L, hidden]; the cache grows by L positions."""
        B, L, _ = x.shape
        if "qkv_proj" in self:  # fused by models.fusion.fuse_projections: one matmul, then split
            q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
            queries, keys, values = mx.split(self.qkv_proj(x), [q_dim, q_dim + kv_dim], axis=-1)
        else:
            queries, keys, values = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        # [B, L, H*D] -> [B, L, H, D]; q/k-norm acts per head, before the transpose to [B, H, L, D].
        queries = queries.reshape(B, L, self.n_heads, self.head_dim)
        keys = keys.reshape(B, L, self.n_kv_heads, self.head_dim)
        values = values.reshape(B, L, self.n_kv_heads, self.head_dim)
        if "q_norm" in self:
            queries, keys = self.q_norm(queries), self.k_norm(keys)
        queries = queries.transpose(0, 2, 1, 3)
        keys = keys.transpose(0, 2, 1, 3)
        values = values.transpose(0, 2, 1, 3)

        offset = cache.offset if cache is not None else 0
        queries = self.rope(queries, offset=offset)
        keys = self.rope(keys, offset=offset)
        if cache is not None:
            keys, values = cache.update_and_fetch(keys, values)

        out = scaled_dot_product_attention(queries, keys, values, scale=self.scale, mask=mask, cache=cache)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        dim, hidden = args.hidden_size, args.intermediate_size
        self.gate_proj = nn.Linear(dim, hidden, bias=args.mlp_bias)
        self.up_proj = nn.Linear(dim, hidden, bias=args.mlp_bias)
        self.down_proj = nn.Linear(hidden, dim, bias=args.mlp_bias)

    def __call__(self, x: mx.array) -> mx.array:
        if "gate_up_proj" in self:  # fused by models.fusion.fuse_projections
            gate, up = mx.split(self.gate_up_proj(x), 2, axis=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(fused_swiglu(up, gate))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then h + mlp(norm(h))."""

    def __init__(self, args: ModelArgs, layer_type: str = FULL_ATTENTION) -> None:
        super().__init__()
        self.use_sliding = layer_type == SLIDING_ATTENTION
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        fused = decode_block(self, x, mask, cache)  # one-token steps of a compiled decode, where it applies
        if fused is not None:
            return fused
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    """Embedding, the blocks and the final norm (hidden states, no output projection)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        assert args.layer_types is not None
        self.sliding_window = args.sliding_window
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args, t) for t in args.layer_types]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(
        self,
        inputs: mx.array,
        cache: list[Any] | None = None,
        input_embeddings: mx.array | None = None,
        *,
        normalize: bool = True,
    ) -> mx.array:
        """Hidden states after the final norm (before it with ``normalize=False``)."""
        h = input_embeddings if input_embeddings is not None else self.embed_tokens(inputs)
        caches: list[Any] = list(cache) if cache is not None else [None] * len(self.layers)
        # One mask per attention kind, made from the first layer of that kind (all its caches agree).
        masks: dict[bool, Any] = {}
        for layer, c in zip(self.layers, caches, strict=True):
            if layer.use_sliding not in masks:
                window = self.sliding_window if layer.use_sliding else None
                masks[layer.use_sliding] = create_attention_mask(h, c, window_size=window)
        for layer, c in zip(self.layers, caches, strict=True):
            h = layer(h, masks[layer.use_sliding], c)
        return self.norm(h) if normalize else h


class Model(nn.Module):
    """Causal LM: ``model(tokens [B, L], cache=list) -> logits [B, L, vocab_size]``."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = LlamaModel(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def __call__(
        self, inputs: mx.array, cache: list[Any] | None = None, input_embeddings: mx.array | None = None
    ) -> mx.array:
        length = (input_embeddings if input_embeddings is not None else inputs).shape[1]
        head = head_weights(self, length)
        if head is not None:  # one token: the final norm rides on the output projection's kernel
            h = self.model(inputs, cache, input_embeddings, normalize=False)
            if h.dtype == head.dtype:
                return head(h, norm_weight=self.model.norm.weight, eps=self.model.norm.eps)
            h = self.model.norm(h)
        else:
            h = self.model(inputs, cache, input_embeddings)
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)

    @property
    def layers(self) -> list[TransformerBlock]:
        return self.model.layers

    def make_cache(
        self, max_kv_size: int | None = None, kv_bits: int | None = None, kv_group_size: int = 64
    ) -> list[Any]:
        """One cache per layer: a rotating cache of the window for sliding layers, else a growing one.

        ``max_kv_size`` bounds full-attention layers too (a rotating cache keeping the first 4 tokens, like
        mlx-lm's ``--max-kv-size``); ``kv_bits`` stores keys and values quantized (``mx.quantize``).
        """
        caches: list[Any] = []
        quant = {"bits": kv_bits, "group_size": kv_group_size} if kv_bits else None
        for layer in self.layers:
            window, keep = (self.args.sliding_window, 0) if layer.use_sliding else (max_kv_size, 4)
            if window is None:
                caches.append(QuantizedKVCache(**quant) if quant else KVCache())
            elif quant:
                caches.append(QuantizedRotatingKVCache(max_size=window, keep=keep, **quant))
            else:
                caches.append(RotatingKVCache(max_size=window, keep=keep))
        return caches

    def sanitize(self, weights: dict[str, _V]) -> dict[str, _V]:
        """Map Hugging Face checkpoint names onto this module: drop rotary caches, tie lm_head."""
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.args.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
            weights.pop("lm_head.scales", None)
            weights.pop("lm_head.biases", None)
        return weights
