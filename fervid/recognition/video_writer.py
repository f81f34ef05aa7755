"""Writing annotated videos that are whole: an encoder chosen per container, frames checked after.

OpenCV's ``VideoWriter.write`` returns nothing and fails silently (a full disk, a size
the codec refuses), so a video is only published once it has been reopened and holds as
many frames as were written. The caller writes into a temporary file (``fervid.files``)
and renames it after :func:`verify_video`.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import BadInputError, OutputError
from ..files import nearly_full
from ..opencv_log import quiet_opencv

#: Container suffix -> FourCC. mp4v (MPEG-4 Part 2) is what the pip OpenCV wheels can encode
#: without an H.264 encoder; MJPG in AVI is the fallback that always works.
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}
FALLBACK = (".avi", "MJPG")
#: Smallest frame side the encoders accept (mp4v refuses 1x1); smaller frames are padded.
MIN_SIDE = 2


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> Any:
    """A VideoWriter for ``path`` (FourCC from its suffix), or None if OpenCV cannot encode it."""
    fourcc = FOURCC.get(path.suffix.lower())
    if fourcc is None:
        raise BadInputError(f"{path}: unsupported video suffix (use one of {', '.join(sorted(FOURCC))})")
    with quiet_opencv():
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        writer.release()
        return None
    return writer


def encoded_size(width: int, height: int) -> tuple[int, int]:
    """The frame size written for frames of ``width`` x ``height``: at least MIN_SIDE each way,
    so a 1x1 video is written (padded) instead of failing in the encoder."""
    return max(width, MIN_SIDE), max(height, MIN_SIDE)


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` at ``size``: padded when it is smaller only because of MIN_SIDE, resized when
    the stream changed size midway (the first size is kept)."""
    h, w = frame.shape[:2]
    if (w, h) == size:
        return frame
    if w <= size[0] and h <= size[1] and (w < MIN_SIDE or h < MIN_SIDE):
        return cv2.copyMakeBorder(frame, 0, size[1] - h, 0, size[0] - w, cv2.BORDER_REPLICATE)
    return cv2.resize(frame, size)


@functools.lru_cache(maxsize=None)
def encoder_works(suffix: str) -> bool:
    """Whether this OpenCV build can encode ``suffix`` video (pip wheels differ: some lack H.264, some FFmpeg)."""
    fourcc = FOURCC.get(suffix.lower())
    if fourcc is None:
        return False
    with tempfile.TemporaryDirectory(prefix="fervid-enc-") as d:
        writer = open_writer(Path(d) / f"probe{suffix.lower()}", 10.0, (64, 48))
        if writer is None:
            return False
        writer.write(np.zeros((48, 64, 3), np.uint8))
        writer.release()
        return (Path(d) / f"probe{suffix.lower()}").stat().st_size > 0


def count_frames(path: Path) -> int:
    """Frames that decode from the video at ``path`` (0 when it does not open)."""
    with quiet_opencv():
        cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                return 0
            n = 0
            while cap.grab():
                n += 1
            return n
        finally:
            cap.release()


def verify_video(written: Path, frames: int, name: Path) -> None:
    """Refuse (OutputError naming ``name``) a written video that does not hold ``frames`` frames.

    Decoding the output again costs a fraction of recognising it and is the only check that
    sees what the silent encoder did; a torn file never gets its final name.
    """
    got = count_frames(written)
    if got == frames:
        return
    why = "no space left on device" if nearly_full(written.parent) else "the encoder failed"
    raise OutputError(f"{name}: cannot write: {why} (the video written holds {got} of {frames} frames)")
