"""Emotion timelines: how each tracked face's class probabilities move through a video.

A video's CSV answers "what at frame N", a timeline answers "how did this person react
over the clip" at a glance. Series are collected while the video streams (a few floats per
face per analysed frame, so an hour of video costs megabytes, never frames) and drawn at the
end with matplotlib's object API on the Agg canvas (no pyplot global state, no GUI backend),
at a fixed pixel size.
"""
from __future__ import annotations

import os
from array import array
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_path
from .draw import color_for

DPI = 100
#: Pixel size (width, height) of every timeline PNG.
TIMELINE_SIZE = (1000, 400)


def emotion_colour(emotion: str) -> tuple[float, float, float]:
    """Matplotlib RGB of ``emotion``: :func:`fervid.recognition.draw.color_for` (the boxes' BGR), so a timeline
    reads with the colours a viewer learnt from the annotated video."""
    b, g, r = color_for(emotion)
    return (r / 255.0, g / 255.0, b / 255.0)


class TimelineRecorder:
    """Collect (time, smoothed probabilities) per track id, compactly (``array('f')``)."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self.times: dict[int, array] = {}
        self.probs: dict[int, array] = {}

    def add(self, track_id: int, time: float, probabilities: dict[str, float]) -> None:
        if track_id not in self.times:
            self.times[track_id] = array("f")
            self.probs[track_id] = array("f")
        self.times[track_id].append(time)
        self.probs[track_id].extend(float(probabilities.get(c, 0.0)) for c in self.classes)

    def series(self, track_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Times ``[T]`` and probabilities ``[T, C]`` of one track."""
        t = np.frombuffer(self.times[track_id], dtype=np.float32)
        p = np.frombuffer(self.probs[track_id], dtype=np.float32).reshape(len(t), len(self.classes))
        return t, p

    def track_ids(self) -> list[int]:
        return sorted(self.times)

    def write_all(self, folder: str | os.PathLike, overwrite: bool = True, title: str = "",
                  only: Sequence[int] | None = None) -> list[Path]:
        """One ``face_<id>.png`` per track (or per track in ``only``) in ``folder``; returns the paths written."""
        folder = Path(folder)
        out = []
        for tid in self.track_ids() if only is None else only:
            t, p = self.series(tid)
            label = f"face #{tid}" + (f" - {title}" if title else "")
            out.append(plot_timeline(t, p, self.classes, folder / timeline_name(tid), title=label,
                                     overwrite=overwrite))
        return out


def timeline_name(track_id: int) -> str:
    return f"face_{track_id}.png"


def plot_timeline(times: np.ndarray, probs: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                  title: str = "", overwrite: bool = True) -> Path:
    """Probability of every class against time (seconds) for one face, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    times = np.asarray(times, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    fig = Figure(figsize=(TIMELINE_SIZE[0] / DPI, TIMELINE_SIZE[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    marker = "o" if len(times) <= 30 else None  # a handful of samples reads better as dots
    for i, c in enumerate(classes):
        ax.plot(times, probs[:, i], label=c, color=emotion_colour(c), marker=marker,
                markersize=3, linewidth=1.5)
    ax.set_ylim(0.0, 1.0)
    if len(times):
        lo, hi = float(times.min()), float(times.max())
        ax.set_xlim(lo, hi if hi > lo else lo + 1.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("probability (smoothed)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9, frameon=False)
    if title:
        ax.set_title(title)
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
