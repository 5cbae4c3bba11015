"""Quantization parameters, the choice of which tensors to quantize, and mlx-lm's mixed-bit recipes.

Output layout matches mlx-lm exactly: a quantized layer ``P`` stores ``P.weight`` (uint32, packed),
``P.scales`` and, for ``"affine"`` only, ``P.biases`` — the arrays ``mx.quantize`` returns — and config.json
gets a ``quantization`` block ``{"group_size", "bits", "mode", P: {...} for per-layer overrides}``
(mirrored as ``quantization_config``), which is what ``mlx_lm.load`` reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mlx.core as mx

from .errors import ConvertError

MODES: dict[str, tuple[tuple[int, ...], tuple[int, ...], int, int]] = {
    # mode: (allowed bits, allowed group sizes, default group size, default bits)
    "affine": ((2, 3, 4, 5, 6, 8), (32, 64, 128), 64, 4),
    "mxfp4": ((4,), (32,), 32, 4),
    "nvfp4": ((4,), (16,), 16, 4),
    "mxfp8": ((8,), (32,), 32, 8),
}
QUANT_RECIPES = ("mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6")
"""Mixed-bit recipe names, identical in effect to mlx-lm's ``--quant-predicate`` choices."""

QuantDecision = bool | Mapping[str, Any]
QuantPredicate = Callable[[str, tuple[int, ...]], QuantDecision]
"""``predicate(layer_path, weight_shape) -> bool | {"bits": .., "group_size": .., "mode": ..}``."""


@dataclass(frozen=True)
class QuantParams:
    """How one tensor is quantized; validated against what ``mx.quantize`` supports for the mode."""

    group_size: int
    bits: int
    mode: str = "affine"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConvertError(f"unknown quantization mode {self.mode!r}: choose one of {', '.join(MODES)}")
        bits, groups, _, _ = MODES[self.mode]
        if self.bits not in bits:
            raise ConvertError(f"{self.mode} quantization supports bits {list(bits)}, got {self.bits}")
        if self.group_size not in groups:
            raise ConvertError(
                f"{self.mode} quantization supports group sizes {list(groups)}, got {self.group_size}"
            )

    @classmethod
    def for_mode(
        cls, mode: str = "affine", group_size: int | None = None, bits: int | None = None
    ) -> QuantParams:
        """Fill unset ``group_size``/``bits`` with the mode's defaults (affine 64/4, mxfp4 32/4, ...)."""
        if mode not in MODES:
            raise ConvertError(f"unknown quantization mode {mode!r}: choose one of {', '.join(MODES)}")
        _, _, default_group, default_bits = MODES[mode]
        return cls(group_size or default_group, bits or default_bits, mode)

    def updated(self, overrides: Mapping[str, Any]) -> QuantParams:
        """These params with a per-layer override dict applied (unknown keys are an error)."""
        unknown = set(overrides) - {"group_size", "bits", "mode"}
        if unknown:
            raise ConvertError(
                f"quantization override has unknown keys {sorted(unknown)}: use group_size, bits, mode"
            )
        mode = overrides.get("mode", self.mode)
        if mode != self.mode and ("bits" not in overrides or "group_size" not in overrides):
            base = QuantParams.for_mode(mode)
            return QuantParams(
                int(overrides.get("group_size", base.group_size)), int(overrides.get("bits", base.bits)), mode
            )
        return QuantParams(
            int(overrides.get("group_size", self.group_size)), int(overrides.get("bits", self.bits)), mode
        )

    def to_dict(self) -> dict[str, Any]:
        return {"group_size": self.group_size, "bits": self.bits, "mode": self.mode}


def quantize_weight(weight: mx.array, params: QuantParams) -> dict[str, mx.array]:
    """Quantize a 2-D weight ``[out, in]`` into ``{"weight", "scales"[, "biases"]}``, as mlx-lm stores it."""
    out = mx.quantize(weight, group_size=params.group_size, bits=params.bits, mode=params.mode)
    packed, scales = out[0], out[1]
    result = {"weight": packed, "scales": scales}
    if params.mode == "affine":
        result["biases"] = out[2]
    return result


def dequantize_weight(
    packed: mx.array,
    scales: mx.array,
    biases: mx.array | None,
    params: QuantParams,
    dtype: mx.Dtype | None = None,
) -> mx.array:
    """Inverse of ``quantize_weight`` (up to quantization error): the float weight ``[out, in]``."""
    return mx.dequantize(
        packed, scales, biases, group_size=params.group_size, bits=params.bits, mode=params.mode, dtype=dtype
    )


def check_fits(
    path: str, packed_shape: tuple[int, ...], scales_shape: tuple[int, ...], params: QuantParams
) -> None:
    """Raise unless ``params`` explain a packed weight and scales of these shapes.

    ``in_dims = packed_cols * 32 / bits`` must equal ``scales_cols * group_size``. Shapes alone cannot
    tell 4 bits/group 64 from 2 bits/group 128, so params come from config.json, never from guessing.
    """
    if packed_shape[-1] * 32 != scales_shape[-1] * params.group_size * params.bits:
        raise ConvertError(
            f"cannot infer quantization of {path}: weight {list(packed_shape)} and scales "
            f"{list(scales_shape)} do not fit {params.bits} bits with group size {params.group_size}; "
            f"add a per-layer entry '{path}': {{group_size, bits, mode}} to config.json's quantization block"
        )


def regex_predicate(rules: Mapping[str, QuantDecision]) -> QuantPredicate:
    """A predicate from ``{regex: decision}``: the first pattern found (``re.search``) in the path decides.

    Layers no pattern matches are quantized with the defaults. A dict decision *forces* those params: a
    layer whose input dimension its group size does not divide is then an error, not silently skipped.
    """
    compiled = []
    for pattern, decision in rules.items():
        try:
            compiled.append((re.compile(pattern), decision))
        except re.error as exc:
            raise ConvertError(f"invalid regex {pattern!r} in the quantization rules: {exc}") from exc

    def predicate(path: str, shape: tuple[int, ...]) -> QuantDecision:
        for regex, decision in compiled:
            if regex.search(path):
                return decision
        return True

    return predicate


def mixed_recipe(recipe: str, num_layers: int, layer_location: int, group_size: int = 64) -> QuantPredicate:
    """mlx-lm's mixed-bit recipes (after llama.cpp's Q4_K_M): more bits for v_proj/down_proj of some layers
    and for lm_head. ``layer_location`` is the index of the layer number in a dotted path
    (2 in ``model.layers.3.mlp.down_proj``).
    """
    high_bits = 6
    lows = {"mixed_2_6": 2, "mixed_3_4": 3, "mixed_3_6": 3, "mixed_4_6": 4}
    if recipe not in lows:
        raise ConvertError(
            f"unknown quantization recipe {recipe!r}: choose one of {', '.join(QUANT_RECIPES)}"
        )
    low_bits = lows[recipe]
    if recipe == "mixed_3_4":
        high_bits = 4

    def predicate(path: str, shape: tuple[int, ...]) -> QuantDecision:
        if shape[-1] % group_size:
            return False
        parts = path.split(".")
        index = int(parts[layer_location]) if len(parts) > layer_location else 0
        more = index < num_layers // 8 or index >= 7 * num_layers // 8 or (index - num_layers // 8) % 3 == 2
        high = {"group_size": group_size, "bits": high_bits, "mode": "affine"}
        if ("v_proj" in path or "v_a_proj" in path or "v_b_proj" in path) and more:
            return high
        if "down_proj" in path and more:
            return high
        if "lm_head" in path:
            return high
        return {"group_size": group_size, "bits": low_bits, "mode": "affine"}

    return predicate


def decide(
    path: str, shape: tuple[int, ...], default: QuantParams, predicate: QuantPredicate | None
) -> tuple[QuantParams | None, bool]:
    """Whether and how to quantize the 2-D weight of layer ``path``.

    Returns ``(params or None, recorded)``: ``recorded`` is True when the predicate gave explicit params,
    which then go into config.json's per-layer block (as mlx-lm records them).
    """
    decision: QuantDecision = True if predicate is None else predicate(path, shape)
    if isinstance(decision, Mapping):
        params = default.updated(decision)
        if shape[-1] % params.group_size:
            raise ConvertError(
                f"cannot quantize {path} (shape {list(shape)}): group size {params.group_size} does not "
                f"divide its input dimension {shape[-1]}; pick a group size that does or exclude the layer"
            )
        return params, True
    if decision is True:
        return (default, False) if shape[-1] % default.group_size == 0 else (None, False)
    if decision is False or decision is None:
        return None, False
    raise TypeError(f"quant predicate returned {decision!r} for {path}: expected a bool or a dict of params")
