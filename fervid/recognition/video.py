"""Recognition on videos: stream frames, track faces, smooth emotions, write outputs.

Frames are read, analysed and written one at a time, so memory does not grow with the
length of the video (only the per-face timeline series do, a few floats per face per
analysed frame). With ``every=N`` only every N-th frame is analysed; the frames between
reuse the last result, so the annotated video keeps the input's frame count and timing,
while the CSV has one row per face per *analysed* frame (repeated rows would only restate
the same measurement).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from ..errors import BadInputError, FervidError
from ..files import atomic_path, check_output
from .draw import draw_faces
from .frames import VideoReader, open_camera, open_video, wrap_capture
from .image_files import probability_column
from .timeline import TimelineRecorder
from .track import TrackedFace, Tracker, check_smoothing
from .video_writer import FALLBACK, FOURCC, encoded_size, encoder_works, fit_frame, open_writer, verify_video  # noqa: F401

#: Pipeline stages in the order a frame goes through them (``recognize`` = detect + classify).
STAGES = ("decode", "detect", "classify", "recognize", "track", "draw", "encode")


@dataclass
class FrameResult:
    """One frame of a video: where and when, and the tracked faces shown on it.

    ``analysed`` is False for frames skipped by ``every=N``; their ``faces`` are the last
    analysed frame's. ``image`` is the decoded BGR frame (not serialised).
    """

    index: int
    time: float
    faces: list[TrackedFace]
    analysed: bool = True
    image: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"frame": self.index, "time": round(self.time, 6), "analysed": self.analysed,
                "faces": [f.to_dict() for f in self.faces]}


def iter_video(recognizer: Any, source: Any, every: int = 1, smoothing: float = 0.5, *,
               tracker: Tracker | None = None, keep_image: bool = True, live: bool | None = None,
               timings: dict[str, float] | None = None) -> Iterator[FrameResult]:
    """Yield a :class:`FrameResult` for every frame of ``source``, one at a time.

    ``source``: a video path, a camera number, an open :class:`VideoReader`, or a
    capture-like object (``read() -> (ok, frame)``). Times are ``index / fps`` for files
    and wall-clock seconds since the first frame for live sources.
    ``timings`` (if given) accumulates seconds spent per stage (``decode``, ``detect``,
    ``classify``, ``track``; ``recognize`` instead of detect + classify for recognisers that
    only have ``predict``), for throughput reports.
    """
    if int(every) < 1:
        raise BadInputError(f"--every must be >= 1, got {every}")
    every = int(every)
    check_smoothing(smoothing)
    tracker = tracker or Tracker(recognizer.classes, smoothing)
    owned = False
    if isinstance(source, (str, os.PathLike)):
        reader, owned = open_video(source), True
    elif isinstance(source, int) and not isinstance(source, bool):
        reader, owned = wrap_capture(open_camera(source), f"camera {source}"), True
    elif isinstance(source, VideoReader):
        reader = source
    else:
        reader = wrap_capture(source)
    live = reader.live if live is None else live
    t = timings if timings is not None else {}
    # A fervid Recognizer exposes its two stages; other recognisers (fakes, wrappers) just predict.
    split = callable(getattr(recognizer, "detect", None)) and callable(getattr(recognizer, "classify", None))
    for key in ("decode", "detect", "classify", "track") if split else ("decode", "recognize", "track"):
        t.setdefault(key, 0.0)
    t_det = 0.0
    last: list[TrackedFace] = []
    start = time.perf_counter()
    index = 0
    try:
        while True:
            t0 = time.perf_counter()
            ok, frame = reader.read()
            t1 = time.perf_counter()
            t["decode"] += t1 - t0
            if not ok:
                return
            if live:
                stamp = t1 - start
            elif reader.info.fps > 0:
                stamp = index / reader.info.fps
            else:  # a file whose container gives no frame rate: ask the demuxer
                stamp = float(reader.capture.get(cv2.CAP_PROP_POS_MSEC) or 0.0) / 1000.0
            analysed = index % every == 0
            if analysed:
                if split:  # same as predict(frame) for a BGR frame, timed in two parts
                    detections = recognizer.detect(frame)
                    t_det = time.perf_counter()
                    faces = recognizer.classify(frame, detections)
                    t["detect"] += t_det - t1
                else:
                    faces = recognizer.predict(frame)
                t2 = time.perf_counter()
                last = tracker.update(faces)
                t["classify" if split else "recognize"] += t2 - (t_det if split else t1)
                t["track"] += time.perf_counter() - t2
            yield FrameResult(index, stamp, last, analysed, frame if keep_image else None)
            index += 1
    finally:
        if owned:
            reader.release()


def annotate(frame: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
    """Draw tracked faces (id + smoothed label) on a BGR frame in place, via ``fervid.recognition.draw``."""
    # label, colour and bars all show the smoothed estimate, so they agree with each other
    shown = [dataclasses.replace(f.face, emotion=f.emotion, confidence=f.confidence, probabilities=f.smoothed)
             for f in faces]
    return draw_faces(frame, shown, labels=[f"#{f.track_id} {f.emotion} {f.confidence:.0%}" for f in faces])


@dataclass
class VideoSummary:
    source: str
    frames: int
    analysed: int
    faces: int  # face detections over analysed frames
    tracks: int
    seconds: float  # whole job, timelines included
    stream_seconds: float  # decoding to encoding the frames: what frames/s is measured on
    outputs: list[str]
    timings: dict[str, float]
    warnings: list[str]

    @property
    def fps(self) -> float:
        return self.frames / self.stream_seconds if self.stream_seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.source}: {self.frames} frames ({self.analysed} analysed), {self.faces} faces, "
                f"{self.tracks} tracks, {self.seconds:.1f}s, {self.fps:.1f} frames/s")


def csv_header(classes: list[str]) -> list[str]:
    """Columns named as ``fervid predict``'s table names them (``p_<class>`` probabilities), so one
    reader (:func:`fervid.recognition.image_files.row_probabilities`) serves both."""
    return (["frame", "time", "face_id", "x", "y", "w", "h", "score", "emotion", "confidence"]
            + [probability_column(c) for c in classes] + ["smoothed_emotion", "smoothed_confidence"])


def csv_row(result: FrameResult, tf: TrackedFace, classes: list[str]) -> list:
    f = tf.face
    x, y, w, h = (int(v) for v in f.box)
    return ([result.index, f"{result.time:.3f}", tf.track_id, x, y, w, h, f"{f.score:.4f}", f.emotion,
             f"{f.confidence:.4f}"] + [f"{f.probabilities.get(c, 0.0):.4f}" for c in classes]
            + [tf.emotion, f"{tf.confidence:.4f}"])


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _plan_outputs(src: Path, out: Path | None, csv_p: Path | None, tl_dir: Path | None, overwrite: bool,
                  notify: Callable[[str], None]) -> Path | None:
    """Refuse outputs that exist, are the input or cannot be written, up front, before minutes of
    work; pick the container."""
    for p in (out, csv_p):
        if p is not None:
            check_output(p)
    if tl_dir is not None:
        check_output(tl_dir, folder=True)
    for p in (out, csv_p):
        if p is not None and src.exists() and p.exists() and p.resolve() == src.resolve():
            raise BadInputError(f"{p}: output would overwrite the input video")
        if p is not None and p.exists() and not overwrite:
            raise BadInputError(f"{p}: already exists (use --overwrite to replace it)")
    if out is not None and out.suffix.lower() not in FOURCC:
        raise BadInputError(f"{out}: unsupported video suffix (use one of {', '.join(sorted(FOURCC))})")
    if out is not None and not encoder_works(out.suffix):
        fallback = out.with_suffix(FALLBACK[0])
        notify(f"fervid: this OpenCV build cannot encode {out.suffix} video; writing {fallback} (MJPG) instead")
        if fallback.exists() and not overwrite:
            raise BadInputError(f"{fallback}: already exists (use --overwrite to replace it)")
        out = fallback
    if out is not None and csv_p is not None and out.resolve() == csv_p.resolve():
        raise BadInputError(f"{out}: given as both the video and the CSV output")
    if tl_dir is not None and tl_dir.exists() and not tl_dir.is_dir():
        raise BadInputError(f"{tl_dir}: timeline folder exists and is not a folder")
    if tl_dir is not None and tl_dir.is_dir() and not overwrite and any(tl_dir.glob("face_*.png")):
        raise BadInputError(f"{tl_dir}: already holds timeline PNGs (use --overwrite to replace them)")
    return out


def _write_timelines(recorder: Any, folder: Path, title: str) -> list[str]:
    """Every timeline PNG, or none: those already written are removed if one fails (a full disk)."""
    done: list[Path] = []
    existed = folder.is_dir()
    try:
        for tid in recorder.track_ids():
            done += recorder.write_all(folder, overwrite=True, title=title, only=[tid])
    except BaseException:
        for p in done:
            p.unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise
    return [str(p) for p in done]


def process_video(recognizer: Any, source: str | os.PathLike, output: str | os.PathLike | None = None, *,
                  csv_path: str | os.PathLike | None = None, timeline_dir: str | os.PathLike | None = None,
                  every: int = 1, smoothing: float = 0.5, overwrite: bool = False, progress: bool = True,
                  notify: Callable[[str], None] = _stderr) -> VideoSummary:
    """Annotated video, per-frame CSV and per-face timeline PNGs for one video file.

    Any of the three outputs may be None. Each is written to a temporary file beside its
    target and renamed only when the whole video went through, so an error or Ctrl-C never
    leaves a partial file; existing outputs are refused unless ``overwrite``.
    """
    from tqdm import tqdm

    if int(every) < 1:
        raise BadInputError(f"--every must be >= 1, got {every}")
    check_smoothing(smoothing)
    src = Path(source)
    out = Path(output) if output is not None else None
    csv_p = Path(csv_path) if csv_path is not None else None
    tl_dir = Path(timeline_dir) if timeline_dir is not None else None
    if out is None and csv_p is None and tl_dir is None:
        raise BadInputError("nothing to write: give an output video, a CSV path or a timeline folder")
    reader = open_video(src)  # bad input is reported before anything else
    try:
        out = _plan_outputs(src, out, csv_p, tl_dir, overwrite, notify)
    except BaseException:
        reader.release()
        raise

    classes = list(recognizer.classes)
    warnings: list[str] = []
    timings: dict[str, float] = {"draw": 0.0, "encode": 0.0}
    outputs: list[str] = []
    recorder = TimelineRecorder(classes) if tl_dir is not None else None
    faces_total = analysed = 0
    tracker = Tracker(classes, smoothing)
    start = time.perf_counter()
    with reader, contextlib.ExitStack() as stack:
        info = reader.info
        fps_out = info.fps or 25.0
        if info.fps <= 0 and out is not None:
            warnings.append(f"{src}: frame rate unknown, writing the video at {fps_out:g} frames/s")
        writer = None
        size = encoded_size(info.width, info.height)
        if out is not None:
            tmp = stack.enter_context(atomic_path(out, overwrite=overwrite))
            writer = open_writer(tmp, fps_out, size)
            if writer is None:
                raise FervidError(f"{out}: OpenCV could not open a video writer for it")
            stack.callback(writer.release)
            if size != (info.width, info.height):
                warnings.append(f"{src}: frames are {info.width}x{info.height}; the video is written padded "
                                f"to {size[0]}x{size[1]} (the encoder's smallest size)")
        csv_writer = None
        if csv_p is not None:
            tmp_csv = stack.enter_context(atomic_path(csv_p, overwrite=overwrite))
            fh = stack.enter_context(open(tmp_csv, "w", newline="", encoding="utf-8"))
            csv_writer = csv.writer(fh)
            csv_writer.writerow(csv_header(classes))
        bar = stack.enter_context(tqdm(total=info.frame_count or None, unit="frame", disable=not progress,
                                       desc=src.name, dynamic_ncols=True, leave=False))
        written = 0
        for result in iter_video(recognizer, reader, every, smoothing, tracker=tracker, live=False,
                                 keep_image=writer is not None, timings=timings):
            if result.analysed:
                analysed += 1
                faces_total += len(result.faces)
                for tf in result.faces:
                    if csv_writer is not None:
                        csv_writer.writerow(csv_row(result, tf, classes))
                    if recorder is not None:
                        recorder.add(tf.track_id, result.time, tf.smoothed)
            if writer is not None:
                t0 = time.perf_counter()
                frame = fit_frame(result.image, size)
                annotate(frame, result.faces)
                t1 = time.perf_counter()
                writer.write(frame)
                written += 1
                timings["draw"] += t1 - t0
                timings["encode"] += time.perf_counter() - t1
            bar.update(1)
        frames = reader.frames_read
        stream_seconds = time.perf_counter() - start
        if info.frame_count and frames < info.frame_count:
            warnings.append(f"{src}: read {frames} of the {info.frame_count} frames its header announces "
                            "(truncated or corrupt file?); processed what could be decoded")
        # Nothing is published until every output is known to be whole: the encoder fails
        # silently, so the video is decoded again; the CSV is flushed (a full disk raises
        # here); timelines are drawn while the other two still have temporary names.
        if writer is not None:
            writer.release()
            verify_video(tmp, written, out)
        if csv_writer is not None:
            fh.flush()
        if recorder is not None:
            outputs_tl = _write_timelines(recorder, tl_dir, src.name)
    # ExitStack closed: writer released, CSV closed, temp files renamed into place.
    if out is not None:
        outputs.append(str(out))
    if csv_p is not None:
        outputs.append(str(csv_p))
    if recorder is not None:
        outputs += outputs_tl
    seconds = time.perf_counter() - start
    return VideoSummary(str(src), frames, analysed, faces_total, tracker.total_tracks, seconds, stream_seconds,
                        outputs, {k: round(timings[k], 4) for k in STAGES if k in timings}, warnings)
