"""Flags shared by the commands that recognise faces, declared once from
:class:`fervid.recognition.settings.RecognizerSettings` (which holds the defaults and checks the
values: a bad one is the same one-line error in every command)."""
from __future__ import annotations

import argparse

from ..recognition.settings import DETECT_SIZE, MIN_CONFIDENCE, MIN_FACE, PAD, RecognizerSettings


def add_prior_flag(p: argparse.ArgumentParser) -> None:
    """--prior: the class mix the probabilities are calibrated for (checked by fervid.calibrate)."""
    p.add_argument("--prior", default=None, metavar="fer2013|uniform|PATH",
                   help="class prior of the probabilities: fer2013 (as trained, default), uniform (every class "
                   "equally likely: divides by the training class frequencies and renormalises) or a JSON/CSV "
                   "file of class->weight")


def add_detector_flags(p: argparse.ArgumentParser) -> None:
    """--min-confidence, --min-face and --detect-size: what face detection keeps."""
    p.add_argument("--min-confidence", type=float, default=None, metavar="P",
                   help=f"face detector score a face needs to be recognised, 0..1 (default: {MIN_CONFIDENCE})")
    p.add_argument("--min-face", type=int, default=None, metavar="PX",
                   help=f"ignore faces smaller than this many pixels (default: {MIN_FACE})")
    p.add_argument("--detect-size", type=int, default=None, metavar="PX",
                   help="longest side, in pixels, images are shrunk to for face detection: smaller is faster "
                   f"but misses small faces sooner; larger images only (default: {DETECT_SIZE})")
    p.add_argument("--no-face-check", dest="face_check", action="store_false", default=None,
                   help="report every face the detector scores above --min-confidence, without fervid's second "
                   "look that turns away things that are not faces (headlights; see fervid/recognition/face_check.py)")


def add_recognizer_flags(p: argparse.ArgumentParser, threads: bool = True, detect: bool = False) -> None:
    """Every flag of :class:`RecognizerSettings`, with one wording and one set of defaults.

    ``threads=False`` for a command whose ``--threads`` means something else (``serve``);
    ``detect=True`` adds ``--no-detect`` and ``--pad`` (``predict``).
    """
    p.add_argument("--model", metavar="MODEL",
                   help="an exported .onnx (or its .json), a .safetensors model or a training run folder "
                   "(default: the model shipped with fervid)")
    add_detector_flags(p)
    p.add_argument("--classes", metavar="LIST",
                   help="comma list of the model's classes to choose among, e.g. happy,sad,neutral (others are "
                   "dropped and the probabilities renormalised; default: all)")
    add_prior_flag(p)
    if threads:
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help="ONNX Runtime threads (default: its own, all cores)")
    if detect:
        p.add_argument("--no-detect", action="store_true",
                       help="treat each image as one already cropped face (FER-style), no detection")
        p.add_argument("--pad", type=float, default=None,
                       help="padding (fraction of the image size) for a second detection pass on images "
                       f"where none was found, to give tightly cropped faces context (default: {PAD}; 0 = off)")


def recognizer_settings(args: argparse.Namespace, **overrides) -> RecognizerSettings:
    """The settings the flags give, checked (a bad value: one line, exit code 2)."""
    return RecognizerSettings.from_args(args, **overrides)
