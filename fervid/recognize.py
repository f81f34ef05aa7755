"""Recognising expressions in images: detect faces, align them, classify them in one batch.

This is the library behind ``fervid predict``, the video and webcam commands and the Python
API (``from fervid import Recognizer``). It runs on ONNX Runtime and OpenCV only, so a
user who just wants predictions never installs PyTorch; a ``.safetensors`` model is
converted to ONNX in memory when PyTorch happens to be there.
"""
from __future__ import annotations

import io
import json
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from .calibrate import DEFAULT_PRIOR, apply_prior, resolve_prior
from .cvlog import quiet_opencv
from .detect import DETECT_SIZE, PAD, Detection, FaceDetector
from .errors import BadInputError, ModelFileError
from .preprocess import FACE_SIZE, crop_detections, to_gray

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "model.onnx"
META_KEY = "fervid"
MODEL_FORMAT = "fervid-model"


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


# --- images ---------------------------------------------------------------------------------

def _looks_truncated(data: bytes) -> bool:
    """True for a JPEG whose last scan has no end marker, or a PNG without its IEND chunk.

    Some OpenCV builds decode such files into a half-grey image with only a warning; a
    prediction on half an image is worse than an error.
    """
    if data[:2] == b"\xff\xd8":
        sos = data.rfind(b"\xff\xda")
        return sos < 0 or data.rfind(b"\xff\xd9") < sos
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


#: Largest image :func:`read_image` decodes, in pixels (a 10,000 x 10,000 photo is 100 million).
#: Checked from the header before decoding, so a small file whose header claims gigapixels (a
#: decompression bomb) costs nothing; OpenCV's own limit (2^30) would still cost 3 GB first.
MAX_PIXELS = 150_000_000


def header_size(data: bytes, strict: bool = False) -> tuple[int, int] | None:
    """(width, height) from an image's header, without decoding pixels.

    None when Pillow is missing or cannot parse the format (OpenCV then decides alone), or,
    with ``strict``, ``ValueError`` for a header Pillow cannot read (the service refuses
    those). Raises ``OverflowError(limit)`` for a header beyond Pillow's own hard limit,
    whose size Pillow does not report.
    """
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it OpenCV's limit applies
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: MAX_PIXELS is the limit here
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Image.DecompressionBombError:
            raise OverflowError(2 * (Image.MAX_IMAGE_PIXELS or 0)) from None
        except Exception:  # a format (or a header) Pillow cannot read: let OpenCV try
            if strict:
                raise ValueError("image header cannot be read") from None
            return None


#: Largest image file :func:`read_image` reads, in bytes (``--max-image-mb``). An uncompressed 8-bit
#: RGB image of MAX_PIXELS is 450 MB; photos are a few MB. Checked with ``stat`` before reading.
MAX_IMAGE_BYTES = 256_000_000

#: First bytes of every format OpenCV decodes (JPEG, PNG, BMP, TIFF, WebP, GIF, PNM, PFM, JPEG 2000,
#: OpenEXR, Radiance HDR, Sun raster, AVIF/HEIF): anything else is refused from its first bytes.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a",
                b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xffO\xffQ", b"v/1\x01", b"#?RADIANCE", b"#?RGBE",
                b"\x59\xa6\x6a\x95", b"PF\n", b"Pf\n", b"PF\r", b"Pf\r")


def image_head_problem(head: bytes) -> str | None:
    """Why the first bytes of a file cannot start an image OpenCV decodes, or None.

    Decided from the header alone, so a large file that is no image (a 2 GB file of zeros
    named ``.jpg``) is refused after reading 64 KB of it.
    """
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    if head[4:8] == b"ftyp":
        return None
    if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return None
    return "not an image OpenCV can decode (no image header: unsupported format, or not an image)"


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES,
               flag: str = "") -> np.ndarray:
    """Read an image file as BGR uint8, or raise BadInputError naming the file and the problem.

    EXIF orientation is applied (as viewers do), 16-bit images are scaled to 8 bits, palette,
    gray and alpha images become BGR; for animated images, the first frame. Only regular
    files are opened, and the size and header are checked before the rest is read
    (``max_bytes``; ``flag`` names the option that raises it in the message).
    """
    from .io import read_input

    p = Path(path)
    return decode_image(read_input(p, max_bytes, "an image", flag, check_head=image_head_problem), p, max_pixels)


def decode_image(data: bytes, name: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The checks and decoding of :func:`read_image` for bytes already read (from object storage,
    a Ray dataset's ``bytes`` column); ``name`` is what error messages call the image."""
    p = name
    problem = image_head_problem(data[:64]) if data else None
    if problem:
        raise BadInputError(f"{p}: {problem}")
    if not data:
        raise BadInputError(f"{p}: empty file (0 bytes)")
    if _looks_truncated(data):
        raise BadInputError(f"{p}: truncated image file")
    try:
        size = header_size(data)
    except OverflowError as e:
        raise BadInputError(f"{p}: image has over {e.args[0] / 1e6:.0f} megapixels (a decompression bomb?); "
                            f"fervid reads up to {max_pixels / 1e6:g} megapixels") from None
    if size is not None and size[0] * size[1] > max_pixels:
        raise BadInputError(f"{p}: image is {size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} megapixels; "
                            f"fervid reads up to {max_pixels / 1e6:g} megapixels")
    try:
        with quiet_opencv():  # our one line replaces OpenCV's "[ERROR] can't read header"
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV's own size limit, or a decoder that throws instead of failing
        raise BadInputError(f"{p}: OpenCV cannot decode this image (too large, corrupt or unsupported)") from None
    if image is None or image.size == 0:
        raise BadInputError(f"{p}: not an image OpenCV can decode (corrupt or unsupported format)")
    return image


def as_bgr(image: Any, color: str = "bgr") -> np.ndarray:
    """Any supported image (path, numpy BGR/BGRA/RGB/gray, PIL.Image) as uint8 BGR or gray HxW."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if type(image).__module__.startswith("PIL."):
        mode = image.mode
        arr = np.asarray(image.convert("L" if mode in ("L", "I", "I;16", "F", "1") else "RGB"))
        return arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"unsupported image type {type(image).__name__} "
                            "(give a path, a numpy array or a PIL.Image)")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or min(arr.shape[:2]) < 1:
        raise BadInputError(f"unsupported image shape {arr.shape} (expected HxW, HxWx3 or HxWx4)")
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
            # float64 and NaN/inf mapped first: a float32 cast of large values overflows (with a warning)
            arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
            arr = np.clip(arr * 255.0 if arr.size and float(arr.max()) <= 1.0 else arr, 0, 255).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    if color.lower() not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', not {color!r}")
    if arr.ndim == 3 and color.lower() == "rgb":
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    return np.ascontiguousarray(arr)


# --- models ---------------------------------------------------------------------------------

def _check_meta(meta: Any, where: Path) -> dict[str, Any]:
    """The metadata, if it has the fields recognition relies on with usable types."""
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{where}: not a fervid model (no fervid metadata)")
    classes, version = meta.get("classes"), meta.get("version", 0)
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)):
        raise ModelFileError(f"{where}: not a fervid model (its metadata has no valid class list)")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{where}: not a fervid model (format version {version!r})")
    if version > 1:
        raise ModelFileError(f"{where}: model format v{version} is newer than this fervid reads")
    for key in ("mean", "std", "input_size"):
        value = meta.get(key, 1)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise ModelFileError(f"{where}: not a fervid model (metadata {key} {value!r})")
    return meta


def _is_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return 2 <= n <= len(data) - 8 and data[8:9] == b"{"


def open_model(model: str | os.PathLike | None, threads: int | None = None):
    """An ONNX Runtime session, the metadata and the resolved path of ``model``
    (see :class:`Recognizer`); ModelFileError for anything that is not a fervid model."""
    if model is None:
        if not DEFAULT_MODEL.is_file():
            raise ModelFileError(f"{DEFAULT_MODEL}: no default model is installed with this fervid; "
                                 "pass one with --model / Recognizer(model=...)")
        model = DEFAULT_MODEL
    p = Path(model).expanduser()
    if p.is_dir():
        found = [p / n for n in ("model.onnx", "best.onnx", "best.safetensors", "model.safetensors",
                                 "last.safetensors") if (p / n).is_file()]
        if not found:
            raise ModelFileError(f"{p}: folder holds no model (best.safetensors or model.onnx)")
        p = found[0]
    if not p.is_file():
        if p.exists() or p.is_symlink():  # a FIFO, a device, a link loop: say which, never open it
            from .io import stat_input

            try:
                stat_input(p, "a model file")
            except BadInputError as e:
                raise ModelFileError(str(e)) from None
        raise ModelFileError(f"{p}: no such model file")
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
    if _is_safetensors(data):
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ModelFileError(f"{p}: a .safetensors model needs PyTorch to run; export it to ONNX "
                                 "with `fervid export` where PyTorch is installed") from None
        from .export import export_in_memory

        data, meta = export_in_memory(p)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception:
        raise ModelFileError(f"{p}: not a fervid model (neither ONNX nor safetensors)") from None
    if meta is None:
        text = sess.get_modelmeta().custom_metadata_map.get(META_KEY)
        side = p.with_suffix(".json")
        try:
            if text is not None:
                meta = json.loads(text)
                meta = _with_file_info(meta, side, p)
            elif side.is_file():
                meta = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise ModelFileError(f"{p}: not a fervid model (damaged fervid metadata)") from None
    meta = _check_meta(meta, p)
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


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Recognizer:
    """Faces and their expressions in images.

    ``model``: None (the model shipped with fervid), an exported ``.onnx`` (or its
    ``.json``), a ``.safetensors`` fervid model or a training run folder.
    ``min_confidence``/``min_face``: detector score and smallest face side in pixels.
    ``classes``: restrict predictions to these classes (probabilities renormalised).
    ``detect=False``: every image is one already cropped face (FER-style).
    ``threads``: ONNX Runtime intra-op threads, classifier and detector (None: its default).
    ``detect_size``: longest side images are shrunk to for face detection (smaller: faster,
    but small faces are missed sooner).
    ``prior``: ``"fer2013"`` (probabilities as trained), ``"uniform"`` or a class->weight
    JSON/CSV file: the class mix the probabilities are re-weighted for (see :mod:`fervid.calibrate`).
    """

    def __init__(self, model: str | Path | None = None, *, min_confidence: float = 0.6, min_face: int = 20,
                 classes: Sequence[str] | str | None = None, detect: bool = True, threads: int | None = None,
                 pad: float = PAD, detect_size: int = DETECT_SIZE, prior: str | os.PathLike | None = DEFAULT_PRIOR):
        self._session, meta, self.model_path = open_model(model, threads)
        self.meta: dict[str, Any] = meta
        self.model_classes: list[str] = list(meta["classes"])
        inp = self._session.get_inputs()[0]  # shape and outputs checked by open_model
        self.input_size = int(meta.get("input_size", FACE_SIZE))
        self._input, self._output = inp.name, self._session.get_outputs()[0].name
        self._mean, self._std = float(meta.get("mean", 0.5)), float(meta.get("std", 0.289))
        if isinstance(classes, str):
            classes = [c for c in classes.split(",") if c.strip()]
        if classes:
            names = [c.strip().lower() for c in classes]
            unknown = [c for c in names if c not in self.model_classes]
            if unknown or len(set(names)) != len(names):
                raise BadInputError(f"unknown or repeated class(es) {', '.join(unknown) or ', '.join(names)}; "
                                    f"this model predicts {', '.join(self.model_classes)}")
            self.classes = names
        else:
            self.classes = list(self.model_classes)
        self._keep = np.array([self.model_classes.index(c) for c in self.classes])
        self.prior = DEFAULT_PRIOR if prior is None else str(prior)
        self._prior = resolve_prior(self.prior, self.model_classes, meta)
        self.detect_faces = bool(detect)
        self.detector = (FaceDetector(min_confidence, min_face, detect_size=detect_size, pad=pad, threads=threads)
                         if detect else None)

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
        x = (crops.astype(np.float32)[:, None] * (1.0 / 255.0) - self._mean) / self._std
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
        """Per-frame results of a video file or camera (see :mod:`fervid.video`)."""
        from .video import iter_video

        return iter_video(self, source, every=every, smoothing=smoothing, **kw)

    def __repr__(self) -> str:
        return (f"Recognizer({str(self.model_path)!r}, arch={self.meta.get('arch')!r}, "
                f"classes={self.classes}, detect={self.detect_faces}, prior={self.prior!r})")
