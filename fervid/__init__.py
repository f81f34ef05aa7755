"""fervid: facial expression recognition trained on FER-2013, from data to webcam."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import BadInputError, FervidError, ModelFileError  # noqa: E402

__all__ = ["__version__", "FervidError", "BadInputError", "ModelFileError"]
