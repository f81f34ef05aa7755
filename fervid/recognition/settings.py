"""How recognition runs, declared and checked once for every front end.

``fervid predict``, ``video``, ``webcam``, ``serve`` and ``visualize``, the HTTP service and the
Python API (``Recognizer(min_confidence=...)``) all go through :class:`RecognizerSettings`: the
defaults live here, the flags are declared from here (:func:`fervid.cli.common.add_recognizer_flags`)
and a bad value is the same one-line error (``BadInputError``, exit code 2) whichever way it came.
Imports neither OpenCV nor ONNX Runtime, so building a command line stays light.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ..calibrate import DEFAULT_PRIOR
from ..errors import BadInputError

#: Face detector score a face needs (YuNet's, 0..1).
MIN_CONFIDENCE = 0.6
#: Smallest face side recognised, in pixels: below it there is too little to classify.
MIN_FACE = 20
#: Longer image side YuNet runs at by default; larger images are shrunk for detection only.
#: Chosen by measurement (docs/benchmarks.md): the real-photo set (bench/realfaces.py, mostly
#: 350 px) finds 99.9% of faces and scores 56.7% at 640, 480 and 320 alike; in 200 generated
#: 640x480 photos (500 pasted faces, 70-190 px) 640 finds 99.6%, 480 99.4%, 416 98.6%, 320 95.0%
#: (faces under 110 px: 99.1, 98.6, 96.8, 88.4%), while detection at 480 costs about half of 640
#: and 320 a quarter.
DETECT_SIZE = 480
#: Below this detection size YuNet finds next to nothing.
MIN_DETECT_SIZE = 64
#: Padding (fraction of the image's size, per side) for the retry on frames with no face.
PAD = 0.1


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _whole(value: Any) -> int | None:
    v = _number(value)
    return int(v) if v is not None and v == int(v) else None


@dataclass(frozen=True)
class RecognizerSettings:
    """Detector confidence, smallest face, detection size, classes, prior and threads of recognition.

    ``classes``: the model's classes to choose among (a comma string or a list; None: all).
    ``detect=False``: every image is one already cropped face. ``threads``: ONNX Runtime
    intra-op threads (None: its default). ``prior``: ``fer2013``, ``uniform`` or a class->weight
    file (checked against the model by :func:`fervid.calibrate.resolve_prior` when it loads).
    Each field is checked when the settings are made; the message names the command-line flag.
    """

    min_confidence: float = MIN_CONFIDENCE
    min_face: int = MIN_FACE
    detect_size: int = DETECT_SIZE
    classes: tuple[str, ...] | None = None
    prior: str = DEFAULT_PRIOR
    threads: int | None = None
    detect: bool = True
    pad: float = PAD
    #: The detector's second look at each face (fervid.recognition.face_check); False: YuNet's score alone.
    face_check: bool = True

    def __post_init__(self) -> None:
        conf = _number(self.min_confidence)
        if conf is None or not 0.0 <= conf <= 1.0:
            raise BadInputError(f"--min-confidence must be a number in [0, 1], got {self.min_confidence!r}")
        face = _whole(self.min_face)
        if face is None or face < 0:
            raise BadInputError(f"--min-face must be a whole number of pixels >= 0, got {self.min_face!r}")
        size = _whole(self.detect_size)
        if size is None or size < MIN_DETECT_SIZE:
            raise BadInputError(f"--detect-size must be at least {MIN_DETECT_SIZE} pixels, got {self.detect_size!r}")
        threads = None if self.threads is None else _whole(self.threads)
        if self.threads is not None and (threads is None or threads < 1):
            raise BadInputError(f"--threads must be a whole number >= 1, got {self.threads!r}")
        pad = _number(self.pad)
        if pad is None or not 0.0 <= pad < 1.0:
            raise BadInputError(f"--pad must be a number in [0, 1), got {self.pad!r}")
        classes = self.classes
        if isinstance(classes, str):
            classes = [c for c in classes.split(",")]
        if classes is not None:
            classes = tuple(str(c).strip().lower() for c in classes if str(c).strip()) or None
        prior = DEFAULT_PRIOR if self.prior is None or str(self.prior).strip() == "" else str(self.prior).strip()
        for name, value in (("min_confidence", conf), ("min_face", face), ("detect_size", size),
                            ("threads", threads), ("pad", pad), ("classes", classes), ("prior", prior),
                            ("detect", bool(self.detect)), ("face_check", bool(self.face_check))):
            object.__setattr__(self, name, value)

    def replace(self, **changes: Any) -> RecognizerSettings:
        """These settings with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_args(cls, args: Any, **overrides: Any) -> RecognizerSettings:
        """The settings a parsed command line gives: each flag the command has, else the default."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if getattr(args, f.name, None) is not None}
        if getattr(args, "no_detect", False):
            values["detect"] = False
        return cls(**{**values, **overrides})

    def detector_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`fervid.recognition.detect.FaceDetector` for these settings."""
        return {"min_confidence": self.min_confidence, "min_face": self.min_face, "detect_size": self.detect_size,
                "pad": self.pad, "threads": self.threads, "face_check": self.face_check}


def settings_of(settings: RecognizerSettings | None = None, **kwargs: Any) -> RecognizerSettings:
    """``settings``, or settings made from keyword arguments (``Recognizer(min_confidence=...)``)."""
    if settings is not None and kwargs:
        raise TypeError(f"give settings or {', '.join(sorted(kwargs))}, not both")
    return settings if settings is not None else RecognizerSettings(**kwargs)
