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
            "export", "carry", "models"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="fervid", description="Facial expression recognition: train on FER-2013, recognise faces "
        "in images, videos and webcams.")
    parser.add_argument("--version", action="version", version=f"fervid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


# Optional dependencies and the extra that brings each. Recognition needs none of them, so the
# README's quick start installs without them; a command that does need one must then say what to
# install, in one line, wherever in the library the import happens to sit.
OPTIONAL_DEPENDENCIES = {
    "torch": ("PyTorch", "pip install torch==2.13.0 && pip install -e '.[train]'"),
    "sklearn": ("scikit-learn", "pip install -e '.[train]'"),
    "onnx": ("the onnx package", "pip install -e '.[train]'"),
    "optuna": ("Optuna", "pip install -e '.[tune]'"),
    "fastapi": ("FastAPI", "pip install -e '.[serve]'"),
    "uvicorn": ("uvicorn", "pip install -e '.[serve]'"),
    "multipart": ("python-multipart", "pip install -e '.[serve]'"),
    "PIL": ("Pillow", "pip install -e '.[serve]'"),
    "ray": ("Ray", "pip install -e '.[ray]'"),
    "pyarrow": ("pyarrow", "pip install -e '.[ray]'"),
}


def missing_dependency_message(e: ModuleNotFoundError) -> str | None:
    """One line naming the missing optional package and how to install it; None for anything else."""
    top = (e.name or "").split(".")[0]
    if top not in OPTIONAL_DEPENDENCIES:
        return None
    what, how = OPTIONAL_DEPENDENCIES[top]
    return f"this command needs {what}, which is not installed: {how}"


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
    except ModuleNotFoundError as e:
        message = missing_dependency_message(e)
        if message is None:
            raise  # a module fervid always needs is missing: a broken install, show it whole
        print(f"fervid {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fervid {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
