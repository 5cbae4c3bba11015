"""convert(): a Hugging Face safetensors checkpoint to an MLX model directory, streamed and atomic."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx

from .atomic import atomic_directory, check_destination
from .casting import cast_floating, resolve_dtype
from .checkpoint import Checkpoint
from .errors import ConvertError, DestinationExistsError
from .mapping import WeightMapping
from .model_dir import updated_config, write_model_files
from .quantize import (
    QUANT_RECIPES,
    QuantParams,
    QuantPredicate,
    decide,
    mixed_recipe,
    quantize_weight,
    regex_predicate,
)
from .source import resolve_source
from .writer import ShardWriter, parse_size


def convert(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    dtype: str | mx.Dtype | None = None,
    quantize: bool | str | None = None,
    q_bits: int | None = None,
    q_group_size: int | None = None,
    q_mode: str = "affine",
    quant_predicate: QuantPredicate | Mapping[str, Any] | None = None,
    max_shard_size: int | str = "5GB",
    weight_map: WeightMapping | None = None,
    revision: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Convert ``source`` (a directory or Hub repo id) into an MLX model directory at ``dest``.

    Tensors stream one at a time: read, renamed/transformed by ``weight_map``, floats cast to ``dtype``
    (``"float16"``, ``"bfloat16"``, ``"float32"``; None keeps each stored dtype; integers never change),
    optionally quantized, and appended to output shards of at most ``max_shard_size``, so peak memory is
    about one tensor. ``quantize=True`` quantizes every 2-D ``*.weight`` whose input dimension the group
    size divides, with ``q_mode`` (``affine`` 2/3/4/5/6/8 bits, ``mxfp4``, ``nvfp4``, ``mxfp8``) and
    ``q_bits``/``q_group_size`` (mode defaults: affine 4 bits, group 64). ``quantize="mixed_4_6"`` (or
    another of ``QUANT_RECIPES``) applies mlx-lm's mixed-bit recipe. ``quant_predicate(path, shape)``
    returns False to skip a layer or a dict of params to override it; a ``{regex: False | dict}``
    mapping does the same declaratively (first match wins). The output is built beside ``dest`` and
    renamed into place only when complete. Returns the destination path.
    """
    target = resolve_dtype(dtype)
    shard_bytes = parse_size(max_shard_size)
    mapping = WeightMapping() if weight_map is None else weight_map
    if not isinstance(mapping, WeightMapping):
        raise TypeError(f"weight_map must be a WeightMapping, got {type(weight_map).__name__}")
    recipe: str | None = None
    if isinstance(quantize, str):
        if quantize not in QUANT_RECIPES:
            raise ConvertError(
                f"quantize={quantize!r} is not a recipe: pass True or one of {', '.join(QUANT_RECIPES)}"
            )
        if q_mode != "affine":
            raise ConvertError(f"quantization recipes use affine quantization, not q_mode={q_mode!r}")
        if quant_predicate is not None:
            raise ConvertError("pass either a quantization recipe or a quant_predicate, not both")
        recipe = quantize
    elif quantize not in (None, False, True):
        raise TypeError(f"quantize must be a bool or a recipe name, got {type(quantize).__name__}")
    default = QuantParams.for_mode(q_mode, q_group_size, q_bits) if quantize else None
    if not quantize and (q_bits is not None or q_group_size is not None or quant_predicate is not None):
        raise ConvertError("q_bits, q_group_size and quant_predicate need quantize=True (or a recipe name)")
    predicate: QuantPredicate | None
    if isinstance(quant_predicate, Mapping):
        predicate = regex_predicate(quant_predicate)
    elif quant_predicate is None or callable(quant_predicate):
        predicate = quant_predicate
    else:
        raise TypeError(
            "quant_predicate must be a callable (path, shape) -> bool | dict, or a {regex: ...} dict"
        )

    if Path(dest).expanduser().exists() and not overwrite:
        raise DestinationExistsError(
            f"{dest} already exists: pass overwrite=True to replace it, or pick another path"
        )
    source_dir = resolve_source(source, revision)
    destination = check_destination(source_dir, Path(dest), overwrite)

    with Checkpoint.open(source_dir) as checkpoint:
        config = dict(checkpoint.config) if checkpoint.config is not None else None
        if (
            default is not None
            and config is not None
            and ("quantization" in config or "quantization_config" in config)
        ):
            raise ConvertError(
                f"{source} is already quantized (config.json has a quantization block): "
                "dequantize it first with mlx_core.convert.dequantize"
            )
        names = {name: mapping.rename(name) for name in checkpoint.tensors}
        duplicates = [n for n, c in Counter(v for v in names.values() if v is not None).items() if c > 1]
        if duplicates:
            raise ConvertError(f"several source tensors map to {duplicates[0]!r}: fix the WeightMapping")
        if recipe is not None:
            assert default is not None
            predicate = _recipe_predicate(
                recipe, [n for n in names.values() if n], config, default.group_size
            )
        block: dict[str, Any] = default.to_dict() if default is not None else {}

        with atomic_directory(destination, overwrite) as tmp:
            writer = ShardWriter(tmp, shard_bytes)
            for info in checkpoint.stream("convert", quiet):
                out = names[info.name]
                if out is not None:
                    array = mapping.transform(out, checkpoint.read(info.name))
                    array = cast_floating(array, target)
                    _write(writer, out, array, default, predicate, block)
                    del array
            writer.finish()
            if default is not None:
                config = {} if config is None else config
                config["quantization"] = block
                config["quantization_config"] = dict(block)
            write_model_files(tmp, checkpoint, None if config is None else updated_config(config, target))
    return destination


def _write(
    writer: ShardWriter,
    name: str,
    array: mx.array,
    default: QuantParams | None,
    predicate: QuantPredicate | None,
    block: dict[str, Any],
) -> None:
    """Write one tensor, quantized (weight + scales [+ biases], one shard) when it qualifies."""
    if (
        default is not None
        and name.endswith(".weight")
        and array.ndim == 2
        and mx.issubdtype(array.dtype, mx.floating)
    ):
        path = name[: -len(".weight")]
        params, recorded = decide(path, tuple(array.shape), default, predicate)
        if params is not None:
            if recorded:
                block[path] = params.to_dict()
            parts = quantize_weight(array, params)
            writer.add_group([(f"{path}.{k}", v) for k, v in parts.items()])
            return
    writer.add(name, array)


def _recipe_predicate(
    recipe: str, names: list[str], config: dict[str, Any] | None, group_size: int
) -> QuantPredicate:
    """Build a mixed recipe for this checkpoint: find the layer-number position and the layer count."""
    down = next((n for n in names if "down_proj" in n), None)
    if down is None:
        raise ConvertError(
            f"recipe {recipe!r} needs layers with 'down_proj' weights; this checkpoint has none"
        )
    location = (
        next(i for i, part in enumerate(down.split(".")) if part.isdigit())
        if re.search(r"\.\d+\.", down)
        else 0
    )
    num_layers = None
    for section in (config or {}, (config or {}).get("text_config") or {}):
        if isinstance(section.get("num_hidden_layers"), int):
            num_layers = section["num_hidden_layers"]
            break
    if num_layers is None:
        indices = {
            int(n.split(".")[location])
            for n in names
            if len(n.split(".")) > location and n.split(".")[location].isdigit()
        }
        num_layers = max(indices) + 1 if indices else 1
    return mixed_recipe(recipe, num_layers, location, group_size)
