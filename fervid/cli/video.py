"""``fervid video``: annotated video, per-frame CSV and per-face emotion timelines for a video file."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_recognizer_flags as add_settings_flags
from .common import recognizer_settings


def add_recognizer_flags(p: argparse.ArgumentParser) -> None:
    """The flags that build a :class:`fervid.recognition.recognize.Recognizer` (shared with ``fervid webcam``)."""
    add_settings_flags(p)
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="analyse every N-th frame only; frames between reuse the last result (default: 1)")
    p.add_argument("--smoothing", type=float, default=0.5, metavar="S",
                   help="how strongly each face's emotion is smoothed over analysed frames, 0 (off) to <1 "
                   "(steadier, slower to change); EMA weight of the past (default: 0.5)")


def make_recognizer(args: argparse.Namespace):
    from ..recognition.recognize import Recognizer

    return Recognizer(args.model, settings=recognizer_settings(args))


def default_outputs(args: argparse.Namespace) -> tuple[Path | None, Path | None, Path | None]:
    """Video, CSV and timeline folder: named after ``-o`` (or the input, in the current folder)."""
    base = Path(args.output) if args.output else Path(Path(args.input).stem + ".fervid.mp4")
    video = None if args.no_video else base
    csv = Path(args.csv) if args.csv else base.with_suffix(".csv")
    if args.no_timeline:
        timeline = None
    else:
        timeline = Path(args.timeline_dir) if args.timeline_dir else base.with_name(base.stem + "_timelines")
    return video, csv, timeline


def run(args: argparse.Namespace) -> int:
    import sys

    from ..recognition.video import process_video

    recognizer_settings(args)  # first: a bad flag is one line before any work
    if args.ray is not None:  # many videos on a Ray cluster, one task each (fervid/recognition/scaleout_video.py)
        from ..recognition.scaleout_video import run_cli

        return run_cli(args)
    if len(args.inputs) > 1:
        from ..errors import BadInputError

        raise BadInputError(f"{len(args.inputs)} videos given: one at a time, or all of them with --ray")
    args.input = args.inputs[0]

    video, csv, timeline = default_outputs(args)
    recognizer = make_recognizer(args)
    summary = process_video(recognizer, args.input, video, csv_path=csv, timeline_dir=timeline,
                            every=args.every, smoothing=args.smoothing, overwrite=args.overwrite,
                            progress=not args.quiet)
    for w in summary.warnings:
        print(f"fervid video: warning: {w}", file=sys.stderr)
    print(summary.line())
    if args.timings:
        total = sum(summary.timings.values()) or 1.0
        parts = ", ".join(f"{k} {v:.2f}s ({v / total:.0%})" for k, v in summary.timings.items())
        print(f"time per stage: {parts}")
    n_tl = sum(1 for o in summary.outputs if o.endswith(".png"))
    named = [o for o in summary.outputs if not o.endswith(".png")]
    print("wrote " + ", ".join(named) + (f" and {n_tl} timeline PNG(s) in {timeline}" if n_tl else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("video", help="recognise emotions in a video file: annotated video, CSV, timelines",
                       description="Detect, track and recognise faces in every frame of a video. Writes an "
                       "annotated copy (same frame count and rate as the input), a CSV with one row per face "
                       "per analysed frame (frame, time, face id, box, every class probability, smoothed "
                       "emotion) and a PNG per tracked face with its emotions over time. Frames stream one "
                       "at a time, so long videos use constant memory; outputs appear only when complete.")
    p.add_argument("inputs", nargs="+", metavar="IN",
                   help="input video file (anything OpenCV/FFmpeg decodes: mp4, avi, mkv...); several with --ray")
    p.add_argument("-o", "--output", metavar="OUT.mp4",
                   help="annotated video (.mp4 via mp4v, .avi via MJPG, .mkv, .mov); other outputs are named "
                   "after it (default: IN_NAME.fervid.mp4 in the current folder)")
    add_recognizer_flags(p)
    p.add_argument("--csv", metavar="PATH", help="per-frame table (default: OUT with .csv)")
    p.add_argument("--timeline-dir", metavar="DIR",
                   help="folder for face_<id>.png emotion timelines (default: OUT_timelines beside OUT)")
    p.add_argument("--no-video", action="store_true", help="write the CSV (and timelines) only, no video")
    p.add_argument("--no-timeline", action="store_true", help="do not draw timeline PNGs")
    p.add_argument("--overwrite", action="store_true", help="replace output files that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--timings", action="store_true",
                   help="also print where the time went (decode, detect, classify, track, draw, encode)")
    from .predict import add_ray_flags

    add_ray_flags(p, "video", "one task per video, its outputs written under --out-dir as fervid video names them")
    p.add_argument("--out-dir", metavar="DIR", help="with --ray: the folder every video's outputs go to, named "
                   "after it (default: fervid-out)")
    p.set_defaults(func=run)
