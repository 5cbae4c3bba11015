"""Whisper log-mel of 30 s clips: mlx_core.audio vs a numpy reference vs librosa (+ Whisper's log step).

Runs on whatever ``mx.default_device()`` is (CPU here, GPU on CUDA machines). Prints median milliseconds
per call and per clip, and the ratio to librosa, for one clip and for a batch.

    uv run python benchmarks/audio.py            # batch of 32
    uv run python benchmarks/audio.py --quick    # batch of 4, fewer repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np
from mlx_core.audio import N_SAMPLES, log_mel_spectrogram, mel_filters


def numpy_log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper recipe in float32 numpy (strided frames, np.fft.rfft, dense filterbank)."""
    x = np.atleast_2d(audio).astype(np.float32)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)
    bank = np.array(mel_filters(16000, 400, n_mels))
    padded = np.pad(x, ((0, 0), (200, 200)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, 400, axis=-1)[:, ::160][:, :-1]
    spec = np.fft.rfft(frames * window, axis=-1)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    mel = np.einsum("mf,btf->bmt", bank, power, optimize=True)
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def librosa_log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """librosa.feature.melspectrogram with Whisper's parameters, then Whisper's log step."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio,
        sr=16000,
        n_fft=400,
        hop_length=160,
        n_mels=n_mels,
        window="hann",
        center=True,
        pad_mode="reflect",
        power=2.0,
    )[..., :-1]
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


def mlx_ops_log_mel(x: mx.array, bank_t: mx.array, window: mx.array) -> mx.array:
    """The anchors' GPU recipe in plain MLX ops: strided frames, rfft, |X|², dense matmul, Whisper's log.

    Reflect padding is left out (the input is padded beforehand), so this is a lower bound for plain ops.
    """
    t = x.shape[-1]
    n = (t - 400) // 160  # drops the last frame
    frames = mx.as_strided(x, (x.shape[0], n, 400), (t, 160, 1))
    spec = mx.fft.rfft(frames * window, axis=-1)
    mel = mx.matmul(mx.square(mx.abs(spec)), bank_t)
    log = mx.log10(mx.maximum(mel, 1e-10))
    return (mx.maximum(log, log.max() - 8.0) + 4.0) / 4.0


def interleaved_median_ms(
    fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) ms of each function; repeats run round-robin so load drift hits all alike.

    CPU time is the steadier figure on a shared machine (every contender here runs single-threaded).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return {name: (1e3 * statistics.median(wall[name]), 1e3 * statistics.median(cpu[name])) for name in fns}


def speech_like(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    voiced = (
        0.3
        * np.sin(2 * np.pi * (180 + 60 * np.sin(2 * np.pi * 0.7 * t)) * t)
        * (np.sin(2 * np.pi * 2 * t) > 0)
    )
    return (voiced + 0.02 * rng.standard_normal(n)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch and few repeats (smoke run)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 32, 4 with --quick)")
    parser.add_argument("--n-mels", type=int, default=80, choices=(80, 128))
    args = parser.parse_args()
    batch = args.batch or (4 if args.quick else 32)
    repeats = 5 if args.quick else 20
    device = mx.default_device()
    try:
        import librosa  # noqa: F401

        have_librosa = True
    except ImportError:
        have_librosa = False

    clips = np.stack([speech_like(N_SAMPLES, seed) for seed in range(batch)])
    print(f"device: {device}; Whisper log-mel, 30 s @ 16 kHz, {args.n_mels} mels; median of {repeats}")
    header = (
        f"{'case':<34}{'ms/call':>10}{'ms/clip':>10}{'vs librosa':>12}"
        f"{'cpu ms/clip':>13}{'cpu vs lib':>12}{'max|diff|':>12}"
    )
    print(header)
    print("-" * len(header))
    for label, data in (("single clip", clips[:1]), (f"batch of {batch}", clips)):
        n = data.shape[0]
        arr = data[0] if n == 1 else data
        x_mx = mx.array(arr)
        mx.eval(x_mx)
        ref = numpy_log_mel(arr, args.n_mels)
        ref = ref[0] if n == 1 else ref
        fns: dict[str, Callable[[], object]] = {}
        outs: dict[str, np.ndarray] = {}
        if have_librosa:
            fns["librosa + Whisper log"] = lambda arr=arr: librosa_log_mel(arr, args.n_mels)
            outs["librosa + Whisper log"] = librosa_log_mel(arr, args.n_mels)
        fns["numpy float32 reference"] = lambda arr=arr: numpy_log_mel(arr, args.n_mels)
        outs["numpy float32 reference"] = ref
        if device.type == mx.gpu:
            padded = mx.array(np.pad(np.atleast_2d(arr), ((0, 0), (200, 200)), mode="reflect"))
            bank_t = mx.array(np.array(mel_filters(16000, 400, args.n_mels)).T)
            hann = mx.array((0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32))
            name = "plain MLX ops (rfft + matmul)"
            fns[name] = lambda p=padded, b=bank_t, w=hann: mx.eval(mlx_ops_log_mel(p, b, w))
            out = np.array(mlx_ops_log_mel(padded, bank_t, hann)).transpose(0, 2, 1)
            outs[name] = out[0] if n == 1 else out
        for method in ("banded", "dense"):
            name = f"mlx_core.audio ({method})"
            fns[name] = lambda x_mx=x_mx, method=method: mx.eval(
                log_mel_spectrogram(x_mx, n_mels=args.n_mels, method=method)
            )
            outs[name] = np.array(log_mel_spectrogram(x_mx, n_mels=args.n_mels, method=method))
        if device.type == mx.gpu:
            # GPU contenders back to back, apart from the CPU references: interleaving them with 10-20 ms
            # of numpy work lets the GPU idle between calls and adds its wake-up time to every call.
            cpu_names = {"librosa + Whisper log", "numpy float32 reference"}
            timings = interleaved_median_ms({k: f for k, f in fns.items() if k in cpu_names}, repeats)
            timings |= interleaved_median_ms({k: f for k, f in fns.items() if k not in cpu_names}, repeats)
        else:
            timings = interleaved_median_ms(fns, repeats)
        base, base_cpu = timings.get("librosa + Whisper log", (None, None))
        print(f"[{label}]")
        for name, (ms, cpu_ms) in timings.items():
            ratio = f"{ms / base:.2f}x" if base else "n/a"
            cpu_ratio = f"{cpu_ms / base_cpu:.2f}x" if base_cpu else "n/a"
            diff = f"{np.abs(outs[name] - ref).max():.1e}"
            row = f"  {name:<32}{ms:>10.3f}{ms / n:>10.3f}{ratio:>12}"
            print(f"{row}{cpu_ms / n:>13.3f}{cpu_ratio:>12}{diff:>12}")
    print("targets: CPU within 1.5x of librosa; GPU < 0.3 ms per 30 s clip")


if __name__ == "__main__":
    main()
