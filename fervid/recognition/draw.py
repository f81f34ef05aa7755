"""Drawing recognised faces on images and video frames: box, label, and per-class bars.

One colour per emotion, the same in every output (images, videos, webcam), so a viewer
learns them once. Sizes follow the face box, so labels stay legible on small and large
photos alike. Bars (one per class) are drawn only for faces big enough to hold them
beside the box without covering other content much.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

#: BGR colour per FER emotion; unknown class names get a stable grey-ish colour.
COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (40, 40, 220), "disgust": (40, 140, 40), "fear": (160, 60, 160), "happy": (0, 200, 240),
    "sad": (200, 110, 30), "surprise": (0, 140, 255), "neutral": (180, 180, 180),
    "contempt": (120, 60, 0),  # FER+'s eighth class (the ferplus model)
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


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _outside(r: Rect, w_img: int, h_img: int) -> int:
    """Area of ``r`` beyond the image (text there is cut off)."""
    area = (r[2] - r[0]) * (r[3] - r[1])
    return area - _overlap(r, (0, 0, w_img, h_img))


def _cost(r: Rect, own: Rect, faces: list[Rect], placed: list[Rect], w_img: int, h_img: int) -> float:
    """How badly ``r`` collides: another face counts most (a label must not hide a face), then the
    image edge, then labels and panels already placed, then its own face (allowed, not liked)."""
    return (100.0 * sum(_overlap(r, f) for f in faces) + 50.0 * _outside(r, w_img, h_img)
            + 10.0 * sum(_overlap(r, q) for q in placed) + 1.0 * _overlap(r, own))


@dataclass
class Placement:
    """Where one face's label (and probability panel, or None) goes, and at what text scale."""

    label: Rect
    scale: float
    thick: int
    panel: Rect | None


def _panel_size(names: Sequence[str], scale: float) -> tuple[int, int, int, int]:
    line = max(12, int(22 * scale))
    label_w = max(cv2.getTextSize(n, FONT, 0.5 * scale, 1)[0][0] for n in names)
    bar_w = max(40, int(90 * scale))
    return label_w + bar_w + 14, line * len(names) + 6, line, label_w


def layout(faces: Sequence, labels: Sequence[str], shape: tuple[int, ...], bars: bool = True,
           bars_min_face: int = BARS_MIN_FACE) -> list[Placement]:
    """Place every face's label where it collides least, and its panel only where it covers no
    other face: in a crowd the boxes are the information, text must never hide a neighbour.

    Text shrinks with the face (a label is never much wider than its face allows), a label
    that fits nowhere free is shrunk once more before settling for the least-bad spot, and
    the probability panel is dropped for small faces and wherever it would cover another.
    """
    h_img, w_img = shape[:2]
    boxes: list[Rect] = [(int(f.box[0]), int(f.box[1]), int(f.box[0] + f.box[2]), int(f.box[1] + f.box[3]))
                         for f in faces]
    placed: list[Rect] = []
    # big faces first: their labels are read first and have the most room to lose
    order = sorted(range(len(boxes)), key=lambda i: -(boxes[i][2] - boxes[i][0]))
    result: dict[int, Placement] = {}
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        w = x1 - x0
        others = boxes[:i] + boxes[i + 1:]
        base = float(np.clip(w / 160, 0.3, 1.4))
        best: tuple[float, Rect, float, int] | None = None
        for scale in (base, max(0.3, base * 0.7)):
            thick = max(1, int(round(w / 90)) // 2) if scale == base else 1
            (tw, th), baseline = cv2.getTextSize(labels[i], FONT, 0.6 * scale, thick)
            lw, lh = tw + 4, th + baseline + 5
            spots = [(x0, y0 - lh), (x0, y1), (x1 - lw, y0 - lh), (x1 - lw, y1), (x0, y0), (x0, y1 - lh),
                     (x1, y0), (x0 - lw, y0)]
            for k, (lx, ly) in enumerate(spots):
                r = (lx, ly, lx + lw, ly + lh)
                c = _cost(r, boxes[i], others, placed, w_img, h_img) + 0.01 * k  # ties: the usual spot
                if best is None or c < best[0]:
                    best = (c, r, scale, thick)
            if best[0] < 1.0:  # free (or only touching its own face): no need to shrink
                break
        _, label, scale, thick = best
        placed.append(label)
        panel = None
        if bars and w >= bars_min_face and getattr(faces[i], "probabilities", None):
            pw, ph, _, _ = _panel_size(list(faces[i].probabilities), base)
            py = min(max(0, y0), max(0, h_img - ph))
            for r in ((x1 + 6, py, x1 + 6 + pw, py + ph), (x0 - 6 - pw, py, x0 - 6, py + ph),
                      (x0, y1 + 4, x0 + pw, y1 + 4 + ph), (x0, y0 - 4 - ph, x0 + pw, y0 - 4)):
                if _cost(r, boxes[i], others, placed, w_img, h_img) == 0:
                    panel = r
                    placed.append(r)
                    break
        result[i] = Placement(label, scale, thick, panel)
    return [result[i] for i in range(len(boxes))]


def draw_bars(img: np.ndarray, probabilities: dict[str, float], panel: Rect, scale: float) -> None:
    """Per-class probability bars in ``panel`` (from :func:`layout`), over a darkened patch of the photo."""
    px, py = panel[0], panel[1]
    _, panel_h, line, label_w = _panel_size(list(probabilities), scale)
    bar_w = panel[2] - panel[0] - label_w - 14
    roi = img[max(0, py):panel[3], max(0, px):panel[2]]
    roi[:] = (roi.astype(np.float32) * 0.35).astype(np.uint8)  # darken, keep a hint of the photo
    for i, name in enumerate(probabilities):
        p = float(probabilities[name])
        ty = py + 3 + line * (i + 1) - max(3, line // 5)
        _text(img, name, (px + 4, ty), 0.5 * scale, (235, 235, 235), 1)
        bx = px + 8 + label_w
        top, bottom = ty - int(line * 0.6), ty
        cv2.rectangle(img, (bx, top), (bx + int(bar_w * p), bottom), color_for(name), -1)
        cv2.rectangle(img, (bx, top), (bx + bar_w, bottom), (120, 120, 120), 1)


def draw_faces(image: np.ndarray, faces: Iterable, labels: Sequence[str] | None = None, bars: bool = True,
               landmarks: bool = False, bars_min_face: int = BARS_MIN_FACE) -> np.ndarray:
    """Draw each :class:`~fervid.recognition.recognize.Face` on a BGR ``image`` in place and return it.

    ``labels`` replaces the default "emotion NN%" text per face (video adds track ids).
    A gray or BGRA image cannot take colour in place: a BGR copy is drawn on and returned.
    Boxes are drawn first and text last, placed by :func:`layout`, so no label or panel is
    ever drawn over another face's box.
    """
    img = image
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    faces = list(faces)
    texts = list(labels) if labels is not None else [f"{f.emotion} {f.confidence:.0%}" for f in faces]
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(img, (x, y), (x + w, y + h), color_for(face.emotion), max(1, int(round(w / 90))), cv2.LINE_AA)
        if landmarks:
            for px, py in face.landmarks:
                cv2.circle(img, (int(round(px)), int(round(py))), max(1, int(round(w / 90))), (0, 255, 0), -1,
                           cv2.LINE_AA)
    for face, text, where in zip(faces, texts, layout(faces, texts, img.shape, bars, bars_min_face)):
        col = color_for(face.emotion)
        (_, th), _ = cv2.getTextSize(text, FONT, 0.6 * where.scale, where.thick)
        _text(img, text, (where.label[0] + 2, where.label[1] + th + 3), 0.6 * where.scale, _ink_on(col),
              where.thick, bg=col)
        if where.panel is not None:
            draw_bars(img, face.probabilities, where.panel, float(np.clip(face.box[2] / 160, 0.3, 1.4)))
    return img


def annotate(image: np.ndarray, faces: Iterable, **kw) -> np.ndarray:
    """A BGR copy of ``image`` with the faces drawn on it (see :func:`draw_faces`)."""
    return draw_faces(image.copy() if image.ndim == 3 and image.shape[2] == 3 else image, faces, **kw)
