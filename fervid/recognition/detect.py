"""Face detection with YuNet (``cv2.FaceDetectorYN``): small, fast, and it gives eye landmarks.

YuNet ships with fervid (``assets/yunet.onnx``, MIT, OpenCV model zoo) and runs inside
OpenCV, so detection adds no dependency. Three things are done around it:

* YuNet's network runs in ONNX Runtime, with its box decoding and non-maximum suppression
  done here the way OpenCV's ``FaceDetectorYN`` does them (tests compare the two). Measured
  on a 640x480 frame, one thread: 18.7 ms in ONNX Runtime against 40.9 ms through OpenCV's
  DNN module (OpenCV 5.0), the largest single cost of video recognition.
* Large images are detected on a copy whose longer side is at most ``detect_size`` pixels
  and the boxes are mapped back: YuNet's cost grows with the pixel count, while a face
  smaller than ``min_face`` pixels is not worth classifying anyway.
* Small images are enlarged for detection (MIN_SIDE): YuNet misses faces that fill a tiny
  image far more often than it misses tightly cropped faces as such.
* When a frame yields no face, it is padded by ``pad`` of its size on every side
  (replicated border) and detected again, giving a tightly cropped face some context.
  Measured (bench/realfaces.py and FER PublicTest crops): the real-photo set (1,803 tight
  crops, mostly 350x350) has 99.9% of faces found with or without padding (pad 0, 0.1,
  0.2, 0.35 retry identical; padding every image first *lowers* it to 99.3-99.7%), and on
  raw 48x48 FER crops enlarged to 192 px a 0.1 retry finds 99.0% against 98.6%, larger
  pads less. Images with a face cost nothing extra.
* Each face gets a second look (``face_check``, :mod:`fervid.recognition.face_check`): in a colour image
  it must be found in the gray copy too, and its landmarks must be a possible face. It turns
  away headlights YuNet takes for faces (docs/bench/detection); a frame whose faces all fail it
  is retried with padding like a frame without any.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelFileError
from ..onnx_session import make_session
from .settings import DETECT_SIZE, MIN_CONFIDENCE, MIN_FACE, PAD, RecognizerSettings  # noqa: F401  (defaults)
from . import face_check

YUNET_PATH = Path(__file__).resolve().parent.parent / "assets" / "yunet.onnx"
#: Smaller images are enlarged to this longer side for detection: YuNet misses many faces
#: that fill a tiny image (500 raw 48x48 FER faces: 79.4% found as they are, 97.8% at
#: 96 px, 98.6% at 192 px, 99.8% at 256 px).
MIN_SIDE = 256
NMS_THRESHOLD = 0.3
#: YuNet's feature strides, and the multiple its input sides are padded to.
STRIDES = (8, 16, 32)
DIVISOR = 32
TOP_K = 5000


@dataclass
class Detection:
    """One face as the detector sees it, in the coordinates of the image given to ``detect``."""

    box: tuple[int, int, int, int]  # x, y, w, h
    score: float
    landmarks: list[tuple[float, float]] = field(default_factory=list)  # YuNet's 5 points
    #: Height of the detector's box before clipping to the image: the alignment's scale.
    face_size: float = 0.0


def decode(outputs: list[np.ndarray], pad_w: int, pad_h: int, score_threshold: float,
           nms_threshold: float = NMS_THRESHOLD, top_k: int = TOP_K) -> np.ndarray:
    """YuNet's 12 outputs (cls, obj, bbox, kps for strides 8, 16, 32) as rows of x, y, w, h,
    10 landmark coordinates and score, after non-maximum suppression: the same arithmetic as
    OpenCV's ``FaceDetectorYN`` (objdetect/src/face_detect.cpp), vectorised."""
    rows = []
    n = len(STRIDES)
    for i, stride in enumerate(STRIDES):
        cols = pad_w // stride
        cls, obj = outputs[i].reshape(-1), outputs[i + n].reshape(-1)
        score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
        keep = np.flatnonzero(score >= score_threshold)
        if not len(keep):
            continue
        bbox = outputs[i + 2 * n].reshape(-1, 4)[keep]
        kps = outputs[i + 3 * n].reshape(-1, 10)[keep]
        c = (keep % cols).astype(np.float32)[:, None]
        r = (keep // cols).astype(np.float32)[:, None]
        w = np.exp(bbox[:, 2:3]) * stride
        h = np.exp(bbox[:, 3:4]) * stride
        x1 = (c + bbox[:, 0:1]) * stride - w / 2
        y1 = (r + bbox[:, 1:2]) * stride - h / 2
        marks = np.empty_like(kps)
        marks[:, 0::2] = (kps[:, 0::2] + c) * stride
        marks[:, 1::2] = (kps[:, 1::2] + r) * stride
        rows.append(np.hstack([x1, y1, w, h, marks, score[keep, None]]).astype(np.float32))
    if not rows:
        return np.zeros((0, 15), np.float32)
    faces = np.concatenate(rows)
    if len(faces) > 1:
        boxes = [[int(x), int(y), int(w), int(h)] for x, y, w, h in faces[:, :4]]
        idx = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), score_threshold, nms_threshold, 1.0, top_k)
        faces = faces[np.asarray(idx, dtype=np.int64).reshape(-1)]
    return faces


class FaceDetector:
    """All faces of a BGR frame, above a confidence and a minimum size.

    ``detect_size``: longest side, in pixels, that images are shrunk to for detection.
    ``threads``: ONNX Runtime threads for YuNet (None: its default, all cores).
    Not thread-safe (it reuses its input buffer between frames); use one per thread.
    """

    def __init__(self, min_confidence: float = MIN_CONFIDENCE, min_face: int = MIN_FACE, detect_size: int = DETECT_SIZE,
                 pad: float = PAD, model: str | os.PathLike | None = None, threads: int | None = None,
                 face_check: bool = True):
        # Checked by the settings every front end uses: the same one-line errors.
        s = RecognizerSettings(min_confidence=min_confidence, min_face=min_face, detect_size=detect_size,
                               pad=pad, threads=threads, face_check=face_check)
        path = Path(model) if model else YUNET_PATH
        if not path.is_file():
            raise ModelFileError(f"{path}: face detector model not found")
        self.min_confidence, self.min_face, self.detect_size, self.pad = s.min_confidence, s.min_face, s.detect_size, s.pad
        self.face_check = s.face_check  # the second look of fervid.recognition.face_check
        try:
            self._session = make_session(path, s.threads)
        except Exception:
            raise ModelFileError(f"{path}: not a YuNet face detector model") from None
        names = [o.name for o in self._session.get_outputs()]
        self._outputs = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in STRIDES]
        if self._session.get_inputs()[0].shape[1] != 3 or not set(self._outputs) <= set(names):
            raise ModelFileError(f"{path}: not a YuNet face detector model (unexpected inputs/outputs)")
        self._input = self._session.get_inputs()[0].name
        self._blob: np.ndarray | None = None  # reused between frames of the same size

    @property
    def max_side(self) -> int:  # the name before detect_size existed
        return self.detect_size

    def _run(self, bgr: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Raw YuNet rows for one BGR uint8 image, in its pixel coordinates."""
        h, w = bgr.shape[:2]
        pad_h, pad_w = -(-h // DIVISOR) * DIVISOR, -(-w // DIVISOR) * DIVISOR
        if self._blob is None or self._blob.shape[2:] != (pad_h, pad_w):
            self._blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob = self._blob
        blob[0, :, :h, :w] = bgr.transpose(2, 0, 1)  # the padding stays 0, as in OpenCV
        if h < pad_h or w < pad_w:
            blob[0, :, h:, :] = 0
            blob[0, :, :, w:] = 0
        outputs = self._session.run(self._outputs, {self._input: blob})
        return decode(outputs, pad_w, pad_h, self.min_confidence if threshold is None else threshold)

    def _detect_scaled(self, bgr: np.ndarray, pad: float, threshold: float | None = None) -> np.ndarray:
        """Raw YuNet rows (x, y, w, h, 10 landmark coords, score) in ``bgr``'s coordinates."""
        h, w = bgr.shape[:2]
        p = int(round(pad * max(h, w))) if pad > 0 else 0
        img = cv2.copyMakeBorder(bgr, p, p, p, p, cv2.BORDER_REPLICATE) if p else bgr
        ph, pw = img.shape[:2]
        long = max(ph, pw)
        scale = self.detect_size / long if long > self.detect_size else (MIN_SIDE / long if long < MIN_SIDE else 1.0)
        if scale != 1.0:
            img = cv2.resize(img, (max(1, round(pw * scale)), max(1, round(ph * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rows = self._run(img, threshold).astype(np.float64)
        if len(rows):
            rows[:, :14] /= scale
            rows[:, [0, 4, 6, 8, 10, 12]] -= p
            rows[:, [1, 5, 7, 9, 11, 13]] -= p
        return rows

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces of a BGR (or gray / BGRA) uint8 image, largest first."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        elif image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        image = np.ascontiguousarray(image)
        gray = face_check.gray_copy(image) if self.face_check else None
        rows = self._detect_scaled(image, 0.0)
        out = self._faces(rows, image.shape, self._gray_rows(gray, rows, 0.0))
        # retry with padding when YuNet found nothing, or (face_check) nothing that passed the check
        if self.pad > 0 and (not len(rows) or (self.face_check and not out)):
            rows = self._detect_scaled(image, self.pad)
            out = self._faces(rows, image.shape, self._gray_rows(gray, rows, self.pad))
        out.sort(key=lambda d: -d.box[2] * d.box[3])
        return out

    def _gray_rows(self, gray: np.ndarray | None, rows: np.ndarray, pad: float) -> np.ndarray | None:
        """YuNet's rows on the gray copy (same pass), for face_check's gray look; None when not needed."""
        if gray is None or not ((rows[:, 14] >= self.min_confidence) & (rows[:, 14] < face_check.GRAY_BELOW)).any():
            return None
        return self._detect_scaled(gray, pad, min(face_check.GRAY_SCORE, self.min_confidence))

    def _faces(self, rows: np.ndarray, shape: tuple, gray_rows: np.ndarray | None = None) -> list[Detection]:
        """Detections of raw rows that pass the score, size and (``face_check``) the second look:
        plausible landmarks and, in a colour image (``gray_rows``), a face in its gray copy too."""
        h, w = shape[:2]
        out: list[Detection] = []
        for r in rows:
            x0, y0 = max(0.0, r[0]), max(0.0, r[1])
            x1, y1 = min(float(w), r[0] + r[2]), min(float(h), r[1] + r[3])
            bw, bh = int(round(x1 - x0)), int(round(y1 - y0))
            if r[14] < self.min_confidence or min(r[2], r[3]) < self.min_face or bw < 1 or bh < 1:
                continue
            marks = [(float(r[4 + 2 * i]), float(r[5 + 2 * i])) for i in range(5)]
            if self.face_check and not face_check.plausible(marks, float(r[3])):
                continue
            if (gray_rows is not None and r[14] < face_check.GRAY_BELOW
                    and face_check.gray_score(r, gray_rows) < face_check.GRAY_SCORE):
                continue
            out.append(Detection((int(round(x0)), int(round(y0)), bw, bh), float(r[14]), marks, float(r[3])))
        return out
