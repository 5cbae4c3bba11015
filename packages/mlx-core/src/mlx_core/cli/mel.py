"""``mlx-core mel``: Whisper or vocoder log-mel features of an audio file, saved as ``.npy`` (and a PNG).

``--kind whisper`` (default): 16 kHz, 80 or 128 mels, Whisper's normalisation (``mlx_core.audio.
log_mel_spectrogram``). ``--kind vocoder``: HiFi-GAN/VITS style natural-log mel at ``--sample-rate``
(``vocoder_mel_spectrogram``). The array is saved as ``[n_mels, frames]`` float32. ``--png`` draws it with
matplotlib (install the ``plot`` extra: ``pip install 'mlx-core[plot]'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import CLIError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mel",
        help="log-mel spectrogram of an audio file to .npy (optionally a PNG)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("audio", help="audio file (WAV, FLAC, OGG, MP3, AIFF)")
    p.add_argument("-o", "--output", default=None, help="output .npy (default: the audio path with .npy)")
    p.add_argument("--kind", choices=["whisper", "vocoder"], default="whisper", help="feature type (whisper)")
    p.add_argument("--n-mels", type=int, default=None, help="mel bands (whisper: 80 or 128; vocoder: 100)")
    p.add_argument("--sample-rate", type=int, default=24000, help="vocoder sample rate (24000)")
    p.add_argument("--n-fft", type=int, default=1024, help="vocoder FFT size (1024)")
    p.add_argument("--hop-length", type=int, default=256, help="vocoder hop (256)")
    p.add_argument(
        "--pad-30s", action="store_true", help="whisper: pad/trim to 30 s (3000 frames) like Whisper"
    )
    p.add_argument("--png", nargs="?", const="", default=None, help="also draw a PNG (default name: .png)")
    p.set_defaults(func=run)


def compute(args: argparse.Namespace) -> Any:
    """The features as a numpy float32 array [n_mels, frames]."""
    import numpy as np
    from mlx_core.audio import (
        N_SAMPLES,
        SAMPLE_RATE,
        load_audio,
        log_mel_spectrogram,
        pad_or_trim,
        vocoder_mel_spectrogram,
    )

    if args.kind == "whisper":
        n_mels = 80 if args.n_mels is None else args.n_mels
        if n_mels not in (80, 128):
            raise CLIError(f"--n-mels for whisper features must be 80 or 128, got {n_mels}")
        audio = load_audio(args.audio, sample_rate=SAMPLE_RATE)
        if args.pad_30s:
            audio = pad_or_trim(audio, N_SAMPLES)
        mel = log_mel_spectrogram(audio, n_mels=n_mels)
    else:
        n_mels = 100 if args.n_mels is None else args.n_mels
        if n_mels < 1:
            raise CLIError(f"--n-mels must be positive, got {n_mels}")
        audio = load_audio(args.audio, sample_rate=args.sample_rate)
        mel = vocoder_mel_spectrogram(
            audio, sample_rate=args.sample_rate, n_fft=args.n_fft, hop_length=args.hop_length, n_mels=n_mels
        )
    return np.asarray(mel, dtype=np.float32)


def draw_png(mel: Any, path: Path, title: str, hop_seconds: float) -> None:
    """A spectrogram image: time on x (seconds), mel band on y, colour bar in the feature's units."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise CLIError("--png needs matplotlib: pip install 'mlx-core[plot]'") from err
    fig, ax = plt.subplots(figsize=(10, 3.5), dpi=100)
    frames = mel.shape[-1]
    image = ax.imshow(
        mel, origin="lower", aspect="auto", cmap="magma", extent=(0, frames * hop_seconds, 0, mel.shape[0])
    )
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, pad=0.01)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    source = Path(args.audio)
    if not source.is_file():
        raise CLIError(f"audio file not found: {args.audio}")
    output = Path(args.output) if args.output else source.with_suffix(".npy")
    if output.suffix != ".npy":
        raise CLIError(f"--output must end in .npy, got {output}")
    mel = compute(args)
    np.save(output, mel)
    print(f"wrote {output} {mel.shape[0]}x{mel.shape[1]} ({args.kind} log-mel, [n_mels, frames])")
    if args.png is not None:
        png = Path(args.png) if args.png else output.with_suffix(".png")
        hop = 160 / 16000 if args.kind == "whisper" else args.hop_length / args.sample_rate
        draw_png(mel, png, f"{source.name} — {args.kind} log-mel", hop)
        print(f"wrote {png}")
    return 0
