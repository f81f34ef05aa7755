"""Rebuild tests/data/detection (the labelled face-detection check set) from the sample images
that ship inside PyPI packages: scikit-image's ``skimage/data``, matplotlib's ``sample_data`` and
scikit-learn's ``datasets/images``. Only images whose licence allows redistribution are taken
(tests/data/detection/README.md lists each with its source and licence). Images are re-encoded
(JPEG quality 85, PNG for the black-and-white drawing) with their longer side at most 512 px (textures 256) to keep
the folder small; fervid detects at 480 px anyway.

    pip install scikit-image matplotlib scikit-learn   # only to rebuild; the tests read the files
    python scripts/detection_set.py
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "detection"
MAX_SIDE = 512
#: Kept at their full size: there the headlight scores 0.62, the case a user reported (0.56 at 512 px).
FULL_SIZE = {"motorcycle_left.jpg", "motorcycle_right.jpg"}

#: (file written, package, path inside the package, human faces in it, category)
SOURCES = [
    ("cat.jpg", "skimage", "data/chelsea.png", 0, "animal"),
    ("horse_silhouette.png", "skimage", "data/horse.png", 0, "cartoon"),
    ("motorcycle_left.jpg", "skimage", "data/motorcycle_left.png", 0, "object"),
    ("motorcycle_right.jpg", "skimage", "data/motorcycle_right.png", 0, "object"),
    ("coffee.jpg", "skimage", "data/coffee.png", 0, "object"),
    ("rocket.jpg", "skimage", "data/rocket.jpg", 0, "object"),
    ("coins.jpg", "skimage", "data/coins.png", 0, "object"),
    ("clock.jpg", "skimage", "data/clock_motion.png", 0, "object"),
    ("brick.jpg", "skimage", "data/brick.png", 0, "texture"),
    ("grass.jpg", "skimage", "data/grass.png", 0, "texture"),
    ("gravel.jpg", "skimage", "data/gravel.png", 0, "texture"),
    ("text.jpg", "skimage", "data/text.png", 0, "text"),
    ("page.jpg", "skimage", "data/page.png", 0, "text"),
    ("moon.jpg", "skimage", "data/moon.png", 0, "texture"),
    ("hubble.jpg", "skimage", "data/hubble_deep_field.jpg", 0, "texture"),
    ("retina.jpg", "skimage", "data/retina.jpg", 0, "object"),
    ("cell.jpg", "skimage", "data/cell.png", 0, "texture"),
    ("skimage_logo.jpg", "skimage", "data/logo.png", 0, "cartoon"),
    ("color.jpg", "skimage", "data/color.png", 0, "cartoon"),
    ("china.jpg", "sklearn", "datasets/images/china.jpg", 0, "object"),
    ("flower.jpg", "sklearn", "datasets/images/flower.jpg", 0, "object"),
    ("astronaut.jpg", "skimage", "data/astronaut.png", 1, "face"),
    ("cameraman.jpg", "skimage", "data/camera.png", 1, "face"),
    ("grace_hopper.jpg", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", 1, "face"),
]


def package_file(package: str, rel: str) -> Path:
    import importlib

    return Path(importlib.import_module(package).__file__).resolve().parent / rel


def load(path: Path) -> np.ndarray:
    """BGR uint8 (alpha composited on white, as a viewer shows it)."""
    from PIL import Image

    im = Image.open(path)
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"))[:, :, ::-1])


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, package, rel, faces, category in SOURCES:
        img = load(package_file(package, rel))
        h, w = img.shape[:2]
        side = MAX_SIDE // 2 if category == "texture" else MAX_SIDE  # textures are alike all over
        side = max(h, w) if name in FULL_SIZE else side
        if max(h, w) > side:
            s = side / max(h, w)
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        dest = OUT / name
        params = [cv2.IMWRITE_JPEG_QUALITY, 85] if dest.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
        cv2.imwrite(str(dest), img, params)
        rows.append({"file": name, "faces": faces, "category": category, "source": f"{package}/{rel}"})
        print(f"{name}: {img.shape[1]}x{img.shape[0]}, {dest.stat().st_size / 1000:.0f} KB")
    with open(OUT / "labels.csv", "w", newline="") as fh:
        wr = csv.DictWriter(fh, ["file", "faces", "category", "source"])
        wr.writeheader()
        wr.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
