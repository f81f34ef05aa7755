"""fervid: facial expression recognition trained on FER-2013, from data to webcam."""
from __future__ import annotations

__version__ = "0.1.0"

from . import _moved  # noqa: E402
from .errors import BadInputError, FervidError, ModelFileError  # noqa: E402

_moved.install()  # fervid 0.1's module names (fervid.engine, ...) still import, with a warning

__all__ = ["__version__", "FervidError", "BadInputError", "ModelFileError", "Recognizer", "Face",
           "RecognizerSettings", "TrainConfig", "train", "load_faces", "ClassSet", "create_model"]

# The names the README's Python API uses, each from the package that does the job.
_LAZY = {"Recognizer": "recognition.recognize", "Face": "recognition.recognize",
         "RecognizerSettings": "recognition.settings", "TrainConfig": "training.config",
         "train": "training.engine", "load_faces": "data", "ClassSet": "classes", "create_model": "models"}


def __getattr__(name: str):
    # Imported on first use, so `import fervid` (and `fervid --help`) stay light: no OpenCV,
    # ONNX Runtime or model loading until a recognizer is asked for.
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
