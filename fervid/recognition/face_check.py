"""A second look at each face YuNet reports, so that headlights (and, we hope, dogs) are not given feelings.

YuNet scores some things that are not human faces above fervid's detection threshold (0.6):
in the detection check set (tests/data/detection, bench/detection.py) a motorcycle headlight at
0.62 and 0.75, and a user met a dog at 0.87. Routes measured (figures: docs/bench/detection/)
on the check set, multi-face scenes composed from committed images, and the real-photo set
(../shared/datasets/realfaces, 1,803 tight crops of one face each):

* **A stricter score** cannot do it: the headlights score 0.62 and 0.75 while real faces score
  0.63, 0.68 and 0.72 (realfaces, tight crops; padding before detection does not raise them)
  and 0.64 and 0.70 (FER faces in a crowded scene). Any threshold that removes both headlights
  loses real faces, and none could remove the 0.87 dog.
* **Landmark geometry** (YuNet's five points): the headlight's points form an ordinary face (eyes
  level, mouth 1.1 eye distances below them, nose in between), so geometry does not reject it.
  It does reject configurations no face has (mouth above the eyes, mouth corners swapped, nose
  outside the eye-mouth band, eyes in one point); on every real face measured (realfaces'
  detections: eye distance 0.06-0.46 of the box height, mouth 0.73-5.5 eye distances below the
  eyes, mouth tilt -19 to 11 degrees) it is far inside BOUNDS. Kept as a cheap sanity check.
* **Face size against the image**: the headlight fills 6% of the image's longer side, like the
  faces in a street photo (5%); no threshold separates them.
* **Classifier-side check** with the expression model: its top probability on the headlight
  (0.39-0.42) is within that on real faces (0.37-0.76); no separation.
* **Re-detecting a crop around the face** at a standard scale: the headlight keeps its score
  (0.78 and 0.76), while some FER faces drop (0.78 to 0.07); worse than nothing.
* **A gray look** separates: a human face is a face without colour (FER-2013 and most of
  realfaces are gray), while the headlight's face-likeness is mostly its warm colour. In the gray
  copy of the image the headlights score 0.47 and 0.46, the colour faces of the check set and
  two street/people photos lose 0.01-0.07 (0.87 -> 0.80 the largest, a small face in a street
  photo). So a face found in a colour image must also be found, at the same place, in its gray
  copy with a score of at least GRAY_SCORE. Gray images are their own gray copy: for them the
  look changes nothing and costs nothing. Its price: a few dark, shadowed colour close-ups that
  YuNet barely finds in colour (0.63-0.80) and not in gray: 3 of realfaces' 1,803 photos at 0.5
  (5 at 0.55, 7 at 0.6; at 0.45 both headlights pass).

The check is the gray look plus the geometry sanity test. The gray look costs one more YuNet
pass on a colour image where a face scoring under GRAY_BELOW (0.9) was found: 640x480, one
thread, about 10 ms on top of 10 ms. ``FaceDetector(face_check=False)`` and
``--no-face-check`` turn it off, leaving YuNet's plain threshold (``--min-confidence``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

#: Score a face found in a colour image needs at the same place in the image's gray copy.
#: Headlights: 0.47 and 0.46 there; real colour faces in ordinary photos: 0.80 and above.
GRAY_SCORE = 0.5
#: Faces YuNet scores at least this high in colour skip the gray look: every false face met so far
#: scored less (headlights 0.62 and 0.75, a user's dog 0.87), and most faces in ordinary photos and
#: video score more, which spares them the extra YuNet pass (about as long as the first).
GRAY_BELOW = 0.9
#: Overlap (intersection over union) of a colour detection and a gray one for "the same place".
GRAY_IOU = 0.5
#: Mean absolute difference between colour channels below which an image counts as gray
#: (gray photos saved as colour JPEGs carry a little chroma noise).
GRAY_TOLERANCE = 1.0


def gray_copy(image: np.ndarray) -> np.ndarray | None:
    """The BGR image in gray, as 3 channels; None when it is already gray (nothing to look at)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return None
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 65536)))  # ~64k pixels suffice to tell
    sample = image[::step, ::step].astype(np.int16)
    if float(np.abs(sample[..., 0] - sample[..., 1]).mean() + np.abs(sample[..., 1] - sample[..., 2]).mean()) \
            <= GRAY_TOLERANCE:
        return None
    return cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def iou(a: Sequence[float], b: np.ndarray) -> np.ndarray:
    """Intersection over union of box ``a`` (x, y, w, h) with each row's box in ``b`` [N, >=4]."""
    b = np.atleast_2d(np.asarray(b, dtype=np.float64))
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[0] + a[2], b[:, 0] + b[:, 2]), np.minimum(a[1] + a[3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / np.maximum(a[2] * a[3] + b[:, 2] * b[:, 3] - inter, 1e-9)


def gray_score(row: Sequence[float], gray_rows: np.ndarray) -> float:
    """The best score YuNet gave, in the gray copy, to a face at ``row``'s place (0 if none)."""
    if not len(gray_rows):
        return 0.0
    match = iou(row[:4], gray_rows) >= GRAY_IOU
    return float(gray_rows[match, 14].max()) if match.any() else 0.0


@dataclass(frozen=True)
class Geometry:
    """YuNet's five points (right eye, left eye, nose, right and left mouth corner) in a frame
    where the eyes lie on the x axis at (-0.5, 0) and (0.5, 0): units of eye distance."""

    eye_ratio: float     # eye distance / face box height
    mouth_drop: float    # how far the mouth's centre lies below the eye line
    mouth_width: float   # distance between the mouth corners
    mouth_tilt: float    # degrees the mouth line turns against the eye line
    nose_depth: float    # nose's height below the eye line as a fraction of mouth_drop
    nose_x: float        # nose's sideways offset from the eyes' midpoint


def geometry(landmarks: Sequence[Sequence[float]], face_size: float) -> Geometry | None:
    """The :class:`Geometry` of a detection, or None when its eyes coincide."""
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    e = p[1] - p[0]
    dist = float(np.hypot(*e))
    if dist < 1e-6:
        return None
    rot = np.array([[e[0], e[1]], [-e[1], e[0]]]) / dist
    q = (p - (p[0] + p[1]) / 2) @ rot.T / dist
    mouth = (q[3] + q[4]) / 2
    m = q[4] - q[3]
    return Geometry(
        eye_ratio=dist / face_size if face_size > 0 else 0.0,
        mouth_drop=float(mouth[1]),
        mouth_width=float(np.hypot(*m)),
        mouth_tilt=float(np.degrees(np.arctan2(m[1], m[0]))),
        nose_depth=float(q[2][1] / mouth[1]) if mouth[1] > 1e-6 else float("nan"),
        nose_x=float(q[2][0]),
    )


#: Bounds of a face's geometry, far wider than every real face measured (realfaces' 1,803
#: detections, 0.1st-99.9th percentile: eye_ratio 0.09-0.45, mouth_drop 0.83-3.9, mouth_width
#: 0.61-0.94, mouth_tilt -7 to 6 degrees, nose_depth 0.42-0.78), to keep turned faces.
BOUNDS = {
    "eye_ratio": (0.05, 0.8),
    "mouth_drop": (0.3, 6.0),
    "mouth_width": (0.1, 3.0),
    "mouth_tilt": (-60.0, 60.0),
    "nose_depth": (0.0, 1.2),
}


def plausible(landmarks: Sequence[Sequence[float]], face_size: float) -> bool:
    """Whether five landmarks can belong to a face (see BOUNDS). No landmarks: True (nothing to judge)."""
    if landmarks is None or len(landmarks) != 5:
        return True
    g = geometry(landmarks, face_size)
    if g is None:
        return False
    return all(lo <= getattr(g, k) <= hi for k, (lo, hi) in BOUNDS.items())
