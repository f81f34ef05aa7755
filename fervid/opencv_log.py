"""Keeping OpenCV's own log lines off stderr where fervid reports the problem itself.

A corrupt PNG, TIFF or GIF makes OpenCV log ``[ERROR:0@1.2] global loadsave.cpp ...
can't read header`` before it returns nothing; fervid then prints its one-line error,
and the log line would only bury it. OpenCV's log level is process-wide, so the quiet
section is counted under a lock: concurrent decodes (``fervid serve`` runs them in threads)
silence it once and the level in force before the first one is restored after the last.
Codec libraries that print on their own (libpng, libjpeg warnings) are not reached by this.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import cv2

_lock = threading.Lock()
_depth = 0
_saved: int | None = None


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    global _depth, _saved
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = log.getLogLevel()
            log.setLogLevel(log.LOG_LEVEL_SILENT)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved is not None:
                log.setLogLevel(_saved)
