"""A crowded picture to check how annotations behave when faces are many and close: 24 committed
FER test faces (tests/data/fer), upscaled to mixed sizes and tiled with small gaps, then run
through ``fervid predict``'s recognition and drawing. Writes the collage and its annotated copy.

    python scripts/crowd_collage.py docs/images/crowd.jpg
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fervid import Recognizer  # noqa: E402
from fervid.recognition.draw import annotate  # noqa: E402


def collage(n: int = 24, seed: int = 0) -> np.ndarray:
    """Rows of faces of varied sizes (70-190 px) with 6-20 px gaps on a smooth gray background."""
    paths = sorted((ROOT / "tests" / "data" / "fer" / "test").glob("*/*.jpg"))[:n]
    rng = np.random.default_rng(seed)
    width = 1100
    canvas = np.full((1400, width, 3), 128, np.uint8)
    x, y, row_h = 10, 10, 0
    for p in paths:
        size = int(rng.integers(70, 190))
        if x + size > width - 10:
            x, y, row_h = 10, y + row_h + int(rng.integers(6, 20)), 0
        face = cv2.resize(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), (size, size), interpolation=cv2.INTER_CUBIC)
        canvas[y:y + size, x:x + size] = face[..., None]
        x += size + int(rng.integers(6, 20))
        row_h = max(row_h, size)
    return canvas[:y + row_h + 10]


def main(out: str = "docs/images/crowd.jpg") -> int:
    image = collage()
    faces = Recognizer(min_face=20).predict(image)
    drawn = annotate(image, faces)
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dest), drawn, [cv2.IMWRITE_JPEG_QUALITY, 85] if dest.suffix.lower() in (".jpg", ".jpeg") else [])
    print(f"{len(faces)} faces found of 24 pasted; wrote {dest} ({dest.stat().st_size / 1000:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
