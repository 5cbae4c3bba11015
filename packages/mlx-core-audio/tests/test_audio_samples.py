"""as_float_audio: integer PCM scaling like Whisper, and NaN/inf/empty/rank/dtype errors."""

import mlx.core as mx
import numpy as np
import pytest
from mlx_core.audio import InvalidAudioError, as_float_audio


@pytest.mark.parametrize("to_mx", [False, True])
def test_integer_pcm_scaling(to_mx: bool) -> None:
    pcm16 = np.array([-32768, -1, 0, 1, 16384, 32767], np.int16)
    pcm32 = pcm16.astype(np.int32) * 65536
    u8 = np.array([0, 128, 255], np.uint8)
    conv = (lambda a: mx.array(a)) if to_mx else (lambda a: a)
    np.testing.assert_array_equal(np.array(as_float_audio(conv(pcm16))), pcm16 / 32768.0)
    np.testing.assert_array_equal(np.array(as_float_audio(conv(pcm32))), pcm16 / 32768.0)
    np.testing.assert_array_equal(np.array(as_float_audio(conv(u8))), (u8.astype(np.float64) - 128) / 128)


@pytest.mark.parametrize("to_mx", [False, True])
def test_bad_samples_raise(to_mx: bool) -> None:
    conv = (lambda a: mx.array(a)) if to_mx else (lambda a: a)
    with pytest.raises(InvalidAudioError, match="NaN"):
        as_float_audio(conv(np.array([0.0, np.nan], np.float32)))
    with pytest.raises(InvalidAudioError, match="NaN or infinite"):
        as_float_audio(conv(np.array([0.0, np.inf], np.float32)))
    with pytest.raises(InvalidAudioError, match="empty"):
        as_float_audio(conv(np.zeros((2, 0), np.float32)))
    with pytest.raises(InvalidAudioError, match="1-D or 2-D"):
        as_float_audio(conv(np.float32(1.0)))
    with pytest.raises(TypeError, match="dtype"):
        as_float_audio(conv(np.array([True, False])))
