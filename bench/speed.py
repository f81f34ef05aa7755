"""Recognition speed on this machine: the classifier through ONNX Runtime at batch 1 and 32,
and `fervid video` end to end on a 640x480 clip with one face.

    python bench/speed.py [--model M] [--seconds 3] [--frames 150] [--threads N]

The clip is made here from the bundled sample photo (the face pans across the frame), so
anyone can re-run it offline. Figures are absolute and this machine is shared: compare
numbers from one run only. The fuller, side-by-side benchmark is the subject of bench/ work
still to come (peers, bf16, int8, stage breakdowns).
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fervid.recognize import Recognizer
from fervid.video import process_video

SAMPLE = Path(__file__).resolve().parents[1] / "fervid" / "assets" / "sample.jpg"


def classifier_rate(rec: Recognizer, batch: int, seconds: float) -> float:
    """Faces per second through ``Recognizer.probabilities`` (normalise + ONNX + softmax)."""
    faces = np.random.default_rng(0).integers(0, 256, (batch, 48, 48), dtype=np.uint8)
    for _ in range(5):
        rec.probabilities(faces)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rec.probabilities(faces)
        n += batch
    return n / (time.perf_counter() - t0)


def make_clip(path: Path, frames: int) -> None:
    """640x480, 30 fps: a 256x256 window around the sample's face panning across a gray frame."""
    face = cv2.imread(str(SAMPLE))[20:276, 100:356]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        frame = np.full((480, 640, 3), 90, np.uint8)
        x = int(20 + (640 - 256 - 40) * (0.5 + 0.5 * np.sin(i / 25.0)))
        frame[112:368, x:x + 256] = face
        writer.write(frame)
    writer.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="fervid model (default: the shipped one)")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per classifier measurement")
    ap.add_argument("--frames", type=int, default=150, help="frames in the generated clip")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: its own)")
    args = ap.parse_args()
    rec = Recognizer(args.model, threads=args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"model {rec.meta.get('arch')} ({rec.meta.get('mflops')} MFLOPs/face)")
    for batch in (1, 32):
        print(f"classifier, batch {batch:>2}: {classifier_rate(rec, batch, args.seconds):8.0f} faces/s")
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames)
        summary = process_video(rec, clip, Path(tmp) / "out.mp4", progress=False, notify=lambda m: None)
        share = {k: v / max(1e-9, sum(summary.timings.values())) for k, v in summary.timings.items()}
        print(f"video 640x480, 1 face, every frame: {summary.fps:.1f} frames/s "
              f"({summary.frames} frames, {summary.faces} faces found)")
        print("  time per stage: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))


if __name__ == "__main__":
    main()
