"""Mel filterbanks equal to ``librosa.filters.mel`` (Slaney or HTK scale, Slaney or no normalisation).

``mel_scale="htk", norm=None`` is torchaudio's ``melscale_fbanks`` default (transposed). Banks are built in
float64 and rounded to float32 exactly as librosa does, then cached per parameter set. Each bank also has a
*banded* form: a mel band has only a handful of non-zero bins (~14 for Whisper), so applying it as
gather + weighted sum over those bins is ~10x cheaper than a dense matmul on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import mlx.core as mx
import numpy as np

_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _check_scale(mel_scale: str) -> None:
    if mel_scale not in ("slaney", "htk"):
        raise ValueError(f"mel_scale must be 'slaney' or 'htk'; got {mel_scale!r}")


def hz_to_mel(frequencies: np.ndarray | float, mel_scale: str = "slaney") -> np.ndarray:
    """Hz -> mel (float64), librosa's ``hz_to_mel``: Slaney (linear < 1 kHz, log above) or HTK."""
    _check_scale(mel_scale)
    f = np.asarray(frequencies, dtype=np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mels = f / _F_SP
    return np.where(
        f >= _MIN_LOG_HZ, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mels
    )


def mel_to_hz(mels: np.ndarray | float, mel_scale: str = "slaney") -> np.ndarray:
    """Mel -> Hz (float64), inverse of :func:`hz_to_mel`."""
    _check_scale(mel_scale)
    m = np.asarray(mels, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def _validate(sample_rate: float, n_fft: int, n_mels: int, fmin: float, fmax: float | None, norm: str | None):
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive; got {sample_rate}")
    if not isinstance(n_fft, (int, np.integer)) or n_fft < 2:
        raise ValueError(f"n_fft must be an int >= 2; got {n_fft!r}")
    if not isinstance(n_mels, (int, np.integer)) or n_mels < 1:
        raise ValueError(f"n_mels must be a positive int; got {n_mels!r}")
    top = sample_rate / 2.0 if fmax is None else fmax
    if not 0.0 <= fmin < top:
        raise ValueError(f"need 0 <= fmin < fmax; got fmin={fmin}, fmax={top}")
    if top > sample_rate / 2.0 + 1e-9:
        raise ValueError(f"fmax ({top}) must not exceed the Nyquist frequency ({sample_rate / 2.0})")
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None; got {norm!r}")


@lru_cache(maxsize=32)
def mel_filters_np(
    sample_rate: float,
    n_fft: int,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    mel_scale: str = "slaney",
    norm: str | None = "slaney",
) -> np.ndarray:
    """Read-only float32 numpy filterbank [n_mels, n_fft // 2 + 1]; see :func:`mel_filters`."""
    _check_scale(mel_scale)
    _validate(sample_rate, n_fft, n_mels, fmin, fmax, norm)
    fmax = float(sample_rate) / 2.0 if fmax is None else float(fmax)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = mel_to_hz(
        np.linspace(hz_to_mel(fmin, mel_scale), hz_to_mel(fmax, mel_scale), n_mels + 2), mel_scale
    )
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    if norm == "slaney":
        # Same float32 -> float64 -> float32 rounding path as librosa's in-place multiply.
        weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=32)
def _mel_filters_mx(key: tuple) -> mx.array:
    return mx.array(mel_filters_np(*key))


def mel_filters(
    sample_rate: float,
    n_fft: int,
    n_mels: int = 128,
    fmin: float = 0.0,
    fmax: float | None = None,
    mel_scale: str = "slaney",
    norm: str | None = "slaney",
) -> mx.array:
    """Mel filterbank [n_mels, n_fft // 2 + 1] (float32), equal to ``librosa.filters.mel``.

    ``mel_scale="htk"`` with ``norm=None`` reproduces torchaudio's default (transposed). Cached per
    parameter set, so repeated calls are free.
    """
    return _mel_filters_mx((float(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax, mel_scale, norm))


@dataclass(frozen=True)
class BandedFilterbank:
    """A filterbank as groups of consecutive mel bands, each padded to the group's widest band.

    Group g covers ``n_g`` bands; ``indices[g]`` [n_g * K_g] are the frequency bins to gather and
    ``weights[g]`` [n_g, K_g, 1] the matching weights (zero where a band is narrower than K_g).
    """

    n_mels: int
    n_freqs: int
    indices: tuple[mx.array, ...]
    weights: tuple[mx.array, ...]
    sizes: tuple[tuple[int, int], ...]  # (n_g, K_g) per group


def _group_bands(lo: np.ndarray, width: np.ndarray, overhead: int) -> list[tuple[int, int]]:
    """Split bands into contiguous groups minimising sum(n_g * K_g) + overhead per group (DP)."""
    m = len(width)
    best = np.full(m + 1, np.inf)
    best[0] = 0.0
    back = np.zeros(m + 1, dtype=np.int64)
    for end in range(1, m + 1):
        k = 0
        for start in range(end - 1, -1, -1):
            k = max(k, int(width[start]))
            cost = best[start] + (end - start) * k + overhead
            if cost < best[end]:
                best[end], back[end] = cost, start
    groups, end = [], m
    while end > 0:
        groups.append((int(back[end]), end))
        end = int(back[end])
    return groups[::-1]


def band_edges(bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last non-zero bin of each band of ``bank`` [n_mels, n_freqs] ((0, 0) if empty)."""
    nz = bank != 0
    has = nz.any(axis=1)
    lo = np.where(has, nz.argmax(axis=1), 0)
    hi = np.where(has, bank.shape[1] - nz[:, ::-1].argmax(axis=1), 0)
    return lo, hi


@lru_cache(maxsize=32)
def banded_filterbank(key: tuple, overhead: int = 64) -> BandedFilterbank:
    """Banded form of ``mel_filters(*key)``; exact (same products, zero padding adds exact zeros)."""
    fb = mel_filters_np(*key)
    n_mels, n_freqs = fb.shape
    lo, hi = band_edges(fb)
    hi = np.maximum(hi, lo + 1)  # an empty band keeps one (zero-weight) bin
    width = hi - lo
    indices, weights, sizes = [], [], []
    for start, end in _group_bands(lo, width, overhead):
        k = int(width[start:end].max())
        idx = lo[start:end, None] + np.arange(k)[None, :]
        valid = idx < hi[start:end, None]
        idx = np.where(valid, idx, lo[start:end, None])
        w = np.where(valid, np.take_along_axis(fb[start:end], idx, axis=1), 0.0).astype(np.float32)
        indices.append(mx.array(idx.reshape(-1).astype(np.int32)))
        weights.append(mx.array(w[:, :, None]))
        sizes.append((end - start, k))
    return BandedFilterbank(n_mels, n_freqs, tuple(indices), tuple(weights), tuple(sizes))
