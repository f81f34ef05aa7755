"""Live recognition from a camera, in a window with boxes, labels and an FPS counter.

The loop takes its frame source and its display as arguments, so it is the same code that
runs on a real camera and window and, in tests, on a fake capture and a fake display. The
two things that usually go wrong on a user's machine are checked up front and reported in
one line: no display (no ``$DISPLAY``, or the *headless* OpenCV wheel, which has no GUI at
all) and no camera (the device does not open, or gives no first frame).
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import cv2
import numpy as np

from ..errors import BadInputError, FervidError
from ..opencv_log import quiet_opencv as _quiet_opencv
from .frames import open_camera, wrap_capture  # noqa: F401  (open_camera: for callers)
from .track import Tracker
from .video import annotate, iter_video

QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q or Esc
_NO_GUI_HINT = ("run `fervid video` on a recording instead, or install the GUI build of OpenCV "
                "(pip uninstall opencv-python-headless && pip install opencv-python)")


class Display(Protocol):
    """Where annotated frames go. ``show`` returns the key pressed (-1 for none)."""

    def show(self, frame: np.ndarray) -> int: ...

    def close(self) -> None: ...


class WindowDisplay:
    """An OpenCV HighGUI window; raises a one-line ``FervidError`` when there is no GUI."""

    def __init__(self, title: str = "fervid (q quits)") -> None:
        self.title = title
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise FervidError(f"no display to show the webcam window on (DISPLAY is not set); {_NO_GUI_HINT}")
        try:
            with _quiet_opencv():
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise FervidError(f"this OpenCV build has no GUI support (cv2.imshow is not implemented, "
                              f"probably opencv-python-headless); {_NO_GUI_HINT}") from None

    def show(self, frame: np.ndarray) -> int:
        cv2.imshow(self.title, frame)
        key = cv2.waitKey(1)
        # closing the window with its [x] button counts as quitting
        if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return ord("q")
        return key

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass


class _FirstFrameCheck:
    """Wraps a capture so a camera that opens but never delivers a frame is an error, not a no-op."""

    def __init__(self, capture: Any, name: str) -> None:
        self.capture, self.name, self.frames = capture, name, 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, frame = self.capture.read()
        if not ok or frame is None:
            if self.frames == 0:
                raise BadInputError(f"{self.name}: opened but gave no frame (camera busy, unplugged or no permission)")
            return False, None
        self.frames += 1
        return True, frame

    def get(self, prop: int) -> float:
        get = getattr(self.capture, "get", None)
        return float(get(prop)) if get else 0.0

    def release(self) -> None:
        release = getattr(self.capture, "release", None)
        if release:
            release()


@dataclass
class WebcamSummary:
    frames: int
    analysed: int
    tracks: int
    seconds: float
    quit_by_key: bool

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        how = "quit" if self.quit_by_key else "camera stopped"
        return (f"webcam: {self.frames} frames, {self.tracks} tracks, {self.seconds:.1f}s, "
                f"{self.fps:.1f} frames/s ({how})")


def draw_fps(frame: np.ndarray, fps: float) -> None:
    text = f"{fps:4.1f} FPS"
    cv2.putText(frame, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(frame, text, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)


def run_webcam(recognizer: Any, capture: Any, display: Display, *, every: int = 1, smoothing: float = 0.5,
               max_frames: int | None = None, name: str = "camera",
               on_frame: Callable[[Any], None] | None = None) -> WebcamSummary:
    """Recognise, annotate and show frames until a quit key, the end of the source or ``max_frames``.

    ``capture``: anything with ``read() -> (ok, frame)`` (a ``cv2.VideoCapture`` or a fake);
    ``display``: a :class:`Display`. ``on_frame`` sees each ``FrameResult`` (tests, logging).
    The FPS shown is measured over the last second of frames, so it reacts to load.
    """
    tracker = Tracker(recognizer.classes, smoothing)  # validates smoothing before the camera is used
    source = _FirstFrameCheck(capture, name)
    stamps: deque[float] = deque(maxlen=120)
    frames = analysed = 0
    quit_by_key = False
    start = time.perf_counter()
    try:
        for result in iter_video(recognizer, wrap_capture(source, name), every, smoothing,
                                 tracker=tracker, live=True):
            now = time.perf_counter()
            stamps.append(now)
            while stamps and now - stamps[0] > 1.0 and len(stamps) > 2:
                stamps.popleft()
            fps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0
            frame = result.image
            annotate(frame, result.faces)
            draw_fps(frame, fps)
            frames += 1
            analysed += result.analysed
            if on_frame is not None:
                on_frame(result)
            key = display.show(frame)
            if key is not None and key >= 0 and (key & 0xFF) in QUIT_KEYS:
                quit_by_key = True
                break
            if max_frames is not None and frames >= max_frames:
                break
    finally:
        display.close()
        source.release()
    return WebcamSummary(frames, analysed, tracker.total_tracks, time.perf_counter() - start, quit_by_key)
