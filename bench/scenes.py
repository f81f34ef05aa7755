"""The photos and the clip every pipeline benchmark runs on, made on the spot so anyone can re-run it.

Photos: 640x480, 1-4 faces each (the count cycles), faces 70-190 px pasted at random places
without overlap onto a smooth random background. The faces come from the real-photo set in
``../shared/datasets/realfaces`` when it is there (they are only read, never written out
of the temporary folder), else from fervid's bundled sample photo, mirrored and rescaled.
Each face's square is recorded, so a detector's recall can be counted.

Clip: 640x480 at 30 frames/s, one face (the sample photo's) panning across a grey frame.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from .common import REALFACES, SAMPLE

WIDTH, HEIGHT = 640, 480


def face_sources(count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` BGR face photos: real-photo set crops if present, else the sample's face."""
    manifest = REALFACES / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as fh:
            paths = [REALFACES / r["path"] for r in csv.DictReader(fh)]
        rng = np.random.default_rng(seed)
        out = []
        for i in rng.permutation(len(paths)):
            img = cv2.imread(str(paths[i]), cv2.IMREAD_COLOR)
            if img is not None:
                out.append(img)
            if len(out) == count:
                return out
    face = cv2.imread(str(SAMPLE))[20:276, 100:356]
    return [face if i % 2 == 0 else face[:, ::-1].copy() for i in range(count)]


def background(rng: np.random.Generator) -> np.ndarray:
    """A smooth coloured field: no face-like structure, but not a flat colour either."""
    small = rng.integers(40, 200, (6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)


def make_photos(folder: Path, count: int, seed: int = 0) -> list[dict]:
    """Write ``count`` photos into ``folder``; returns (and saves as truth.json) their face squares."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_faces = [1 + i % 4 for i in range(count)]
    sources = face_sources(sum(n_faces), seed)
    truth, k = [], 0
    for i, n in enumerate(n_faces):
        img = background(rng)
        boxes: list[list[int]] = []
        while len(boxes) < n:
            side = int(rng.integers(70, 191 if n < 4 else 151))
            x, y = int(rng.integers(0, WIDTH - side)), int(rng.integers(0, HEIGHT - side))
            if any(x < bx + bs and bx < x + side and y < by + bs and by < y + side for bx, by, bs, _ in boxes):
                continue
            face = cv2.resize(sources[k], (side, side), interpolation=cv2.INTER_AREA)
            img[y:y + side, x:x + side] = face if face.ndim == 3 else cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
            boxes.append([x, y, side, side])
            k += 1
        name = f"photo_{i:03d}.jpg"
        cv2.imwrite(str(folder / name), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        truth.append({"file": name, "faces": boxes})
    (folder / "truth.json").write_text(json.dumps(truth))
    return truth


def recall(truth: list[dict], found: dict[str, list[list[int]]]) -> float:
    """Fraction of pasted faces with a detected box whose centre lies inside the pasted square."""
    hit = total = 0
    for item in truth:
        boxes = found.get(item["file"], [])
        for x, y, s, _ in item["faces"]:
            total += 1
            hit += any(x <= bx + bw / 2 <= x + s and y <= by + bh / 2 <= y + s for bx, by, bw, bh in boxes)
    return hit / total if total else 0.0


def make_clip(path: Path, frames: int) -> None:
    """640x480, 30 frames/s: a 256x256 window around the sample's face panning across a grey frame."""
    face = cv2.imread(str(SAMPLE))[20:276, 100:356]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
    for i in range(frames):
        frame = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
        x = int(20 + (WIDTH - 256 - 40) * (0.5 + 0.5 * np.sin(i / 25.0)))
        frame[112:368, x:x + 256] = face
        writer.write(frame)
    writer.release()
