"""dequantize(): an MLX-quantized model directory back to float weights, streamed and atomic."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import mlx.core as mx

from .atomic import atomic_directory, check_destination
from .casting import cast_floating, resolve_dtype
from .checkpoint import Checkpoint
from .errors import ConvertError, DestinationExistsError
from .model_dir import updated_config, write_model_files
from .quantize import MODES, QuantParams, check_fits, dequantize_weight
from .safetensors_file import SAFETENSORS_DTYPES
from .source import resolve_source
from .writer import ShardWriter, parse_size


def dequantize(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    dtype: str | mx.Dtype | None = None,
    max_shard_size: int | str = "5GB",
    revision: str | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> Path:
    """Write a float copy of the quantized MLX model ``source`` at ``dest``.

    Each quantized layer ``P`` (``P.weight`` packed + ``P.scales`` [+ ``P.biases``]) becomes a float
    ``P.weight`` via ``mx.dequantize`` with the params config.json records for it (per-layer entry, else
    the top-level block, checked against the shapes). The weight dtype is ``dtype`` if given, else the
    affine scales' dtype, else the checkpoint's most common float dtype. The quantization block is removed
    from config.json. Streams and writes atomically like ``convert``. Returns the destination path.
    """
    target = resolve_dtype(dtype)
    shard_bytes = parse_size(max_shard_size)
    if Path(dest).expanduser().exists() and not overwrite:
        raise DestinationExistsError(
            f"{dest} already exists: pass overwrite=True to replace it, or pick another path"
        )
    source_dir = resolve_source(source, revision)
    destination = check_destination(source_dir, Path(dest), overwrite)

    with Checkpoint.open(source_dir) as checkpoint:
        config = dict(checkpoint.config or {})
        block = config.get("quantization") or config.get("quantization_config")
        layers = [n[: -len(".scales")] for n in checkpoint.tensors if n.endswith(".scales")]
        layers = [p for p in layers if f"{p}.weight" in checkpoint.tensors]
        if not isinstance(block, dict) or not layers:
            raise ConvertError(
                f"{source} is not an MLX-quantized model (config.json needs a 'quantization' block and the "
                "weights '<layer>.scales' tensors); nothing to dequantize"
            )
        mode = block.get("mode", "affine")
        if mode not in MODES:
            raise ConvertError(f"{source}: unknown quantization mode {mode!r} in config.json")
        default = QuantParams.for_mode(mode, block.get("group_size"), block.get("bits"))
        fallback = _common_float_dtype(checkpoint, set(layers))
        packed = set(layers)
        skip = {f"{p}.{s}" for p in layers for s in ("scales", "biases")}

        with atomic_directory(destination, overwrite) as tmp:
            writer = ShardWriter(tmp, shard_bytes)
            for info in checkpoint.stream("dequantize", quiet):
                name = info.name
                if name in skip:
                    continue
                if name.endswith(".weight") and name[: -len(".weight")] in packed:
                    layer = _dequantize_layer(
                        checkpoint, name[: -len(".weight")], block, default, target, fallback
                    )
                    writer.add(name, layer)
                else:
                    writer.add(name, cast_floating(checkpoint.read(name), target))
            writer.finish()
            config.pop("quantization", None)
            config.pop("quantization_config", None)
            write_model_files(tmp, checkpoint, updated_config(config, target))
    return destination


def _dequantize_layer(
    checkpoint: Checkpoint,
    path: str,
    block: dict[str, Any],
    default: QuantParams,
    target: mx.Dtype | None,
    fallback: mx.Dtype,
) -> mx.array:
    packed = checkpoint.read(f"{path}.weight")
    scales = checkpoint.read(f"{path}.scales")
    biases = checkpoint.read(f"{path}.biases") if f"{path}.biases" in checkpoint.tensors else None
    entry = block.get(path)
    if isinstance(entry, dict):
        params = QuantParams.for_mode(
            entry.get("mode", default.mode), entry.get("group_size"), entry.get("bits")
        )
    else:
        params = default
    check_fits(path, tuple(packed.shape), tuple(scales.shape), params)
    if params.mode == "affine" and biases is None:
        raise ConvertError(f"{path} is affine-quantized but {path}.biases is missing")
    dtype = target or (scales.dtype if mx.issubdtype(scales.dtype, mx.floating) else fallback)
    return dequantize_weight(packed, scales, biases, params, dtype=dtype)


def _common_float_dtype(checkpoint: Checkpoint, quantized: set[str]) -> mx.Dtype:
    """The most common float dtype among unquantized tensors (float16 when there is none)."""
    counts = Counter(
        info.dtype
        for name, info in checkpoint.tensors.items()
        if info.dtype in ("F16", "BF16", "F32") and name.rsplit(".", 1)[0] not in quantized
    )
    if not counts:
        return mx.float16
    return SAFETENSORS_DTYPES[counts.most_common(1)[0][0]][1]
