"""Where frames come from: video files and cameras, opened with their problems said in one line.

A :class:`VideoReader` has proven it can decode (a file's first frame is read when it opens and
held back for ``read``), so a file that is not a video, or a camera that never delivers, is a
``BadInputError`` naming it before any work starts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# FFmpeg prints its own complaints ("moov atom not found") on stderr when OpenCV probes a
# file that is not a video; we report those ourselves in one line. Read once by OpenCV when
# it first loads FFmpeg, so it must be set before the first VideoCapture; users can override.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import BadInputError  # noqa: E402
from ..files import stat_input  # noqa: E402
from ..opencv_log import quiet_opencv  # noqa: E402


@dataclass
class VideoInfo:
    source: str
    fps: float  # 0 when the container does not say
    frame_count: int  # 0 when unknown (live cameras, some containers)
    width: int
    height: int


#: OpenCV's WARN/ERROR lines silenced while probing; our message replaces them (thread-safe).
_quiet_opencv = quiet_opencv


class VideoReader:
    """A VideoCapture that has proven it can decode (its first frame is held back for ``read``)."""

    def __init__(self, capture: Any, info: VideoInfo, first: np.ndarray | None = None, live: bool = False) -> None:
        self.capture = capture
        self.info = info
        self.live = live  # a camera: timestamps are wall-clock, not frame index / fps
        self._pending = first
        self.frames_read = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._pending is not None:
            frame, self._pending = self._pending, None
        else:
            ok, frame = self.capture.read()
            if not ok or frame is None:
                return False, None
        self.frames_read += 1
        return True, frame

    def release(self) -> None:
        self.capture.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_video(path: str | os.PathLike) -> VideoReader:
    """Open a video file or raise a one-line ``BadInputError`` that names it and the problem."""
    p = Path(path)
    if stat_input(p, "a video file").st_size == 0:  # a FIFO or a device would block or never end
        raise BadInputError(f"{p}: empty file (0 bytes)")
    with _quiet_opencv():
        cap = cv2.VideoCapture(str(p))
        if not cap.isOpened():
            cap.release()
            raise BadInputError(f"{p}: cannot be read as a video (not a video, an unsupported format, or corrupt)")
        ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise BadInputError(f"{p}: no decodable frames (truncated or corrupt video)")
    return VideoReader(cap, _info(cap, str(p), first), first)


def wrap_capture(capture: Any, name: str = "camera") -> VideoReader:
    """A live source (camera or any object with ``read() -> (ok, frame)``) as a reader."""
    get = getattr(capture, "get", None)
    fps = float(get(cv2.CAP_PROP_FPS)) if get else 0.0
    info = VideoInfo(name, fps if fps > 0 else 0.0, 0, 0, 0)
    return VideoReader(capture, info, live=True)


def _info(cap: Any, name: str, first: np.ndarray) -> VideoInfo:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return VideoInfo(name, fps if 0 < fps < 1000 else 0.0, max(count, 0), first.shape[1], first.shape[0])


def open_camera(index: int = 0, width: int | None = None, height: int | None = None) -> Any:
    """Open camera ``index`` or raise a one-line ``BadInputError`` (exit 2)."""
    with quiet_opencv():
        cap = cv2.VideoCapture(int(index))
        if not cap.isOpened():
            cap.release()
            raise BadInputError(f"camera {index}: cannot be opened (no camera with that number, "
                                "or it is in use by another program); try --camera 1")
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
    return cap
