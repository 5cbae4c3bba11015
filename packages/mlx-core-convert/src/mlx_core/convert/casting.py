"""Target dtypes for conversion and the float-only cast applied to every tensor."""

from __future__ import annotations

import mlx.core as mx

from .errors import ConvertError

DTYPES: dict[str, mx.Dtype] = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}
"""Dtypes a checkpoint can be converted to, by the names config.json uses for them."""


def resolve_dtype(dtype: str | mx.Dtype | None) -> mx.Dtype | None:
    """Turn ``"float16"``/``"bfloat16"``/``"float32"`` (or the mx dtype itself) into an ``mx.Dtype``.

    ``None`` means "keep each tensor's stored dtype".
    """
    if dtype is None:
        return None
    if isinstance(dtype, mx.Dtype):
        if dtype in DTYPES.values():
            return dtype
        raise ConvertError(f"unsupported target dtype {dtype}: choose one of {', '.join(DTYPES)}")
    if isinstance(dtype, str):
        key = dtype.strip().lower().removeprefix("mx.").removeprefix("mlx.core.").removeprefix("torch.")
        key = {"fp16": "float16", "half": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(key, key)
        if key in DTYPES:
            return DTYPES[key]
        raise ConvertError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    raise TypeError(f"dtype must be a string such as 'float16' or an mx.Dtype, got {type(dtype).__name__}")


def dtype_name(dtype: mx.Dtype) -> str:
    """The config.json name of a float dtype (``mx.bfloat16`` -> ``"bfloat16"``)."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("mlx.core.")


def cast_floating(array: mx.array, dtype: mx.Dtype | None) -> mx.array:
    """Cast ``array`` to ``dtype`` if it is floating point; integer and bool tensors pass unchanged."""
    if dtype is None or array.dtype == dtype or not mx.issubdtype(array.dtype, mx.floating):
        return array
    return array.astype(dtype)
