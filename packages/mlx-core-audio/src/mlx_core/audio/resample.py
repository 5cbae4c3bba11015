"""Band-limited resampling with soxr (HQ): ~80 dB SNR, a few ms for 30 s of audio."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
import soxr
from mlx_core.audio.samples import as_float_audio


def resample(audio: Any, orig_sr: float, target_sr: float, quality: str = "HQ") -> Any:
    """Resample ``audio`` [T] or [C, T] along time from ``orig_sr`` to ``target_sr`` Hz.

    Returns the same kind it was given (``mx.array`` in -> ``mx.array`` out, numpy in -> numpy out),
    float32, length ``round(T * target_sr / orig_sr)``. ``quality`` is a soxr preset (QQ, LQ, MQ, HQ, VHQ).
    """
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive; got orig_sr={orig_sr}, target_sr={target_sr}")
    if quality not in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
        raise ValueError(f"quality must be one of QQ, LQ, MQ, HQ, VHQ; got {quality!r}")
    as_mx = isinstance(audio, mx.array)
    x = np.asarray(as_float_audio(audio))
    if orig_sr != target_sr:
        # soxr wants time first: [T] or [T, C].
        y = soxr.resample(np.ascontiguousarray(x.T), orig_sr, target_sr, quality=quality).T
    else:
        y = x
    y = np.ascontiguousarray(y, dtype=np.float32)
    return mx.array(y) if as_mx else y
