"""What ``fervid serve`` is told: upload limits, concurrency and the recognition settings.

:class:`ServeConfig` is checked when it is made (the recognition fields by
:class:`~fervid.recognition.settings.RecognizerSettings`, as every front end checks them), and
travels as JSON in ``FERVID_SERVE_CONFIG`` to the worker processes of ``--workers``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import BadInputError
from ..recognition.recognize import Recognizer
from ..recognition.settings import DETECT_SIZE, MIN_CONFIDENCE, MIN_FACE, RecognizerSettings

ENV_CONFIG = "FERVID_SERVE_CONFIG"


@dataclass
class ServeConfig:
    """Everything ``create_app`` can be told; JSON-serialisable for ``--workers``."""

    model: str | None = None
    max_upload_mb: float = 8.0
    max_pixels: int = 40_000_000
    max_batch_files: int = 16
    max_batch_mb: float = 32.0
    max_video_mb: float = 50.0
    max_video_seconds: float = 60.0
    #: Image requests (single or batch) received or processed at once; more get 503.
    max_uploads: int = 32
    #: Video requests received or processed at once (each streams to disk, then decodes); more get 503.
    max_video_uploads: int = 4
    #: Inference calls that may run at once in this process (default: the cores).
    concurrency: int | None = None
    min_confidence: float = MIN_CONFIDENCE
    min_face: int = MIN_FACE
    classes: list[str] | None = None
    #: Longest side images are shrunk to for face detection (None: fervid's default).
    detect_size: int | None = None
    #: Class prior of the probabilities: fer2013 (as trained), uniform or a class->weight file.
    prior: str = "fer2013"
    #: The detector's second look at each face (fervid.recognition.face_check); False: YuNet's score alone.
    face_check: bool = True

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_pixels", "max_batch_files", "max_batch_mb", "max_video_mb",
                     "max_video_seconds", "max_uploads", "max_video_uploads"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.concurrency is not None and self.concurrency < 1:
            raise BadInputError(f"concurrency must be >= 1, got {self.concurrency}")
        self.recognizer_settings()  # checked as every front end checks them

    def recognizer_settings(self) -> RecognizerSettings:
        """The recognition settings of each worker: one ONNX Runtime thread a request, as requests
        run in parallel."""
        return RecognizerSettings(min_confidence=self.min_confidence, min_face=self.min_face, classes=self.classes,
                                  detect_size=self.detect_size or DETECT_SIZE, prior=self.prior, threads=1,
                                  face_check=self.face_check)


def load_recognizer(config: ServeConfig) -> Any:
    """One ``Recognizer`` as ``config`` describes it (one ONNX Runtime thread: requests run in parallel)."""
    return Recognizer(config.model, settings=config.recognizer_settings())


def config_to_env(config: ServeConfig) -> str:
    return json.dumps(asdict(config))


def settings_of(config: ServeConfig) -> dict[str, Any]:
    """``create_app`` keyword arguments for ``config`` (all but the model)."""
    settings = asdict(config)
    settings.pop("model")
    return settings
