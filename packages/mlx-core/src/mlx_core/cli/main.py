"""Entry point of the ``mlx-core`` command."""

from __future__ import annotations

import argparse
import sys
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


def _info(_: argparse.Namespace) -> int:
    import mlx.core as mx

    for dist in DISTRIBUTIONS:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"{dist:20s} {version}")
    print(f"{'mlx':20s} {mx.__version__}")
    print(f"{'device':20s} {mx.default_device()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlx-core", description="mlx-core command-line tools")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="versions of each mlx-core package, MLX, backend and device")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
