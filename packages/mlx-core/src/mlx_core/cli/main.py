"""Entry point of the ``mlx-core`` command: one subcommand per module, errors as one line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from . import convert, generate, info, mel
from .errors import CLIError

DEBUG_ENV = "MLX_CORE_DEBUG"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where to look) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="mlx-core", description="mlx-core command-line tools")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{generate,convert,mel,info}")
    generate.add_parser(sub)
    convert.add_parser(sub)
    mel.add_parser(sub)
    info.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; any error becomes ``mlx-core <cmd>: error: <message>`` on stderr and exit 1.

    Set ``MLX_CORE_DEBUG=1`` to see the traceback instead.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:
        if os.environ.get(DEBUG_ENV):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if not isinstance(err, (CLIError, ValueError, TypeError, OSError, RuntimeError, KeyError)):
            message = f"{type(err).__name__}: {message}"
        print(f"mlx-core {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
