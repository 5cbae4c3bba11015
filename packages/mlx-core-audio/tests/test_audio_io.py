"""load_audio: formats, channel handling, integer scaling, and clear errors."""

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mlx_core.audio import (
    AudioDecodeError,
    UnsupportedAudioFormatError,
    load_audio,
    resample,
)

FIXTURE = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "jfk.flac"


@pytest.fixture(scope="module")
def jfk_path() -> Path:
    if not FIXTURE.exists():
        pytest.skip(f"fixture {FIXTURE} absent (CI keeps ../shared next to the clone)")
    return FIXTURE


def test_jfk_native_rate_channels_and_downmix(jfk_path: Path) -> None:
    raw, sr = sf.read(jfk_path, dtype="float32", always_2d=True)
    assert sr == 44100 and raw.shape[1] == 2
    stereo = np.array(load_audio(jfk_path, sample_rate=None, mono=False))
    np.testing.assert_array_equal(stereo, raw.T)
    mono16 = np.array(load_audio(jfk_path))
    ref = resample(raw.mean(axis=1, dtype=np.float32), 44100, 16000)  # downmix, then resample
    assert mono16.shape == (176000,)
    np.testing.assert_allclose(mono16, ref, atol=1e-6)
    both = np.array(load_audio(jfk_path, sample_rate=16000, mono=False))
    assert both.shape == (2, 176000)


@pytest.mark.parametrize(
    ("fmt", "subtype", "ext"),
    [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"), ("WAV", "FLOAT", "wav")],
)
def test_formats_round_trip(tmp_path: Path, fmt: str, subtype: str, ext: str) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 8000
    tones = np.stack([16000 * np.sin(2 * np.pi * 440 * t), 8000 * np.sin(2 * np.pi * 660 * t)], axis=1)
    pcm = (tones + rng.integers(-50, 50, size=(8000, 2))).astype(np.int16)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, pcm if subtype != "FLOAT" else pcm / 32768.0, 8000, format=fmt, subtype=subtype)
    got = np.array(load_audio(path, sample_rate=None))
    want = (pcm / 32768.0).mean(axis=1)
    if subtype == "VORBIS":  # lossy: compare energy only
        assert np.std(got) == pytest.approx(np.std(want), rel=0.05)
    else:
        np.testing.assert_allclose(got, want, atol=1e-6)  # int16 PCM maps to float by /32768


def test_file_object(tmp_path: Path) -> None:
    buf = io.BytesIO()
    x = (0.25 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    sf.write(buf, x, 16000, format="WAV", subtype="FLOAT")
    buf.seek(0)
    np.testing.assert_array_equal(np.array(load_audio(buf)), x)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_audio(tmp_path / "nope.wav")


@pytest.mark.parametrize("ext", ["m4a", "aac", "xyz"])
def test_unsupported_format_names_ffmpeg(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"clip.{ext}"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))
    with pytest.raises(UnsupportedAudioFormatError, match="ffmpeg") as info:
        load_audio(path)
    if ext == "m4a":
        assert "M4A" in str(info.value)


@pytest.mark.parametrize("payload", [b"RIFF\x10\x00\x00\x00WAVEfmt garbage", b"not audio at all" * 20, b""])
def test_corrupt_file(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(payload)
    with pytest.raises(AudioDecodeError, match=r"broken\.wav"):
        load_audio(path)


def test_truncated_flac(tmp_path: Path) -> None:
    path = tmp_path / "cut.flac"
    sf.write(path, np.zeros((4000, 1), np.float32) + 0.1, 8000, format="FLAC")
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(AudioDecodeError, match=r"cut\.flac"):
        load_audio(path)
