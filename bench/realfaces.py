"""Recognition on real photos: how often a face is found and how often its expression is right.

Runs the full pipeline (YuNet detection, alignment, classification) over
``../shared/datasets/realfaces/<emotion>/*.jpg`` (``manifest.csv``: path,label). The photos
are tight 350x350 crops of one face each, so the largest detected face is taken as the
answer. ``contempt`` is no class of any FER model: those images are reported apart and left
out of the accuracies. An image where no face is found counts as wrong in "accuracy over all
images".

    python -m bench.realfaces --model runs/vgg_s/best.onnx
    python -m bench.realfaces --model m.onnx --pad 0,0.2,0.35 --scale 0.9,1.0,1.1 --eye-y 0.37,0.39,0.41
    python -m bench.realfaces --prior fer2013,uniform   # the shipped probabilities and logit-adjusted ones

Comma lists sweep every combination; detections are reused across alignment settings.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: the same as `python -m bench.realfaces`
    import os
    import sys
    from pathlib import Path

    _root = str(Path(__file__).resolve().parents[1])
    _path = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "bench.realfaces", *sys.argv[1:]], {**os.environ, "PYTHONPATH": _path})

import argparse
import csv
import itertools
import json
import pickle
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from fervid import preprocess  # noqa: E402
from fervid.recognition.detect import DETECT_SIZE, FaceDetector  # noqa: E402
from fervid.images import read_image  # noqa: E402
from fervid.recognition.recognize import Recognizer  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "realfaces"


class AlwaysPad(FaceDetector):
    """Pads before the first detection pass too (to compare with padding only on a miss)."""

    def _detect_scaled(self, bgr, pad):
        return super()._detect_scaled(bgr, self.pad)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def load_manifest(root: Path, limit: int, seed: int = 0) -> list[tuple[Path, str]]:
    with open(root / "manifest.csv", newline="") as fh:
        items = [(root / r["path"], r["label"].strip().lower()) for r in csv.DictReader(fh)]
    if limit and limit < len(items):  # a seeded sample keeps every class represented roughly in proportion
        keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:limit])
        items = [items[i] for i in keep]
    return items


def score(preds: list[str | None], labels: list[str], classes: list[str]) -> dict:
    """Faces found, accuracies and per-class recall; contempt (no model class) reported apart."""
    known = [i for i, y in enumerate(labels) if y in classes]
    found = [i for i in known if preds[i] is not None]
    right = [i for i in known if preds[i] == labels[i]]
    recall = {}
    for c in classes:
        idx = [i for i in known if labels[i] == c]
        if idx:
            recall[c] = round(sum(preds[i] == c for i in idx) / len(idx), 4)
    other = [i for i, y in enumerate(labels) if y not in classes]
    return {
        "images": len(labels),
        "faces_found": round(sum(p is not None for p in preds) / max(1, len(preds)), 4),
        "acc_with_face": round(len(right) / max(1, len(found)), 4),
        "acc_all": round(len(right) / max(1, len(known)), 4),
        "balanced_acc_all": round(float(np.mean(list(recall.values()))), 4) if recall else 0.0,
        "recall": recall,
        "excluded": {y: dict(Counter(str(preds[i]) for i in other if labels[i] == y))
                     for y in sorted({labels[i] for i in other})},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="fervid model (.onnx/.json/.safetensors/run folder); default: shipped model")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="realfaces folder with manifest.csv")
    ap.add_argument("--pad", help="padding before the retry detection, comma list to sweep (default: fervid's)")
    ap.add_argument("--scale", help="ALIGN_SCALE values to sweep (crop side / face box height)")
    ap.add_argument("--eye-y", help="ALIGN_EYE_Y values to sweep (eye line height in the crop)")
    ap.add_argument("--pad-always", action="store_true",
                    help="pad every image before detection, not only those where no face was found")
    ap.add_argument("--landmark-size", action="store_true",
                    help="size the crop from the landmarks, not the face box (--scale then sets ALIGN_SCALE_LM)")
    ap.add_argument("--no-rotate", action="store_true", help="do not level the eyes (for comparison)")
    ap.add_argument("--min-confidence", type=float, default=0.6, help="detector threshold (default 0.6)")
    ap.add_argument("--detect-size", type=int, default=DETECT_SIZE,
                    help=f"longest side images are shrunk to for detection (default {DETECT_SIZE})")
    ap.add_argument("--limit", type=int, default=0, help="use a seeded sample of N images (0 = all)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    ap.add_argument("--prior", default="fer2013",
                    help="class prior of the probabilities, as fervid predict --prior: fer2013, uniform or a "
                    "class->weight file; comma list to compare several on the same detections")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--cache", help="keep detections in this .pkl between runs (alignment sweeps then skip detection)")
    args = ap.parse_args(argv)

    root = Path(args.data)
    if not (root / "manifest.csv").is_file():
        print(f"realfaces: {root / 'manifest.csv'} not found", file=sys.stderr)
        return 2
    items = load_manifest(root, args.limit)
    priors = [v.strip() for v in args.prior.split(",") if v.strip()] or ["fer2013"]
    recs = {prior: Recognizer(args.model, min_confidence=args.min_confidence, threads=args.threads, prior=prior)
            for prior in priors}
    rec = recs[priors[0]]
    labels = [y for _, y in items]
    pads = floats(args.pad) if args.pad else [FaceDetector().pad]
    scales = floats(args.scale) if args.scale else [
        preprocess.ALIGN_SCALE_LM if args.landmark_size else preprocess.ALIGN_SCALE]
    eye_ys = floats(args.eye_y) if args.eye_y else [preprocess.ALIGN_EYE_Y]
    print(f"model {rec.model_path} ({rec.meta.get('arch')}, val acc {rec.meta.get('metrics', {}).get('val_acc')}); "
          f"{len(items)} images from {root}", flush=True)
    results = []
    grays = [None] * len(items)
    for pad in pads:
        det = FaceDetector(args.min_confidence, 20, pad=pad, detect_size=args.detect_size)
        if args.pad_always and pad > 0:
            det = AlwaysPad(args.min_confidence, 20, pad=pad, detect_size=args.detect_size)
        t0 = time.perf_counter()
        key = (str(root), args.limit, pad, bool(args.pad_always), args.min_confidence, args.detect_size)
        cache = pickle.loads(Path(args.cache).read_bytes()) if args.cache and Path(args.cache).is_file() else {}
        cached = key in cache
        dets = cache.get(key, [])
        for k, (path, _) in enumerate(items):
            image = read_image(path)
            grays[k] = preprocess.to_gray(image)
            if not cached:
                found = det.detect(image)
                dets.append(found[0] if found else None)  # largest face
        if args.cache and not cached:
            cache[key] = dets
            Path(args.cache).write_bytes(pickle.dumps(cache))
        t_det = time.perf_counter() - t0
        for scale, eye_y in itertools.product(scales, eye_ys):
            preprocess.ALIGN_EYE_Y = eye_y
            if args.landmark_size:
                preprocess.ALIGN_SCALE_LM = scale
            else:
                preprocess.ALIGN_SCALE = scale
            t1 = time.perf_counter()
            have = [k for k, d in enumerate(dets) if d is not None]
            crops = np.stack([preprocess.align_face(grays[k], dets[k].landmarks,
                                                    None if args.landmark_size else dets[k].face_size,
                                                    rotate=not args.no_rotate) for k in have])
            for prior, rec in recs.items():
                probs = np.concatenate([rec.probabilities(crops[i:i + 64]) for i in range(0, len(crops), 64)])
                preds: list[str | None] = [None] * len(items)
                for k, p in zip(have, probs):
                    preds[k] = rec.classes[int(p.argmax())]
                r = score(preds, labels, rec.classes)
                r.update(detect_size=args.detect_size, pad=pad, pad_always=bool(args.pad_always),
                         landmark_size=bool(args.landmark_size), scale=scale, eye_y=eye_y, rotate=not args.no_rotate,
                         prior=prior, detect_ms=None if cached else round(1000 * t_det / len(items), 2),
                         classify_ms=round(1000 * (time.perf_counter() - t1) / len(items), 2))
                results.append(r)
                print(f"prior {prior}, pad {pad:.2f} scale {scale:.2f} eye_y {eye_y:.3f}: "
                      f"faces found {r['faces_found']:.1%}, "
                      f"accuracy with a face {r['acc_with_face']:.1%}, over all 7-class images {r['acc_all']:.1%} "
                      f"(balanced {r['balanced_acc_all']:.1%})"
                      + ("" if cached else f"; detect {r['detect_ms']} ms/img"), flush=True)
    best = max(results, key=lambda r: r["acc_all"])
    print("per-class recall (best setting): " + ", ".join(f"{c} {v:.1%}" for c, v in best["recall"].items()))
    for y, counts in best["excluded"].items():
        print(f"excluded {y} ({sum(counts.values())} images), predicted as: {counts}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
