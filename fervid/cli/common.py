"""Flags shared by the commands that build a :class:`fervid.recognize.Recognizer` from the CLI."""
from __future__ import annotations

import argparse


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --min-confidence, --min-face and --classes, with one wording and one set of defaults."""
    p.add_argument("--model", metavar="MODEL",
                   help="a .onnx or .safetensors fervid model, or a training run folder (default: the bundled model)")
    p.add_argument("--min-confidence", type=float, default=0.6, metavar="P",
                   help="face detector score a face needs to be recognised, 0..1 (default: 0.6)")
    p.add_argument("--min-face", type=int, default=20, metavar="PX",
                   help="ignore faces smaller than this many pixels (default: 20)")
    p.add_argument("--classes", metavar="LIST",
                   help="comma list of the model's classes to choose among (others are dropped and the rest "
                   "renormalised; default: all)")
