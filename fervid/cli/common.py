"""Flags shared by the commands that build a :class:`fervid.recognize.Recognizer` from the CLI."""
from __future__ import annotations

import argparse

#: fervid.detect.DETECT_SIZE, written out so building the parser imports no OpenCV
#: (tests/test_bench.py checks the two agree).
DETECT_SIZE_DEFAULT = 480


def detect_size(text: str) -> int:
    """--detect-size: a whole number of pixels, at least 64 (below that YuNet finds next to nothing)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if value < 64:
        raise argparse.ArgumentTypeError(f"must be at least 64 pixels, got {value}")
    return value


def add_detect_flags(p: argparse.ArgumentParser) -> None:
    """--detect-size: the speed/recall knob of face detection (see docs/benchmarks.md)."""
    p.add_argument("--detect-size", type=detect_size, default=None, metavar="PX",
                   help="longest side, in pixels, images are shrunk to for face detection: smaller is faster "
                   "but misses small faces sooner; larger images only (default: "
                   f"{DETECT_SIZE_DEFAULT})")
    p.add_argument("--no-face-check", dest="face_check", action="store_false", default=None,
                   help="report every face the detector scores above --min-confidence, without fervid's second "
                   "look that turns away things that are not faces (headlights, animals; see fervid/face_check.py)")


def add_prior_flag(p: argparse.ArgumentParser) -> None:
    """--prior: the class mix the probabilities are calibrated for (checked by fervid.calibrate)."""
    p.add_argument("--prior", default="fer2013", metavar="fer2013|uniform|PATH",
                   help="class prior of the probabilities: fer2013 (as trained, default), uniform (every class "
                   "equally likely: divides by the training class frequencies and renormalises) or a JSON/CSV "
                   "file of class->weight")


def add_model_flags(p: argparse.ArgumentParser) -> None:
    """--model, --min-confidence, --min-face, --classes and --detect-size, with one wording and defaults."""
    p.add_argument("--model", metavar="MODEL",
                   help="a .onnx or .safetensors fervid model, or a training run folder (default: the bundled model)")
    p.add_argument("--min-confidence", type=float, default=0.6, metavar="P",
                   help="face detector score a face needs to be recognised, 0..1 (default: 0.6)")
    p.add_argument("--min-face", type=int, default=20, metavar="PX",
                   help="ignore faces smaller than this many pixels (default: 20)")
    p.add_argument("--classes", metavar="LIST",
                   help="comma list of the model's classes to choose among (others are dropped and the rest "
                   "renormalised; default: all)")
    add_detect_flags(p)
    add_prior_flag(p)


def detect_kwargs(args: argparse.Namespace) -> dict:
    """``detect_size=...``, ``prior=...`` and ``face_check=False`` for ``Recognizer`` when the flags were given
    (else the library's defaults)."""
    size, prior = getattr(args, "detect_size", None), getattr(args, "prior", None)
    check = getattr(args, "face_check", None)
    return {**({} if size is None else {"detect_size": size}), **({} if prior is None else {"prior": prior}),
            **({} if check is None else {"face_check": bool(check)})}
