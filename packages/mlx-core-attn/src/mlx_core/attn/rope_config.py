"""Build a RoPE module from a Hugging Face rope scaling config (``rope_scaling`` or ``rope_parameters``).

Reads the scaling type from ``type`` or ``rope_type`` (transformers' two spellings) and accepts
transformers-5 style configs where ``rope_parameters`` holds the type, the scaling keys and ``rope_theta``
(optionally one such dict per layer type, e.g. ``{"full_attention": {...}, "sliding_attention": {...}}``).
Same call signature and outputs as mlx-lm's ``initialize_rope`` for the types both support.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlx.nn as nn
from mlx_core.attn.errors import RopeConfigError
from mlx_core.attn.rope import (
    DynamicNTKRoPE,
    Llama3RoPE,
    LongRoPE,
    MRoPE,
    ProportionalRoPE,
    RoPE,
    YarnRoPE,
    yarn_get_mscale,
)

__all__ = ["ROPE_TYPES", "apply_yarn_mscale", "initialize_rope", "resolve_rope_parameters", "rope_type_of"]

_ALIASES = {
    "su": "longrope",
    "deepseek_yarn": "yarn",
    "telechat3-yarn": "yarn",
}
ROPE_TYPES: tuple[str, ...] = (
    "default",
    "linear",
    "dynamic",
    "llama3",
    "yarn",
    "deepseek_yarn",
    "telechat3-yarn",
    "longrope",
    "su",
    "proportional",
    "mrope",
)


def resolve_rope_parameters(
    scaling_config: Mapping[str, Any] | None, layer_type: str | None = None
) -> dict[str, Any] | None:
    """Flatten a scaling config to one rope's dict (unwraps ``rope_parameters`` and per-layer-type dicts).

    Returns ``None`` for ``None`` or an empty mapping. Raises :class:`RopeConfigError` when the config is
    keyed by layer type and ``layer_type`` is missing or unknown.
    """
    if scaling_config is None:
        return None
    if not isinstance(scaling_config, Mapping):
        raise RopeConfigError(
            f"scaling_config must be a dict (a rope_scaling or rope_parameters mapping), "
            f"got {type(scaling_config).__name__}."
        )
    cfg: Mapping[str, Any] = scaling_config
    if isinstance(cfg.get("rope_parameters"), Mapping):
        cfg = cfg["rope_parameters"]
    if cfg and all(isinstance(v, Mapping) for v in cfg.values()):
        if layer_type is None or layer_type not in cfg:
            raise RopeConfigError(
                f"rope parameters are given per layer type ({sorted(cfg)}); pass layer_type= one of them"
                + (f" (got {layer_type!r})." if layer_type is not None else ".")
            )
        cfg = cfg[layer_type]
    return dict(cfg) if cfg else None


def rope_type_of(scaling_config: Mapping[str, Any] | None) -> str:
    """The scaling type named by ``type`` or ``rope_type`` (``"default"`` when absent), aliases resolved."""
    if not scaling_config:
        return "default"
    rope_type = scaling_config.get("type") or scaling_config.get("rope_type") or "default"
    if not isinstance(rope_type, str):
        raise RopeConfigError(f"rope scaling 'type'/'rope_type' must be a string, got {rope_type!r}.")
    return _ALIASES.get(rope_type, rope_type)


def _require(cfg: Mapping[str, Any], key: str, rope_type: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise RopeConfigError(
            f"rope scaling type {rope_type!r} needs key {key!r} in scaling_config (got keys {sorted(cfg)})."
        )
    return cfg[key]


def initialize_rope(
    dims: int,
    base: float = 10000.0,
    traditional: bool = False,
    scaling_config: Mapping[str, Any] | None = None,
    max_position_embeddings: int | None = None,
    *,
    layer_type: str | None = None,
) -> nn.Module:
    """Return the RoPE module for ``scaling_config``, called as ``rope(x, offset=0)`` on ``[B, H, L, D]``.

    ``dims`` is the number of rotated features. A ``rope_theta`` inside the config (transformers 5) overrides
    ``base``. Unknown types and missing keys raise :class:`RopeConfigError` naming the type or key.
    """
    if not isinstance(dims, int) or dims <= 0 or dims % 2:
        raise RopeConfigError(f"rope dims must be a positive even int, got {dims!r}.")
    cfg = resolve_rope_parameters(scaling_config, layer_type) or {}
    rope_type = rope_type_of(cfg)
    base = float(cfg.get("rope_theta", base))

    if rope_type == "default":
        return RoPE(dims, base=base, traditional=traditional)
    if rope_type == "linear":
        return RoPE(dims, base=base, traditional=traditional, scale=1.0 / _require(cfg, "factor", rope_type))
    if rope_type == "dynamic":
        max_pos = max_position_embeddings or cfg.get("original_max_position_embeddings")
        if max_pos is None:
            raise RopeConfigError(
                "rope scaling type 'dynamic' needs max_position_embeddings= (or key "
                "'original_max_position_embeddings' in scaling_config)."
            )
        return DynamicNTKRoPE(
            dims, max_position_embeddings=max_pos, base=base, traditional=traditional,
            factor=_require(cfg, "factor", rope_type),
        )  # fmt: skip
    if rope_type == "llama3":
        return Llama3RoPE(
            dims,
            base=base,
            traditional=traditional,
            factor=_require(cfg, "factor", rope_type),
            low_freq_factor=cfg.get("low_freq_factor", 1.0),
            high_freq_factor=cfg.get("high_freq_factor", 4.0),
            original_max_position_embeddings=cfg.get("original_max_position_embeddings", 8192),
        )
    if rope_type == "yarn":
        optional = ("original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim")
        kwargs = {k: cfg[k] for k in optional if cfg.get(k) is not None}
        return YarnRoPE(
            dims,
            base=base,
            traditional=traditional,
            factor=_require(cfg, "factor", rope_type),
            attention_factor=cfg.get("attention_factor"),
            truncate=cfg.get("truncate", True),
            **kwargs,
        )
    if rope_type == "longrope":
        original = _require(cfg, "original_max_position_embeddings", rope_type)
        if max_position_embeddings is not None:
            factor = max_position_embeddings / original
        else:
            factor = cfg.get("factor", 1.0)
        attention_factor = cfg.get("attention_factor")
        return LongRoPE(
            dims,
            short_factor=_require(cfg, "short_factor", rope_type),
            long_factor=_require(cfg, "long_factor", rope_type),
            original_max_position_embeddings=original,
            base=base,
            traditional=traditional,
            factor=factor,
            short_mscale=cfg.get("short_mscale") or attention_factor,
            long_mscale=cfg.get("long_mscale") or attention_factor,
        )
    if rope_type == "proportional":
        return ProportionalRoPE(
            dims,
            rotated_dims=int(dims * cfg.get("partial_rotary_factor", 1.0)),
            base=base,
            traditional=traditional,
            factor=cfg.get("factor", 1.0),
        )
    if rope_type == "mrope":
        return MRoPE(dims, _require(cfg, "mrope_section", rope_type), base=base, traditional=traditional)
    raise RopeConfigError(
        f"unsupported rope scaling type {rope_type!r} (from 'type'/'rope_type'); "
        f"supported: {list(ROPE_TYPES)}."
    )


def apply_yarn_mscale(
    scale: float, scaling_config: Mapping[str, Any] | None, layer_type: str | None = None
) -> float:
    """Fold YaRN's ``mscale_all_dim`` correction into a softmax scale (DeepSeek convention).

    The rope module already applies ``get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)`` to
    q and k; the other half is ``get_mscale(factor, mscale_all_dim) ** 2`` on the logits. Returns ``scale``
    unchanged for non-yarn configs, ``factor <= 1`` or no ``mscale_all_dim``.
    """
    cfg = resolve_rope_parameters(scaling_config, layer_type)
    if not cfg or rope_type_of(cfg) != "yarn":
        return scale
    mscale_all_dim = cfg.get("mscale_all_dim") or 0.0
    factor = cfg.get("factor") or 1.0
    if not mscale_all_dim or factor <= 1:
        return scale
    m = yarn_get_mscale(factor, mscale_all_dim)
    return scale * m * m
