"""Drawing recognised faces on images and video frames: box, label, and per-class bars.

One colour per emotion, the same in every output (images, videos, webcam), so a viewer
learns them once. Sizes follow the face box, so labels stay legible on small and large
photos alike. Bars (one per class) are drawn only for faces big enough to hold them
beside the box without covering other content much.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

#: BGR colour per FER emotion; unknown class names get a stable grey-ish colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 240),
    "sad": (200, 110, 30), "surprise": (0, 140, 255), "neutral": (180, 180, 180),
}
#: Faces at least this wide (pixels) get per-class probability bars.
BARS_MIN_FACE = 120
FONT = cv2.FONT_HERSHEY_SIMPLEX


def color_for(emotion: str) -> tuple[int, int, int]:
    if emotion in COLORS:
        return COLORS[emotion]
    h = sum(map(ord, emotion))
    return (80 + h * 37 % 150, 80 + h * 61 % 150, 80 + h * 89 % 150)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color, thick: int,
          bg: tuple[int, int, int] | None = None) -> tuple[int, int]:
    """Put text with its baseline-left at ``org``; optional filled background. Returns its size."""
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
    x, y = org
    if bg is not None:
        cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), bg, -1)
    cv2.putText(img, text, (x, y), FONT, scale, color, thick, cv2.LINE_AA)
    return tw, th


def _ink_on(bg: Sequence[int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``bg``."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def draw_bars(img: np.ndarray, probabilities: dict[str, float], box: tuple[int, int, int, int],
              scale: float) -> None:
    """Per-class probability bars in a panel beside ``box`` (right if it fits, else left)."""
    h_img, w_img = img.shape[:2]
    x, y, w, h = box
    line = max(12, int(22 * scale))
    names = list(probabilities)
    label_w = max(cv2.getTextSize(n, FONT, 0.5 * scale, 1)[0][0] for n in names)
    bar_w = max(40, int(90 * scale))
    panel_w, panel_h = label_w + bar_w + 14, line * len(names) + 6
    px = x + w + 6 if x + w + 6 + panel_w <= w_img else max(0, x - 6 - panel_w)
    py = min(max(0, y), max(0, h_img - panel_h))
    roi = img[py:py + panel_h, px:px + panel_w]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)  # darken, keep a hint of the photo
    for i, name in enumerate(names):
        p = float(probabilities[name])
        ty = py + 3 + line * (i + 1) - max(3, line // 5)
        _text(img, name, (px + 4, ty), 0.5 * scale, (235, 235, 235), 1)
        bx = px + 8 + label_w
        top, bottom = ty - int(line * 0.6), ty
        cv2.rectangle(img, (bx, top), (bx + int(bar_w * p), bottom), color_for(name), -1)
        cv2.rectangle(img, (bx, top), (bx + bar_w, bottom), (120, 120, 120), 1)


def draw_faces(image: np.ndarray, faces: Iterable, labels: Sequence[str] | None = None, bars: bool = True,
               landmarks: bool = False, bars_min_face: int = BARS_MIN_FACE) -> np.ndarray:
    """Draw each :class:`~fervid.recognize.Face` on a BGR ``image`` in place and return it.

    ``labels`` replaces the default "emotion NN%" text per face (video adds track ids).
    A gray or BGRA image cannot take colour in place: a BGR copy is drawn on and returned.
    """
    img = image
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    for i, face in enumerate(faces):
        x, y, w, h = face.box
        col = color_for(face.emotion)
        scale = float(np.clip(w / 160, 0.5, 1.4))
        thick = max(1, int(round(w / 90)))
        cv2.rectangle(img, (x, y), (x + w, y + h), col, thick, cv2.LINE_AA)
        label = labels[i] if labels is not None else f"{face.emotion} {face.confidence:.0%}"
        (tw, th), _ = cv2.getTextSize(label, FONT, 0.6 * scale, max(1, thick // 2))
        ty = y - 6 if y - th - 8 >= 0 else y + th + 6
        _text(img, label, (x + 2, ty), 0.6 * scale, _ink_on(col), max(1, thick // 2), bg=col)
        if landmarks:
            for px, py in face.landmarks:
                cv2.circle(img, (int(round(px)), int(round(py))), max(1, thick), (0, 255, 0), -1, cv2.LINE_AA)
        if bars and w >= bars_min_face and face.probabilities:
            draw_bars(img, face.probabilities, face.box, scale)
    return img


def annotate(image: np.ndarray, faces: Iterable, **kw) -> np.ndarray:
    """A BGR copy of ``image`` with the faces drawn on it (see :func:`draw_faces`)."""
    return draw_faces(image.copy() if image.ndim == 3 and image.shape[2] == 3 else image, faces, **kw)
