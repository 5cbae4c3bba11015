"""Audio file loading through soundfile (libsndfile): WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...

Channels are downmixed *before* resampling (cheaper, and what Whisper/ffmpeg ``-ac 1`` does), and
resampling runs along time with soxr HQ.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import soundfile as sf
from mlx_core.audio.errors import AudioDecodeError, UnsupportedAudioFormatError
from mlx_core.audio.resample import resample

# Containers/codecs libsndfile cannot read, with the usual way out.
_NEEDS_FFMPEG = {
    ".m4a": "M4A (AAC/ALAC in MP4)",
    ".mp4": "MP4",
    ".aac": "AAC",
    ".alac": "ALAC",
    ".wma": "WMA",
    ".webm": "WebM",
    ".mkv": "Matroska",
    ".amr": "AMR",
    ".3gp": "3GP",
}


def _unsupported(name: str, what: str) -> UnsupportedAudioFormatError:
    return UnsupportedAudioFormatError(
        f"cannot read {name!r}: {what} is not supported by soundfile/libsndfile (it reads WAV, FLAC, OGG, "
        f"MP3, AIFF, ...). Decode it with ffmpeg first, e.g. `ffmpeg -i {Path(name).name} -ac 1 -ar 16000 "
        "out.wav`"
    )


def load_audio(file: str | os.PathLike | Any, sample_rate: int | None = 16000, mono: bool = True) -> mx.array:
    """Read an audio file -> float32 [T] (mono) or [channels, T], resampled to ``sample_rate``.

    ``file`` is a path or a binary file object. ``sample_rate=None`` keeps the file's rate. Integer PCM is
    scaled by soundfile like Whisper (int16 / 32768). Raises FileNotFoundError, UnsupportedAudioFormatError
    (e.g. M4A needs ffmpeg) or AudioDecodeError (corrupt/truncated/not audio).
    """
    name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "<file>")
    name = str(name)
    if isinstance(file, (str, os.PathLike)):
        if not os.path.exists(file):
            raise FileNotFoundError(f"audio file not found: {name!r}")
        ext = Path(name).suffix.lower()
        if ext in _NEEDS_FFMPEG:
            raise _unsupported(name, _NEEDS_FFMPEG[ext])
    try:
        data, file_sr = sf.read(file, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        ext = Path(name).suffix.lower().lstrip(".").upper()
        if ext and ext not in sf.available_formats() and ext not in ("OGA", "OPUS", "AIF", "AIFC"):
            raise _unsupported(name, f"the {ext} format") from err
        raise AudioDecodeError(
            f"could not decode {name!r} as audio ({err}); the file may be corrupt, truncated or not audio"
        ) from err
    if data.shape[0] == 0:
        raise AudioDecodeError(f"{name!r} decoded to zero samples; the file is empty or truncated")
    if not np.isfinite(data).all():
        raise AudioDecodeError(f"{name!r} decoded to NaN/inf samples; the file is corrupt")
    data = data.mean(axis=1, dtype=np.float32) if mono else data.T  # downmix before resampling
    if sample_rate is not None and sample_rate != file_sr:
        data = resample(data, file_sr, sample_rate)
    return mx.array(np.ascontiguousarray(data, dtype=np.float32))
