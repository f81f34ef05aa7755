"""The tracker on synthetic detections: identities across frames and EMA smoothing of labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from fervid.errors import BadInputError
from fervid.recognition.track import Tracker, centre_distance, iou

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


@dataclass
class FakeFace:
    box: tuple[int, int, int, int]
    probabilities: dict[str, float] = field(default_factory=lambda: {c: 1 / 7 for c in CLASSES})

    def to_dict(self) -> dict:
        return {"box": list(self.box)}


def probs(**kw: float) -> dict[str, float]:
    rest = (1.0 - sum(kw.values())) / (len(CLASSES) - len(kw))
    return {c: kw.get(c, rest) for c in CLASSES}


def test_iou_and_distance():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert centre_distance((0, 0, 10, 10), (10, 0, 10, 10)) == pytest.approx(1.0)
    assert centre_distance((0, 0, 100, 100), (10, 0, 100, 100)) == pytest.approx(0.1)


def test_two_moving_faces_keep_their_ids_in_any_order():
    rng = np.random.default_rng(0)
    tr = Tracker(CLASSES, smoothing=0.5)
    seen: dict[str, set[int]] = {"left": set(), "right": set()}
    for t in range(40):
        left = FakeFace((20 + 6 * t, 100 + 2 * t, 120, 120))  # walks right
        right = FakeFace((500 - 5 * t, 120, 110, 110))  # walks left; they stay apart vertically
        faces = [left, right] if rng.random() < 0.5 else [right, left]
        out = tr.update(faces)
        assert [o.face for o in out] == faces  # results come back in input order
        for o in out:
            seen["left" if o.face is left else "right"].add(o.track_id)
    assert len(seen["left"]) == 1 and len(seen["right"]) == 1
    assert seen["left"] != seen["right"]
    assert tr.total_tracks == 2


def test_large_jump_between_samples_still_matches_by_distance():
    tr = Tracker(CLASSES)
    a = tr.update([FakeFace((100, 100, 100, 100))])[0].track_id
    # moved 60% of its size: no overlap with IoU >= 0.2, but within the distance gate
    b = tr.update([FakeFace((160, 130, 100, 100))])[0].track_id
    assert a == b
    c = tr.update([FakeFace((500, 300, 100, 100))])[0].track_id  # far away: someone else
    assert c != a


def test_track_survives_short_gaps_but_not_long_ones():
    tr = Tracker(CLASSES, max_missing=3)
    first = tr.update([FakeFace((100, 100, 80, 80))])[0].track_id
    for _ in range(3):
        tr.update([])
    assert tr.update([FakeFace((104, 100, 80, 80))])[0].track_id == first
    for _ in range(4):
        tr.update([])
    assert tr.update([FakeFace((104, 100, 80, 80))])[0].track_id != first


def test_new_track_starts_from_its_own_probabilities():
    tr = Tracker(CLASSES, smoothing=0.9)
    out = tr.update([FakeFace((0, 0, 50, 50), probs(happy=0.9))])[0]
    assert out.emotion == "happy" and out.confidence == pytest.approx(0.9)


def _flips(labels: list[str]) -> int:
    return sum(a != b for a, b in zip(labels, labels[1:]))


def test_ema_reduces_label_flicker_and_zero_is_raw():
    """A face that is mostly 'sad' but whose per-frame top class keeps jumping to neutral/fear."""
    rng = np.random.default_rng(1)
    frames = []
    for _ in range(120):
        p = np.array([0.02, 0.01, 0.12, 0.03, 0.45, 0.02, 0.35]) + rng.normal(0, 0.12, 7)
        p = np.clip(p, 1e-3, None)
        frames.append(dict(zip(CLASSES, p / p.sum())))
    raw = [max(p, key=p.get) for p in frames]
    results = {}
    for s in (0.0, 0.5, 0.8):
        tr = Tracker(CLASSES, smoothing=s)
        results[s] = [tr.update([FakeFace((100, 100, 90, 90), p)])[0].emotion for p in frames]
    assert results[0.0] == raw
    assert _flips(raw) >= 20  # the sequence really flickers
    assert _flips(results[0.5]) < _flips(raw)
    assert _flips(results[0.8]) < _flips(results[0.5])
    assert _flips(results[0.8]) <= _flips(raw) / 4
    # and the smoothed label is mostly the true dominant class
    assert results[0.8][20:].count("sad") / 100 >= 0.8


def test_smoothed_probabilities_follow_the_ema_formula():
    tr = Tracker(CLASSES, smoothing=0.6)
    box = (10, 10, 60, 60)
    tr.update([FakeFace(box, probs(happy=1.0 - 6e-9))])
    out = tr.update([FakeFace(box, probs(sad=1.0 - 6e-9))])[0]
    assert out.smoothed["happy"] == pytest.approx(0.6, abs=1e-6)
    assert out.smoothed["sad"] == pytest.approx(0.4, abs=1e-6)
    assert sum(out.smoothed.values()) == pytest.approx(1.0)
    d = out.to_dict()
    assert d["id"] == out.track_id and d["smoothed"]["emotion"] == "happy"


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_smoothing_must_be_in_range(bad):
    with pytest.raises(BadInputError, match="smoothing"):
        Tracker(CLASSES, smoothing=bad)
