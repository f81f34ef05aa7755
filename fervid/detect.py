"""Face detection with YuNet (``cv2.FaceDetectorYN``): small, fast, and it gives eye landmarks.

YuNet ships with fervid (``assets/yunet.onnx``, MIT, OpenCV model zoo) and runs inside
OpenCV, so detection adds no dependency. Three things are done around it:

* Large images are detected on a copy whose longer side is at most ``max_side`` pixels
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
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .errors import ModelFileError

YUNET_PATH = Path(__file__).resolve().parent / "assets" / "yunet.onnx"
#: Longer image side YuNet runs at; larger images are shrunk for detection only.
MAX_SIDE = 640
#: Smaller images are enlarged to this longer side for detection: YuNet misses many faces
#: that fill a tiny image (500 raw 48x48 FER faces: 79.4% found as they are, 97.8% at
#: 96 px, 98.6% at 192 px, 99.8% at 256 px).
MIN_SIDE = 256
#: Padding (fraction of the image's size, per side) for the retry on frames with no face.
PAD = 0.1
NMS_THRESHOLD = 0.3


@dataclass
class Detection:
    """One face as the detector sees it, in the coordinates of the image given to ``detect``."""

    box: tuple[int, int, int, int]  # x, y, w, h
    score: float
    landmarks: list[tuple[float, float]] = field(default_factory=list)  # YuNet's 5 points
    #: Height of the detector's box before clipping to the image: the alignment's scale.
    face_size: float = 0.0


def _quiet_create(model: str, size: tuple[int, int], score: float, nms: float) -> cv2.FaceDetectorYN:
    """Create the detector without OpenCV 5's one-off backend warning on stderr."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    level = log.getLogLevel() if log else None
    try:
        if log:
            log.setLogLevel(log.LOG_LEVEL_ERROR)
        return cv2.FaceDetectorYN.create(model, "", size, score, nms, 5000)
    finally:
        if log and level is not None:
            log.setLogLevel(level)


class FaceDetector:
    """All faces of a BGR frame, above a confidence and a minimum size.

    Not thread-safe (OpenCV's detector keeps its input size); use one per thread.
    """

    def __init__(self, min_confidence: float = 0.6, min_face: int = 20, max_side: int = MAX_SIDE,
                 pad: float = PAD, model: str | os.PathLike | None = None):
        path = Path(model) if model else YUNET_PATH
        if not path.is_file():
            raise ModelFileError(f"{path}: face detector model not found")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.min_confidence = float(min_confidence)
        self.min_face = int(min_face)
        self.max_side = int(max_side)
        self.pad = float(pad)
        self._size = (320, 320)
        try:
            self._net = _quiet_create(str(path), self._size, self.min_confidence, NMS_THRESHOLD)
        except cv2.error:
            raise ModelFileError(f"{path}: not a YuNet face detector model") from None

    def _run(self, bgr: np.ndarray) -> np.ndarray:
        h, w = bgr.shape[:2]
        if (w, h) != self._size:
            self._net.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self._net.detect(bgr)
        return np.zeros((0, 15), np.float32) if faces is None else faces

    def _detect_scaled(self, bgr: np.ndarray, pad: float) -> np.ndarray:
        """Raw YuNet rows (x, y, w, h, 10 landmark coords, score) in ``bgr``'s coordinates."""
        h, w = bgr.shape[:2]
        p = int(round(pad * max(h, w))) if pad > 0 else 0
        img = cv2.copyMakeBorder(bgr, p, p, p, p, cv2.BORDER_REPLICATE) if p else bgr
        ph, pw = img.shape[:2]
        long = max(ph, pw)
        scale = self.max_side / long if long > self.max_side else (MIN_SIDE / long if long < MIN_SIDE else 1.0)
        if scale != 1.0:
            img = cv2.resize(img, (max(1, round(pw * scale)), max(1, round(ph * scale))),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        rows = self._run(img).astype(np.float64)
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
        rows = self._detect_scaled(image, 0.0)
        if not len(rows) and self.pad > 0:
            rows = self._detect_scaled(image, self.pad)
        h, w = image.shape[:2]
        out: list[Detection] = []
        for r in rows:
            x0, y0 = max(0.0, r[0]), max(0.0, r[1])
            x1, y1 = min(float(w), r[0] + r[2]), min(float(h), r[1] + r[3])
            bw, bh = int(round(x1 - x0)), int(round(y1 - y0))
            if r[14] < self.min_confidence or min(r[2], r[3]) < self.min_face or bw < 1 or bh < 1:
                continue
            marks = [(float(r[4 + 2 * i]), float(r[5 + 2 * i])) for i in range(5)]
            out.append(Detection((int(round(x0)), int(round(y0)), bw, bh), float(r[14]), marks, float(r[3])))
        out.sort(key=lambda d: -d.box[2] * d.box[3])
        return out
