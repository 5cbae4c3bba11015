"""Coerce raw sample arrays to validated float32 MLX arrays.

Integer PCM is scaled the way Whisper does it: int16 / 32768 (and int32 / 2**31, uint8 (x-128)/128), so
features computed from int16 buffers equal those computed from the float file read.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
from mlx_core.audio.errors import InvalidAudioError

_INT_SCALES: dict[Any, tuple[float, float]] = {
    np.dtype(np.int16): (0.0, 32768.0),
    np.dtype(np.int32): (0.0, 2147483648.0),
    np.dtype(np.uint8): (128.0, 128.0),
}
_MX_TO_NP = {mx.int16: np.dtype(np.int16), mx.int32: np.dtype(np.int32), mx.uint8: np.dtype(np.uint8)}
_MX_FLOATS = (mx.float32, mx.float16, mx.bfloat16, mx.float64)


def as_float_audio(
    audio: Any, *, ndims: tuple[int, ...] = (1, 2), name: str = "audio", check_finite: bool = True
) -> mx.array:
    """Return ``audio`` as a float32 ``mx.array`` ([T] or [B, T]) after validating it.

    Accepts ``mx.array``, numpy arrays and nested lists. Integer PCM (int16, int32, uint8) is scaled to
    [-1, 1). Raises :class:`InvalidAudioError` for empty input, NaN/inf samples, or an unexpected rank, and
    ``TypeError`` for dtypes that are not audio (bool, complex, int64).
    """
    if isinstance(audio, mx.array):
        if audio.dtype in _MX_TO_NP:
            offset, scale = _INT_SCALES[_MX_TO_NP[audio.dtype]]
            x = (audio.astype(mx.float32) - offset) / scale if offset else audio.astype(mx.float32) / scale
        elif audio.dtype in _MX_FLOATS:
            x = audio.astype(mx.float32)
        else:
            raise TypeError(
                f"{name} has dtype {audio.dtype}; pass float32/float16 samples or int16/int32 PCM"
            )
    else:
        arr = np.asarray(audio)
        if arr.dtype in _INT_SCALES:
            offset, scale = _INT_SCALES[arr.dtype]
            arr = ((arr.astype(np.float32) - offset) / scale) if offset else arr.astype(np.float32) / scale
        elif arr.dtype.kind == "f":
            arr = arr.astype(np.float32, copy=False)
        else:
            raise TypeError(f"{name} has dtype {arr.dtype}; pass float32/float64 samples or int16/int32 PCM")
        if check_finite and arr.size and not np.isfinite(arr).all():
            raise InvalidAudioError(
                f"{name} contains NaN or infinite samples; clean it first (e.g. np.nan_to_num) "
                "or find where the decoder/filter produced them"
            )
        x = mx.array(arr)
        check_finite = False
    if x.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise InvalidAudioError(f"{name} must be {want} ([T] or [B, T] samples); got shape {tuple(x.shape)}")
    if x.size == 0 or x.shape[-1] == 0:
        raise InvalidAudioError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one sample")
    if check_finite and _has_non_finite(x):
        raise InvalidAudioError(
            f"{name} contains NaN or infinite samples; clean it first (e.g. mx.nan_to_num) "
            "or find where the decoder/filter produced them"
        )
    return x


def _has_non_finite(x: mx.array) -> bool:
    """True if any sample is NaN/inf: sum(x * 0) is NaN exactly then (~4x cheaper than isfinite-all)."""
    try:
        return bool(mx.isnan(mx.sum(x * 0.0)).item())
    except ValueError:  # tracing under mx.compile / mx.vmap: values are not known yet
        return False
