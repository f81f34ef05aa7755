"""Keeping a face's identity across video frames and smoothing its emotion over time.

A per-frame classifier on 48x48 crops is jumpy: the top class of a face that holds one
expression can flip between neighbours (sad/neutral, fear/surprise) from one frame to the
next, which makes labels in a video flicker. So each detected face is matched to a *track*
(the same person in earlier frames) and the track keeps an exponential moving average of
the class probabilities; the label shown is the top class of that average.

Matching is greedy on overlap (IoU) with a centre-distance fallback: faces move little
between consecutive frames, but with ``--every N`` sampling or fast motion two boxes of the
same face may not overlap, and the distance gate (relative to face size) still pairs them.
Greedy assignment is optimal enough for the handful of faces in a frame and needs no SciPy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from ..errors import BadInputError

Box = tuple[int, int, int, int]


class FaceLike(Protocol):
    """What the tracker needs from a detection (``fervid.recognition.recognize.Face`` has it)."""

    box: Box
    probabilities: dict[str, float]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = min(ax2, bx2) - max(a[0], b[0])
    ih = min(ay2, by2) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = float(iw * ih)
    union = float(a[2] * a[3] + b[2] * b[3]) - inter
    return inter / union if union > 0 else 0.0


def centre_distance(a: Box, b: Box) -> float:
    """Distance between box centres in units of the larger box side (scale-free)."""
    dx = (a[0] + a[2] / 2) - (b[0] + b[2] / 2)
    dy = (a[1] + a[3] / 2) - (b[1] + b[3] / 2)
    side = max(a[2], a[3], b[2], b[3], 1)
    return float(np.hypot(dx, dy)) / side


def check_smoothing(smoothing: float) -> float:
    """0 = no smoothing (raw per-frame labels); closer to 1 = steadier but slower labels."""
    s = float(smoothing)
    if not 0.0 <= s < 1.0:
        raise BadInputError(f"--smoothing must be in [0, 1) (0 = off, 0.9 = strong), got {smoothing}")
    return s


@dataclass
class TrackedFace:
    """One face in one frame, with the identity and smoothed emotion of its track."""

    track_id: int
    face: Any  # fervid.recognition.recognize.Face (kept loose so the tracker has no import-time dependency)
    smoothed: dict[str, float]
    emotion: str  # top class of ``smoothed``
    confidence: float  # its smoothed probability

    @property
    def box(self) -> Box:
        return self.face.box

    def to_dict(self) -> dict:
        d = self.face.to_dict() if hasattr(self.face, "to_dict") else dataclasses.asdict(self.face)
        d = {"id": self.track_id, **d}
        d["smoothed"] = {"emotion": self.emotion, "confidence": round(self.confidence, 6),
                         "probabilities": {k: round(v, 6) for k, v in self.smoothed.items()}}
        return d


@dataclass
class Track:
    track_id: int
    box: Box
    probs: np.ndarray  # EMA of class probabilities, float64, sums to 1
    first_seen: int
    last_seen: int
    hits: int = 1


class Tracker:
    """Assign stable ids to faces frame after frame and smooth their probabilities.

    ``smoothing`` is the EMA weight of the past per analysed frame: ``p = s*p_old + (1-s)*p_new``.
    A track not matched for more than ``max_missing`` analysed frames is dropped, so a
    face that leaves and comes back later gets a new id (re-identification is out of scope).
    """

    def __init__(self, classes: Sequence[str], smoothing: float = 0.5, *, iou_threshold: float = 0.2,
                 max_distance: float = 0.75, max_missing: int = 10) -> None:
        self.classes = list(classes)
        self.smoothing = check_smoothing(smoothing)
        self.iou_threshold = iou_threshold
        self.max_distance = max_distance
        self.max_missing = max_missing
        self.tracks: list[Track] = []
        self.next_id = 1
        self.step = 0  # analysed frames seen

    @property
    def total_tracks(self) -> int:
        """Number of distinct ids handed out so far."""
        return self.next_id - 1

    def _affinity(self, track: Track, box: Box) -> float | None:
        """Higher = better match; None = not allowed to match."""
        o = iou(track.box, box)
        if o >= self.iou_threshold:
            return 1.0 + o  # any overlap match beats any distance-only match
        d = centre_distance(track.box, box)
        if d <= self.max_distance:
            return 1.0 - d / (self.max_distance + 1e-9)
        return None

    def _vector(self, probabilities: dict[str, float]) -> np.ndarray:
        v = np.array([float(probabilities.get(c, 0.0)) for c in self.classes], dtype=np.float64)
        total = v.sum()
        return v / total if total > 0 else np.full(len(self.classes), 1.0 / max(len(self.classes), 1))

    def update(self, faces: Sequence[FaceLike]) -> list[TrackedFace]:
        """Match this analysed frame's faces to tracks; returns them in input order."""
        step = self.step
        self.step += 1
        pairs = []
        for ti, track in enumerate(self.tracks):
            for fi, face in enumerate(faces):
                a = self._affinity(track, tuple(face.box))
                if a is not None:
                    pairs.append((a, ti, fi))
        pairs.sort(key=lambda p: -p[0])
        track_of: dict[int, Track] = {}
        used_tracks: set[int] = set()
        for _, ti, fi in pairs:
            if ti in used_tracks or fi in track_of:
                continue
            used_tracks.add(ti)
            track_of[fi] = self.tracks[ti]

        out: list[TrackedFace] = []
        s = self.smoothing
        for fi, face in enumerate(faces):
            new = self._vector(face.probabilities)
            track = track_of.get(fi)
            if track is None:
                track = Track(self.next_id, tuple(face.box), new, first_seen=step, last_seen=step)
                self.next_id += 1
                self.tracks.append(track)
            else:
                track.probs = s * track.probs + (1.0 - s) * new
                track.box = tuple(face.box)
                track.last_seen = step
                track.hits += 1
            top = int(np.argmax(track.probs))
            out.append(TrackedFace(track.track_id, face, dict(zip(self.classes, map(float, track.probs))),
                                   self.classes[top], float(track.probs[top])))
        self.tracks = [t for t in self.tracks if step - t.last_seen <= self.max_missing]
        return out
