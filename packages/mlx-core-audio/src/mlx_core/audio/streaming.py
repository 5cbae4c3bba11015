"""Streaming log-mel: feed chunks of any size, get exactly the frames the offline computation gives.

The extractor keeps a carry buffer of samples whose frames are not complete yet, builds the reflect pad
at the start once ``n_fft // 2 + 1`` samples have arrived and the one at the end on :meth:`flush`. Every
stage of the offline pipeline is per-frame, so frames computed in pieces are bit-identical to
``mel_spectrogram(all_audio, ..., log="log10", drop_last=...)`` with the same ``method``.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
from mlx_core.audio.errors import InvalidAudioError
from mlx_core.audio.filters import mel_filters
from mlx_core.audio.gpu import gpu_backend, gpu_mel_of_signal
from mlx_core.audio.mel import check_choice, finish_mel, power_spectrum_flat
from mlx_core.audio.samples import as_float_audio
from mlx_core.audio.stft import frame_signal
from mlx_core.audio.windows import window_array


class StreamingLogMel:
    """Incremental raw log10-mel (Whisper's before its max-8 / (x+4)/4 step), frames_first output.

    ``push(chunk)`` returns the new frames [n_new, n_mels] (possibly 0 rows); ``flush()`` ends the stream
    and returns the rest. Concatenated, they equal ``log_mel_spectrogram(audio, normalize=None,
    layout="frames_first")`` (Whisper defaults, ``drop_last=True``) bit for bit.
    """

    def __init__(
        self,
        n_mels: int = 80,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
        fmin: float = 0.0,
        fmax: float | None = None,
        log_floor: float = 1e-10,
        drop_last: bool = True,
        method: str = "banded",
    ) -> None:
        check_choice("method", method, ("banded", "dense"))
        self.key = (float(sample_rate), int(n_fft), int(n_mels), float(fmin), fmax, "slaney", "slaney")
        mel_filters(*self.key)
        if not isinstance(hop_length, int) or hop_length < 1:
            raise ValueError(f"hop_length must be a positive int; got {hop_length!r}")
        self.n_fft, self.hop, self.n_mels = int(n_fft), hop_length, int(n_mels)
        self.log_floor, self.drop_last, self.method = log_floor, drop_last, method
        self.window = mx.array(window_array("hann", self.n_fft, self.n_fft))
        self.reset()

    def reset(self) -> None:
        """Forget all audio; the next push starts a new stream."""
        self._pending = np.zeros(0, dtype=np.float32)  # raw samples before the left pad is built
        self._buf = np.zeros(0, dtype=np.float32)  # padded stream from the next frame's start on
        self._tail = np.zeros(0, dtype=np.float32)  # last n_fft // 2 + 1 raw samples (right reflect pad)
        self._started = False
        self._finished = False
        self.frames_emitted = 0

    def _frames(self, padded: np.ndarray, n_frames: int) -> mx.array:
        if n_frames <= 0:
            return mx.zeros((0, self.n_mels), dtype=mx.float32)
        backend = gpu_backend() if self.method == "banded" else None
        if backend is not None:  # the offline GPU kernels, so both give the same per-frame arithmetic
            rows = mx.array(padded)[None]
            mel = gpu_mel_of_signal(
                rows, self.window, self.key, self.hop, 0, False, n_frames, 2.0, 0.0, "log10", self.log_floor,
                True, backend,
            )  # fmt: skip
            return mel[0]
        frames = frame_signal(mx.array(padded), self.n_fft, self.hop, n_frames)
        spec = power_spectrum_flat(frames, self.window)
        return finish_mel(spec, self.key, 2.0, 0.0, "log10", self.log_floor, self.method).T

    def _emit(self) -> mx.array:
        n = 0 if len(self._buf) < self.n_fft else 1 + (len(self._buf) - self.n_fft) // self.hop
        if self.drop_last:  # never emit a frame that could turn out to be the (dropped) final one
            n = min(n, max((len(self._buf) + self.n_fft // 2 - self.n_fft) // self.hop, 0))
        out = self._frames(self._buf, n)
        self._buf = self._buf[n * self.hop :]
        self.frames_emitted += n
        return out

    def push(self, chunk: Any) -> mx.array:
        """Add samples [n] (float or int16/int32 PCM); return the frames they complete [k, n_mels]."""
        if self._finished:
            raise RuntimeError("stream already flushed; call reset() to start a new one")
        size = chunk.size if hasattr(chunk, "size") else np.size(chunk)
        if size == 0:
            return mx.zeros((0, self.n_mels), dtype=mx.float32)
        x = np.asarray(as_float_audio(chunk, ndims=(1,), name="chunk"))
        pad = self.n_fft // 2
        self._tail = np.concatenate([self._tail, x])[-(pad + 1) :]
        if not self._started:
            self._pending = np.concatenate([self._pending, x])
            if len(self._pending) <= pad:
                return mx.zeros((0, self.n_mels), dtype=mx.float32)
            self._buf = np.concatenate([self._pending[1 : pad + 1][::-1], self._pending])
            self._pending = np.zeros(0, dtype=np.float32)
            self._started = True
        else:
            self._buf = np.concatenate([self._buf, x])
        return self._emit()

    def flush(self) -> mx.array:
        """End the stream: add the right reflect pad and return the remaining frames [k, n_mels]."""
        if self._finished:
            raise RuntimeError("stream already flushed; call reset() to start a new one")
        pad = self.n_fft // 2
        if not self._started:
            raise InvalidAudioError(
                f"stream ended after {len(self._pending)} samples; reflect padding needs more than {pad}"
            )
        self._finished = True
        self._buf = np.concatenate([self._buf, self._tail[:-1][::-1][:pad]])
        n = 1 + (len(self._buf) - self.n_fft) // self.hop if len(self._buf) >= self.n_fft else 0
        if self.drop_last:
            n -= 1
        out = self._frames(self._buf, n)
        self.frames_emitted += max(n, 0)
        self._buf = self._buf[:0]
        return out
