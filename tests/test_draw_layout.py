"""Annotations in crowded pictures: labels and panels never cover another face."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fervid.recognition.draw import draw_faces, layout

PROBS = {"angry": 0.1, "disgust": 0.05, "fear": 0.05, "happy": 0.5, "sad": 0.1, "surprise": 0.1, "neutral": 0.1}


@dataclass
class F:
    box: tuple[int, int, int, int]
    emotion: str = "happy"
    confidence: float = 0.5
    landmarks: list = field(default_factory=list)
    probabilities: dict = field(default_factory=lambda: dict(PROBS))


def _hits(r, box) -> bool:
    x, y, w, h = box
    return max(0, min(r[2], x + w) - max(r[0], x)) * max(0, min(r[3], y + h) - max(r[1], y)) > 0


def _grid(n_side: int, size: int, gap: int) -> list[F]:
    return [F((10 + c * (size + gap), 10 + r * (size + gap), size, size)) for r in range(n_side) for c in range(n_side)]


def test_no_label_or_panel_covers_another_face_in_a_crowd():
    for size, gap in ((60, 6), (90, 10), (140, 8), (45, 4)):
        faces = _grid(5, size, gap)
        shape = (20 + 5 * (size + gap), 20 + 5 * (size + gap), 3)
        texts = [f"{f.emotion} {f.confidence:.0%}" for f in faces]
        for i, where in enumerate(layout(faces, texts, shape)):
            others = [f.box for j, f in enumerate(faces) if j != i]
            assert not any(_hits(where.label, b) for b in others), (size, gap, i)
            assert where.panel is None or not any(_hits(where.panel, b) for b in others), (size, gap, i)


def test_label_shrinks_with_the_face_and_small_faces_get_no_panel():
    shape = (800, 1200, 3)
    small, big = F((50, 100, 40, 40)), F((400, 200, 300, 300))
    a, b = layout([small, big], ["happy 50%", "happy 50%"], shape)
    assert (a.label[3] - a.label[1]) < (b.label[3] - b.label[1])
    assert a.panel is None and b.panel is not None  # a lone big face has room beside it


def test_label_moves_away_from_a_neighbour_above():
    """A face right under another: its label goes where the neighbour is not (not above)."""
    top, below = F((100, 20, 120, 120)), F((100, 146, 120, 120))
    where = layout([top, below], ["happy 50%", "happy 50%"], (400, 400, 3), bars=False)[1]
    assert not _hits(where.label, top.box)


def test_draw_faces_draws_in_a_crowd():
    faces = _grid(5, 60, 6)
    img = np.full((360, 360, 3), 128, np.uint8)
    out = draw_faces(img, faces)
    assert out is img and (out != 128).any()
