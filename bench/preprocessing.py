"""Does any other preparation of the raw PublicTest faces suit a model trained on fervid's faces?

The Training copy of FER-2013 in ``../shared`` was histogram-equalized (and JPEG-compressed) by
whoever published it; PublicTest and users' faces are raw, and fervid equalizes them with
OpenCV's ``equalizeHist``. This scores one model on PublicTest under variants of that step
(none, CLAHE, blur, sharpening, JPEG re-compression, equalizing twice), so a mismatch
between how training and test faces look would show up as a variant that scores higher.
Mean absolute Laplacian (how much fine detail a face has) is printed beside each, and for the
Training faces as the model sees them, for comparison.

    python -m bench.preprocessing [--model fervid/assets/model.safetensors] [--threads 2]
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: the same as `python -m bench.preprocessing`
    import os
    import sys
    from pathlib import Path

    _root = str(Path(__file__).resolve().parents[1])
    _path = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "bench.preprocessing", *sys.argv[1:]], {**os.environ, "PYTHONPATH": _path})

import argparse
from typing import Callable

import cv2
import numpy as np

from .common import FER_DATA, SHIPPED


def detail(faces: np.ndarray) -> float:
    return float(np.mean([np.abs(cv2.Laplacian(f, cv2.CV_32F)).mean() for f in faces[:3000]]))


def each(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda faces: np.stack([fn(f) for f in faces])


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    return each(lambda f: cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], 0))


def sharpen(amount: float) -> Callable[[np.ndarray], np.ndarray]:
    return each(lambda f: cv2.addWeighted(f, 1 + amount, cv2.GaussianBlur(f, (0, 0), 1.0), -amount, 0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(SHIPPED))
    ap.add_argument("--data", default=str(FER_DATA))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from fervid.data import ClassSet, read_source, split_mask
    from fervid.analysis.predictors import load_model_any, model_logits
    from fervid.preprocess import equalize_batch as eq

    torch.set_num_threads(args.threads)
    raw = read_source(args.data)
    train = np.asarray(raw.images[split_mask(raw, "Training")])
    test_mask = split_mask(raw, "PublicTest")
    test, labels = np.asarray(raw.images[test_mask]), ClassSet().label_map()[raw.labels[test_mask]]
    model, meta, _ = load_model_any(args.model)
    if tuple(meta["classes"]) != ClassSet().classes:
        raise SystemExit("error: this probe needs a 7-class model")

    blur = each(lambda f: cv2.GaussianBlur(f, (3, 3), 0.5))
    clahe = cv2.createCLAHE(2.0, (8, 8))
    equalized = eq(test)  # fervid's own step; most variants start from it
    variants = {
        "equalizeHist (fervid)": equalized, "raw": test, "CLAHE 2.0/8x8": each(clahe.apply)(test),
        "equalize twice": eq(equalized), "equalize, JPEG q90": jpeg(90)(equalized), "equalize, JPEG q75": jpeg(75)(equalized),
        "blur 0.5, equalize": eq(blur(test)), "equalize, blur 0.5": blur(equalized),
        **{f"equalize, sharpen {a}": sharpen(a)(equalized) for a in (0.2, 0.4, 0.7)},
    }
    print(f"model {args.model}; Training faces as trained on (equalized again): detail {detail(eq(train)):.1f}")
    print(f"{'PublicTest faces':26s} {'accuracy':>9s} {'detail':>7s}")
    for name, faces in variants.items():
        acc = float((model_logits(model, faces, precision="fp32").argmax(1) == labels).mean())
        print(f"{name:26s} {100 * acc:8.2f}% {detail(faces):7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
