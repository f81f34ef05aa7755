"""``fervid webcam``: live recognition in a window (boxes, smoothed labels, FPS); q quits."""
from __future__ import annotations

import argparse

from .common import recognizer_settings
from .video import add_recognizer_flags, make_recognizer


def run(args: argparse.Namespace) -> int:
    from ..recognition.camera import WindowDisplay, open_camera, run_webcam

    recognizer_settings(args)  # a bad flag is one line before anything opens
    # The display is checked next: on a headless install there is no point opening the camera.
    display = WindowDisplay()
    try:
        recognizer = make_recognizer(args)
        capture = open_camera(args.camera, args.width, args.height)
    except BaseException:
        display.close()
        raise
    summary = run_webcam(recognizer, capture, display, every=args.every, smoothing=args.smoothing,
                         name=f"camera {args.camera}")
    print(summary.line())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("webcam", help="live recognition from a camera in a window (q quits)",
                       description="Recognise faces live from a camera and show them in a window with boxes, "
                       "track ids, smoothed emotion labels and an FPS counter. Press q or Esc (or close the "
                       "window) to quit. Needs a display and the GUI build of OpenCV (opencv-python); "
                       "on a headless machine, record a clip and use `fervid video`.")
    p.add_argument("--camera", type=int, default=0, metavar="N", help="camera number (default: 0)")
    p.add_argument("--width", type=int, metavar="PX", help="ask the camera for this frame width")
    p.add_argument("--height", type=int, metavar="PX", help="ask the camera for this frame height")
    add_recognizer_flags(p)
    p.set_defaults(func=run)
