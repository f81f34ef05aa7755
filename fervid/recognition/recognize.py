"""Recognising expressions in images: detect faces, align them, classify them in one batch.

This is the library behind ``fervid predict``, the video and webcam commands and the Python
API (``from fervid import Recognizer``). It runs on ONNX Runtime and OpenCV only, so a
user who just wants predictions never installs PyTorch; a ``.safetensors`` model is
converted to ONNX in memory when PyTorch happens to be there.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import modelfile
from ..calibrate import apply_prior, resolve_prior
from ..errors import BadInputError, ModelFileError
from ..images import as_bgr
from ..onnx_session import make_session
from ..preprocess import FACE_SIZE, crop_detections, normalize, to_gray
from ..probabilities import softmax
from .detect import Detection, FaceDetector
from .settings import RecognizerSettings, settings_of
from .video import iter_video

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL = ASSETS / "model.onnx"


@dataclass
class Face:
    """One recognised face. ``box`` is x, y, w, h in image pixels."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: list[tuple[float, float]]
    emotion: str
    confidence: float
    probabilities: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"box": [int(v) for v in self.box], "score": float(self.score),
                "landmarks": [[float(x), float(y)] for x, y in self.landmarks],
                "emotion": self.emotion, "confidence": float(self.confidence),
                "probabilities": {k: float(v) for k, v in self.probabilities.items()}}


# --- models ---------------------------------------------------------------------------------

def open_model(model: str | os.PathLike | None, threads: int | None = None):
    """An ONNX Runtime session, the metadata and the resolved path of ``model``
    (see :class:`Recognizer`); ModelFileError for anything that is not a fervid model."""
    if model is None:
        if not DEFAULT_MODEL.is_file():
            raise ModelFileError(f"{DEFAULT_MODEL}: no default model is installed with this fervid; "
                                 "pass one with --model / Recognizer(model=...)")
        model = DEFAULT_MODEL
    p = modelfile.resolve(model)
    if p.suffix.lower() == ".json":
        p = p.with_suffix(".onnx")
        if not p.is_file():
            raise ModelFileError(f"{p}: the ONNX model for this .json is missing")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelFileError(f"{p}: cannot read ({e.strerror})") from None
    if not data:
        raise ModelFileError(f"{p}: empty file (0 bytes)")
    meta: Any = None
    if modelfile.is_safetensors(data[:16]):
        if importlib.util.find_spec("torch") is None:
            raise ModelFileError(f"{p}: a .safetensors model needs PyTorch to run; export it to ONNX "
                                 "with `fervid export` where PyTorch is installed") from None
        from ..export import export_in_memory

        data, meta = export_in_memory(p)
    try:
        sess = make_session(data, threads)
    except Exception:
        raise ModelFileError(f"{p}: not a fervid model (neither ONNX nor safetensors)") from None
    if meta is None:
        text = sess.get_modelmeta().custom_metadata_map.get(modelfile.META_KEY)
        side = p.with_suffix(".json")
        try:
            if text is not None:
                meta = json.loads(text)
                meta = _with_file_info(meta, side, p)
            elif side.is_file():
                meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(f"{p}: not a fervid model (damaged fervid metadata)") from None
    meta = modelfile.check_meta(meta, p)
    _check_outputs(sess, meta, p)
    return sess, meta, p


def _with_file_info(meta: Any, side: Path, p: Path) -> Any:
    """``meta`` plus the sidecar's ``onnx`` block when the sidecar describes this very file.

    The metadata inside an ``.onnx`` is the model's, written before the graph was converted;
    what belongs to the file (int8 weights, the accuracy measured on it) is only known after,
    and lives in the sidecar. A sidecar that cannot be read changes nothing.
    """
    if not isinstance(meta, dict) or not side.is_file():
        return meta
    try:
        info = json.loads(side.read_text(encoding="utf-8")).get("onnx")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return meta
    if isinstance(info, dict) and info.get("file") == p.name:
        return {**meta, "onnx": info}
    return meta


def served_accuracy(meta: dict[str, Any]) -> float | None:
    """Validation accuracy of the file being run: the figure measured on the export itself
    (``onnx.metrics.val_acc``, e.g. after int8 quantisation) when recorded, else the training run's."""
    for metrics in ((meta.get("onnx") or {}).get("metrics"), meta.get("metrics")):
        if isinstance(metrics, dict):
            value = metrics.get("val_acc")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
    return None


def _check_outputs(sess: Any, meta: dict[str, Any], where: Path) -> None:
    """Run one blank face: the graph must run and give one logit per class the metadata names
    (a sidecar .json from another model would otherwise label the outputs wrongly, silently)."""
    inp = sess.get_inputs()[0]
    size = int(meta.get("input_size", FACE_SIZE))
    if len(inp.shape) != 4 or inp.shape[1:] != [1, size, size]:
        raise ModelFileError(f"{where}: not a fervid model (input shape {inp.shape}, "
                             f"expected [N, 1, {size}, {size}])")
    try:
        logits = sess.run([sess.get_outputs()[0].name], {inp.name: np.zeros((1, 1, size, size), np.float32)})[0]
    except Exception:
        raise ModelFileError(f"{where}: not a fervid model (it does not run on one {size}x{size} face)") from None
    n = len(meta["classes"])
    if np.shape(logits) != (1, n):
        outputs = np.shape(logits)[-1] if np.ndim(logits) else 0
        raise ModelFileError(f"{where}: its metadata lists {n} classes but the model has {outputs} outputs "
                             "(metadata of another model?)")


class Recognizer:
    """Faces and their expressions in images.

    ``model``: None (the model shipped with fervid), an exported ``.onnx`` (or its
    ``.json``), a ``.safetensors`` fervid model or a training run folder.
    ``settings``: a :class:`~fervid.recognition.settings.RecognizerSettings`, or its fields as
    keyword arguments (checked the same way, with the same one-line errors):
    ``min_confidence``/``min_face``: detector score and smallest face side in pixels.
    ``classes``: restrict predictions to these classes (probabilities renormalised).
    ``detect=False``: every image is one already cropped face (FER-style).
    ``threads``: ONNX Runtime intra-op threads, classifier and detector (None: its default).
    ``detect_size``: longest side images are shrunk to for face detection (smaller: faster,
    but small faces are missed sooner).
    ``prior``: ``"fer2013"`` (probabilities as trained), ``"uniform"`` or a class->weight
    JSON/CSV file: the class mix the probabilities are re-weighted for (see :mod:`fervid.calibrate`).
    ``face_check``: the detector's second look at each face (:mod:`fervid.recognition.face_check`);
    False reports everything YuNet scores above ``min_confidence``.
    """

    def __init__(self, model: str | Path | None = None, *, settings: RecognizerSettings | None = None,
                 min_confidence: float | None = None, min_face: int | None = None,
                 classes: Sequence[str] | str | None = None, detect: bool | None = None, threads: int | None = None,
                 pad: float | None = None, detect_size: int | None = None, prior: str | os.PathLike | None = None,
                 face_check: bool | None = None):
        given = {"min_confidence": min_confidence, "min_face": min_face, "classes": classes, "detect": detect,
                 "threads": threads, "pad": pad, "detect_size": detect_size, "face_check": face_check,
                 "prior": None if prior is None else str(prior)}
        # Checked before the model loads: a bad value costs nothing and reads as the CLI's error.
        settings = settings_of(settings, **{k: v for k, v in given.items() if v is not None})
        self.settings = settings
        self._session, meta, self.model_path = open_model(model, settings.threads)
        self.meta: dict[str, Any] = meta
        self.model_classes: list[str] = list(meta["classes"])
        inp = self._session.get_inputs()[0]  # shape and outputs checked by open_model
        self.input_size = int(meta.get("input_size", FACE_SIZE))
        self._input, self._output = inp.name, self._session.get_outputs()[0].name
        self._mean, self._std = float(meta.get("mean", 0.5)), float(meta.get("std", 0.289))
        if settings.classes:
            names = list(settings.classes)
            unknown = [c for c in names if c not in self.model_classes]
            if unknown or len(set(names)) != len(names):
                raise BadInputError(f"unknown or repeated class(es) {', '.join(unknown) or ', '.join(names)}; "
                                    f"this model predicts {', '.join(self.model_classes)}")
            self.classes = names
        else:
            self.classes = list(self.model_classes)
        self._keep = np.array([self.model_classes.index(c) for c in self.classes])
        self.prior = settings.prior
        self._prior = resolve_prior(self.prior, self.model_classes, meta)
        self.detect_faces = settings.detect
        self.detector = FaceDetector(**settings.detector_kwargs()) if settings.detect else None

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Faces in a BGR (or gray) image, largest first; the whole image when ``detect=False``."""
        if self.detector is None:
            h, w = image_bgr.shape[:2]
            return [Detection((0, 0, w, h), 1.0, [], float(h))]
        return self.detector.detect(image_bgr)

    def crops(self, gray: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        """The equalized ``input_size`` crops the classifier sees, uint8 [N, S, S]."""
        return crop_detections(gray, detections, self.input_size)

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Probabilities over ``self.classes`` for equalized uint8 crops [N, S, S], one ONNX call."""
        if not len(crops):
            return np.zeros((0, len(self.classes)), np.float32)
        x = normalize(crops, self._mean, self._std)
        logits = self._session.run([self._output], {self._input: x})[0]
        p = apply_prior(softmax(logits.astype(np.float64)), self._prior)[:, self._keep]
        return p / p.sum(axis=1, keepdims=True)

    def classify(self, gray: np.ndarray, detections: Sequence[Detection]) -> list[Face]:
        """Classify every detected face of one frame in a single batch."""
        gray = to_gray(gray)
        probs = self.probabilities(self.crops(gray, detections))
        faces = []
        for d, p in zip(detections, probs):
            k = int(p.argmax())
            faces.append(Face(tuple(int(v) for v in d.box), float(d.score), [tuple(map(float, pt)) for pt in d.landmarks],
                              self.classes[k], float(p[k]), {c: float(v) for c, v in zip(self.classes, p)}))
        return faces

    def predict(self, image: Any, color: str = "bgr") -> list[Face]:
        """Faces in ``image``: a path, numpy BGR/BGRA/gray (``color="rgb"`` for RGB) or PIL.Image."""
        img = as_bgr(image, color)
        return self.classify(to_gray(img), self.detect(img))

    def predict_video(self, source, every: int = 1, smoothing: float = 0.5, **kw):
        """Per-frame results of a video file or camera (see :mod:`fervid.recognition.video`)."""
        return iter_video(self, source, every=every, smoothing=smoothing, **kw)

    def __repr__(self) -> str:
        return (f"Recognizer({str(self.model_path)!r}, arch={self.meta.get('arch')!r}, "
                f"classes={self.classes}, detect={self.detect_faces}, prior={self.prior!r})")
