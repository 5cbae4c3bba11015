"""``mlx-core convert``, ``mel`` and ``info`` end to end in subprocesses, and their bad-input paths."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_core.models import load_model, load_model_weights, quantize_like_checkpoint


def _one_line_error(done: Any, message: str) -> None:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert message in lines[0] and "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------------- convert
@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_models: tuple[Path, Path]) -> Path:
    """The tiny model re-saved as a Hugging Face checkpoint: HF names, an inv_freq buffer, untied head."""
    src = tmp_path_factory.mktemp("hf")
    model, _ = load_model_weights(tiny_models[0])
    weights = dict(tree_flatten(model.parameters()))
    weights["lm_head.weight"] = weights["model.embed_tokens.weight"]
    weights["model.layers.0.self_attn.rotary_emb.inv_freq"] = mx.ones((16,))
    mx.save_safetensors(str(src / "model.safetensors"), weights)
    config = json.loads((tiny_models[0] / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_models[0] / name, src / name)
    return src


@pytest.mark.slow
def test_convert_quantized_then_generate(
    cli: Callable[..., Any], hf_checkpoint: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "q4"
    done = cli("convert", str(hf_checkpoint), str(dest), "-q", "--q-bits", "4", "--q-group-size", "32")
    assert done.returncode == 0, done.stderr
    assert f"wrote {dest}" in done.stdout
    config = json.loads((dest / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32

    # Reference: the float checkpoint quantized in memory with nn.quantize gives the same logits.
    reference, _ = load_model_weights(hf_checkpoint)
    quantize_like_checkpoint(reference, {"group_size": 32, "bits": 4}, _all_scales(reference))
    converted, tokenizer = load_model(dest)
    assert converted.layers[0].mlp.up_proj.bits == 4
    tokens = mx.array([tokenizer.encode("The built-in function")])
    np.testing.assert_allclose(np.array(converted(tokens)), np.array(reference(tokens)), rtol=1e-5, atol=1e-5)

    generated = cli("generate", "--model", str(dest), "--max-tokens", "8")
    assert generated.returncode == 0, generated.stderr
    again = cli("convert", str(hf_checkpoint), str(dest), "--quiet")
    _one_line_error(again, "already exists")


def _all_scales(model: Any) -> dict[str, None]:
    """Pretend every quantizable module has scales, so quantize_like_checkpoint quantizes them all."""
    return {f"{path}.scales": None for path, _ in model.named_modules()}


def test_convert_bad_inputs(cli: Callable[..., Any], tmp_path: Path) -> None:
    _one_line_error(cli("convert", str(tmp_path / "missing"), str(tmp_path / "out")), "missing")
    _one_line_error(cli("convert", str(tmp_path), str(tmp_path / "o"), "--q-bits", "4"), "--quantize")


# ------------------------------------------------------------------------------------------------- mel
@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    soundfile = pytest.importorskip("soundfile")
    sr = 16000
    t = np.arange(sr) / sr
    rng = np.random.default_rng(0)
    audio = 0.4 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.05 * rng.standard_normal(sr)
    path = tmp_path_factory.mktemp("audio") / "chirp.wav"
    soundfile.write(path, audio.astype(np.float32), sr, subtype="PCM_16")
    return path


@pytest.mark.slow
def test_mel_whisper_npy_and_png(cli: Callable[..., Any], wav: Path, tmp_path: Path) -> None:
    from mlx_core.audio import load_audio, log_mel_spectrogram

    out = tmp_path / "chirp.npy"
    done = cli("mel", str(wav), "-o", str(out), "--n-mels", "128", "--png")
    assert done.returncode == 0, done.stderr
    mel = np.load(out)
    assert mel.shape == (128, 100) and mel.dtype == np.float32
    want = np.array(log_mel_spectrogram(load_audio(wav, sample_rate=16000), n_mels=128))
    np.testing.assert_allclose(mel, want, atol=1e-5)
    assert mel.max() > mel.min()  # a chirp, not silence
    pytest.importorskip("matplotlib")
    assert (tmp_path / "chirp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_mel_vocoder(cli: Callable[..., Any], wav: Path, tmp_path: Path) -> None:
    from mlx_core.audio import load_audio, vocoder_mel_spectrogram

    out = tmp_path / "v.npy"
    done = cli(
        "mel", str(wav), "-o", str(out), "--kind", "vocoder", "--sample-rate", "22050", "--n-mels", "80"
    )
    assert done.returncode == 0, done.stderr
    audio = load_audio(wav, sample_rate=22050)
    want = np.array(vocoder_mel_spectrogram(audio, sample_rate=22050, n_mels=80))
    np.testing.assert_allclose(np.load(out), want, atol=1e-5)


def test_mel_bad_inputs(cli: Callable[..., Any], tmp_path: Path) -> None:
    _one_line_error(cli("mel", str(tmp_path / "none.wav")), "not found")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all" * 10)
    _one_line_error(cli("mel", str(junk)), "junk.wav")


# ------------------------------------------------------------------------------------------------ info
def test_info_lists_every_package(cli: Callable[..., Any]) -> None:
    import mlx.core as mlx_core_array

    done = cli("info")
    assert done.returncode == 0, done.stderr
    names = {line.split()[0] for line in done.stdout.splitlines()}
    assert {"mlx-core", "mlx-core-cache", "mlx-core-spec", "mlx", "backend", "device"} <= names
    assert f"mlx                  {mlx_core_array.__version__}" in done.stdout


def test_unknown_command_is_one_line(cli: Callable[..., Any]) -> None:
    _one_line_error(cli("frobnicate"), "invalid choice")
