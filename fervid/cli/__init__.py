"""The ``fervid`` command: a thin shell that parses flags and calls the library.

Each subcommand lives in its own module with ``register(subparsers)``; errors a user
can cause (``FervidError``) become one line on stderr and a non-zero exit code.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# Order here is the order of ``fervid --help``.
COMMANDS = ["predict", "video", "webcam", "serve", "train", "evaluate", "cv", "tune", "visualize", "plot",
            "export", "carry", "bench", "models"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fervid", description="Facial expression recognition: train on FER-2013, recognise faces "
        "in images, videos and webcams.")
    parser.add_argument("--version", action="version", version=f"fervid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith(__name__):
                continue  # command not built yet in this checkout
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import FervidError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FervidError as e:
        print(f"fervid {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"fervid {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
