"""``mlx-core info``: versions of each mlx-core package, MLX, the backend and the device."""

from __future__ import annotations

import argparse
import contextlib
import platform
from importlib import metadata

DISTRIBUTIONS = (
    "mlx-core",
    "mlx-core-cache",
    "mlx-core-attn",
    "mlx-core-kernels",
    "mlx-core-generate",
    "mlx-core-audio",
    "mlx-core-spec",
    "mlx-core-convert",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="versions of each mlx-core package, MLX, backend and device")
    p.set_defaults(func=run)


def backend_name() -> str:
    """``cuda``, ``metal`` or ``cpu``: what MLX's GPU means on this machine, if anything."""
    import mlx.core as mx

    if mx.cuda.is_available():
        return "cuda"
    if mx.metal.is_available():
        return "metal"
    return "cpu"


def run(_: argparse.Namespace) -> int:
    import mlx.core as mx

    for dist in DISTRIBUTIONS:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{dist:20s} {version}")
    print(f"{'mlx':20s} {getattr(mx, '__version__', metadata.version('mlx'))}")
    print(f"{'python':20s} {platform.python_version()}")
    print(f"{'backend':20s} {backend_name()}")
    device = mx.default_device()
    name = str(device)
    if device.type == mx.gpu:
        with contextlib.suppress(Exception):  # device_info is best effort
            name = f"{device} ({mx.device_info().get('device_name', 'gpu')})"
    print(f"{'device':20s} {name}")
    return 0
