"""Face detection check: no faces on photos without one, exact counts on photos with several, and
no real face lost, before and after fervid's second look at each detection (fervid.recognition.face_check).

Sets (labels in tests/data/detection/labels.csv; sources and licences in its README):

* **no-face photos** (tests/data/detection, faces=0): animals, objects, textures, text, drawings
  from scikit-image, scikit-learn and matplotlib's sample data. Reported: faces found on each.
* **face photos**: the committed portraits (faces=1) and multi-face scenes composed from
  committed images only (:func:`scenes`: portraits side by side, portraits among no-face photos,
  FER faces in grids and a 24-face crowd, small faces, a face next to the headlight).
  Reported: exact-count rate.
* **realfaces** (``../shared/datasets/realfaces``, when present; never committed): 1,803 tight
  crops of one face each. Reported: face-found rate, and images with more than one face.
* ``--wheels DIR`` (optional): images shipped inside PyPI wheels in DIR whose licences do not
  allow committing them here (``pip download ultralytics imgaug --no-deps -d DIR``): a street
  photo and a two-person photo (2 faces each) and a quokka (0).

Every configuration is applied to the same YuNet candidates (each image detected once at a low
threshold, with and without the retry padding), reproducing ``FaceDetector.detect`` exactly:
the tests check the emulation against the detector itself.

    python bench/detection.py                       # writes docs/bench/detection/{README.md,results.json}
    python bench/detection.py --wheels /tmp/wheels --out /tmp/det
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: the same as `python -m bench.detection`
    import os
    import sys
    from pathlib import Path

    _root = str(Path(__file__).resolve().parents[1])
    _path = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "bench.detection", *sys.argv[1:]], {**os.environ, "PYTHONPATH": _path})

import argparse
import csv
import json
import pickle
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fervid.recognition import face_check
from fervid.recognition.detect import Detection, FaceDetector

ROOT = Path(__file__).resolve().parents[1]

SET = ROOT / "tests" / "data" / "detection"
FER = ROOT / "tests" / "data" / "fer"
REALFACES = ROOT.parent / "shared" / "datasets" / "realfaces"
OUT = ROOT / "docs" / "bench" / "detection"
#: Candidates are gathered at this score; every configuration compared uses a higher one.
FLOOR = 0.3
#: No configuration compared asks more than this of a face (score, gray look).
STRICTEST = 0.85
#: Images inside PyPI wheels (--wheels): wheel name prefix, path in the wheel, faces, category.
WHEEL_IMAGES = [
    ("ultralytics-", "ultralytics/assets/bus.jpg", 2, "street"),
    ("ultralytics-", "ultralytics/assets/zidane.jpg", 2, "people"),
    ("imgaug-", "imgaug/quokka.jpg", 0, "animal"),
]


@dataclass
class Item:
    name: str
    image: np.ndarray
    faces: int      # human faces in it
    category: str
    group: str      # noface, faces, realfaces


def read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: cannot read")
    return img


def check_set(folder: Path = SET) -> list[Item]:
    """The committed photos with their labelled face counts."""
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [Item(r["file"], read(folder / r["file"]), int(r["faces"]), r["category"],
                 "noface" if int(r["faces"]) == 0 else "faces") for r in rows]


def _fit(img: np.ndarray, w: int, h: int, fill: int = 128) -> np.ndarray:
    """``img`` scaled to fit a w x h cell, centred on a gray background."""
    s = min(w / img.shape[1], h / img.shape[0])
    small = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    cell = np.full((h, w, 3), fill, np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    cell[y:y + small.shape[0], x:x + small.shape[1]] = small
    return cell


def _fer_faces(n: int, size: int = 64) -> list[np.ndarray]:
    """The first ``n`` committed FER faces that YuNet finds on their own at ``size`` px (pasted on a
    256 px gray canvas, the plain 0.6 threshold): a scene of them can be expected to be counted exactly."""
    det = FaceDetector(0.6, face_check=False, threads=1)
    out = []
    for p in sorted((FER / "test").glob("*/*.jpg")) + sorted((FER / "train").glob("*/*.jpg")):
        face = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
        canvas = np.full((256, 256, 3), 128, np.uint8)
        canvas[96:96 + size, 96:96 + size] = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        if len(det.detect(canvas)) == 1:
            out.append(face)
        if len(out) == n:
            break
    return out


def _grid(faces: list[np.ndarray], cols: int, sizes: list[int], gap: int = 12, fill: int = 128) -> np.ndarray:
    rows = -(-len(faces) // cols)
    cell = max(sizes) + gap
    canvas = np.full((rows * cell + gap, cols * cell + gap, 3), fill, np.uint8)
    for i, (f, s) in enumerate(zip(faces, sizes)):
        r, c = divmod(i, cols)
        y, x = gap + r * cell + (cell - gap - s) // 2, gap + c * cell + (cell - gap - s) // 2
        canvas[y:y + s, x:x + s] = cv2.resize(f, (s, s), interpolation=cv2.INTER_CUBIC)
    return canvas


def scenes(folder: Path = SET) -> list[Item]:
    """Multi-face scenes composed from committed images only, with their known face counts."""
    im = {n: read(folder / n) for n in ("astronaut.jpg", "grace_hopper.jpg", "cameraman.jpg", "cat.jpg",
                                         "motorcycle_left.jpg", "coffee.jpg", "grass.jpg", "china.jpg")}
    out = []
    portraits = [im["astronaut.jpg"], im["grace_hopper.jpg"], im["cameraman.jpg"]]
    heads = [im["astronaut.jpg"][0:300, 100:400], im["grace_hopper.jpg"][40:380, 60:400],
             im["cameraman.jpg"][60:330, 110:380]]  # head and shoulders
    out.append(Item("scene_portraits_3", np.hstack([_fit(p, 300, 340) for p in portraits]), 3, "people", "faces"))
    out.append(Item("scene_heads_3", np.hstack([_fit(p, 200, 220) for p in heads]), 3, "people", "faces"))
    cells = [heads[0], im["motorcycle_left.jpg"], heads[1], im["cat.jpg"], heads[2], im["coffee.jpg"]]
    grid = np.vstack([np.hstack([_fit(c, 240, 220) for c in cells[r * 3:r * 3 + 3]]) for r in range(2)])
    out.append(Item("scene_portraits_objects", grid, 3, "people+objects", "faces"))
    rng = np.random.default_rng(0)
    fer = _fer_faces(36)
    # sizes such that the faces stay at least 64 px where YuNet looks (the scene shrunk to 480 px)
    out.append(Item("scene_fer_grid_12", _grid(fer[:12], 4, [int(v) for v in rng.integers(90, 112, 12)]),
                    12, "fer", "faces"))
    out.append(Item("scene_fer_crowd_24", _grid(fer[12:36], 6, [int(v) for v in rng.integers(80, 110, 24)], gap=8),
                    24, "fer", "faces"))
    # three sizes of one portrait on grass: small faces in a textured scene
    bg = cv2.resize(im["grass.jpg"], (720, 480), interpolation=cv2.INTER_CUBIC)
    gh = im["grace_hopper.jpg"]
    for (x, y), h in zip([(20, 40), (300, 60), (560, 200)], (260, 170, 110)):
        p = cv2.resize(gh, (round(gh.shape[1] * h / gh.shape[0]), h), interpolation=cv2.INTER_AREA)
        bg[y:y + h, x:x + p.shape[1]] = p
    out.append(Item("scene_sizes_on_grass", bg, 3, "people+texture", "faces"))
    # a face next to the headlight that YuNet scores 0.62: the headlight must go, the face stay
    moto = im["motorcycle_left.jpg"].copy()
    face = im["astronaut.jpg"][20:280, 130:330]
    moto[20:280, 20:220] = face
    out.append(Item("scene_face_and_headlight", moto, 1, "people+objects", "faces"))
    china = im["china.jpg"].copy()
    for k, x in enumerate((30, 280)):
        p = _fit(portraits[k], 200, 230)
        china[60:290, x:x + 200] = p
    out.append(Item("scene_two_in_a_temple", china, 2, "people+objects", "faces"))
    return out


def wheel_items(folder: Path) -> list[Item]:
    """The WHEEL_IMAGES found in the wheels in ``folder`` (missing ones are skipped, and said)."""
    out = []
    wheels = sorted(folder.glob("*.whl"))
    for prefix, inner, faces, cat in WHEEL_IMAGES:
        whl = next((w for w in wheels if w.name.startswith(prefix)), None)
        if whl is None:
            print(f"--wheels: no {prefix}*.whl in {folder}; {inner} skipped", file=sys.stderr)
            continue
        with zipfile.ZipFile(whl) as z:
            data = np.frombuffer(z.read(inner), np.uint8)
        out.append(Item(f"{whl.name.split('-')[0]}:{Path(inner).name}", cv2.imdecode(data, cv2.IMREAD_COLOR),
                        faces, cat, "noface" if faces == 0 else "faces"))
    return out


def realfaces(root: Path = REALFACES, limit: int = 0) -> list[Item]:
    from fervid.images import read_image

    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if limit:
        rows = rows[::max(1, len(rows) // limit)][:limit]
    return [Item(r["path"], read_image(root / r["path"]), 1, "realfaces", "realfaces") for r in rows]


# ---- candidates and configurations ----------------------------------------------------------

@dataclass
class Candidates:
    """YuNet's detections of one image at FLOOR: the first pass and the padded retry, each
    detection with its score in the image's gray copy (None: the image is gray itself)."""
    first: list[tuple[Detection, float | None]]
    first_scores: list[float]  # scores of the first pass's raw rows (before min_face and the size checks)
    padded: list[tuple[Detection, float | None]]


def _pass(det: FaceDetector, image: np.ndarray, gray: np.ndarray | None, pad: float) -> tuple[list, np.ndarray]:
    rows = det._detect_scaled(image, pad)
    grows = det._detect_scaled(gray, pad) if gray is not None and len(rows) else None
    out = []
    for r in rows:
        found = det._faces(r[None], image.shape)
        if found:
            out.append((found[0], None if grows is None else face_check.gray_score(r, grows)))
    return out, rows


def candidates(det: FaceDetector, image: np.ndarray) -> Candidates:
    assert det.min_confidence <= FLOOR and not det.face_check
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    image = np.ascontiguousarray(image)
    gray = face_check.gray_copy(image)
    first, rows = _pass(det, image, gray, 0.0)
    # The padded retry is only looked at when the first pass keeps nothing; a face there that
    # passes the strictest configuration compared (STRICTEST) means no configuration retries.
    sure = any(d.score >= STRICTEST and (g is None or g >= STRICTEST) and face_check.plausible(d.landmarks, d.face_size)
               for d, g in first)
    padded = _pass(det, image, gray, det.pad)[0] if det.pad > 0 and not sure else []
    return Candidates(first, [float(r[14]) for r in rows], padded)


@dataclass(frozen=True)
class Config:
    name: str
    min_confidence: float = 0.6
    geometry: bool = False   # the landmark geometry test (face_check.plausible)
    gray: bool = False       # the gray look (face_check.GRAY_SCORE in the gray copy)
    gray_score: float = face_check.GRAY_SCORE

    @property
    def checking(self) -> bool:  # FaceDetector(face_check=True): retries with padding when nothing passed
        return self.geometry or self.gray

    def keeps(self, d: Detection, gray_score: float | None) -> bool:
        if d.score < self.min_confidence:
            return False
        if self.geometry and not face_check.plausible(d.landmarks, d.face_size):
            return False
        return (not self.gray or gray_score is None or d.score >= face_check.GRAY_BELOW
                or gray_score >= self.gray_score)

    def apply(self, c: Candidates) -> list[Detection]:
        """What FaceDetector.detect returns under this configuration (see its retry rule)."""
        first = [d for d, g in c.first if self.keeps(d, g)]
        if first:
            return first
        if self.checking or not any(s >= self.min_confidence for s in c.first_scores):
            return [d for d, g in c.padded if self.keeps(d, g)]
        return []


def default_configs() -> list[Config]:
    """Before and after (fervid's defaults without and with the check), then the routes measured alone."""
    return [Config("before: score >= 0.6 (fervid until now)"),
            Config(f"after: face check (gray look >= {face_check.GRAY_SCORE:g} for scores under "
                   f"{face_check.GRAY_BELOW:g}, + geometry)", geometry=True, gray=True),
            Config("geometry only", geometry=True),
            Config("gray look only", gray=True)] + [
        Config(f"face check with gray look >= {t:g}", geometry=True, gray=True, gray_score=t)
        for t in (0.45, 0.5, 0.55, 0.6) if t != face_check.GRAY_SCORE] + [
        Config(f"score >= {t:g} only", min_confidence=t) for t in (0.65, 0.7, 0.75, 0.8, 0.85)]


def evaluate(items: list[Item], cands: list[Candidates], cfg: Config) -> dict:
    per = []
    for it, c in zip(items, cands):
        found = cfg.apply(c)
        per.append({"name": it.name, "group": it.group, "category": it.category, "faces": it.faces,
                    "found": len(found), "scores": [round(d.score, 3) for d in found]})
    noface = [p for p in per if p["group"] == "noface"]
    faces = [p for p in per if p["group"] == "faces"]
    real = [p for p in per if p["group"] == "realfaces"]
    res = {
        "config": cfg.name,
        "noface_photos": len(noface),
        "noface_with_faces": sum(p["found"] > 0 for p in noface),
        "false_faces": sum(p["found"] for p in noface),
        "face_photos": len(faces),
        "exact_count": sum(p["found"] == p["faces"] for p in faces),
        "per_image": [p for p in per if p["group"] != "realfaces"],
    }
    if real:
        res.update(realfaces=len(real), realfaces_found=sum(p["found"] > 0 for p in real),
                   realfaces_extra=sum(p["found"] > 1 for p in real),
                   realfaces_lost=[p["name"] for p in real if p["found"] == 0])
    return res


def markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Face detection check: before and after the second look", "",
             f"Written by `{meta['command']}` ({meta['date']}). Sets and sources: "
             "[tests/data/detection/README.md](../../../tests/data/detection/README.md); the check: "
             "`fervid/recognition/face_check.py`.", "",
             "*before* is fervid until this check, *after* its default now; the other rows are each route "
             "alone (score thresholds, the geometry test, the gray look at other thresholds). The photos "
             "include " + ("the 3 from PyPI wheels that are not committed (`--wheels DIR`, after "
             "`pip download ultralytics imgaug --no-deps -d DIR`); " if meta.get("wheels") else "") +
             "multi-face scenes are composed from committed images (`scenes()`). `--cache` only reuses "
             "YuNet's detections between runs.", "",
             "| configuration | no-face photos with a face | false faces | multi/one-face photos counted exactly |"
             + (" realfaces found | realfaces with >1 face |" if "realfaces" in results[0] else ""),
             "| --- | --- | --- | --- |" + (" --- | --- |" if "realfaces" in results[0] else "")]
    for r in results:
        row = (f"| {r['config']} | {r['noface_with_faces']} of {r['noface_photos']} | {r['false_faces']} | "
               f"{r['exact_count']} of {r['face_photos']} ({r['exact_count'] / max(1, r['face_photos']):.1%}) |")
        if "realfaces" in r:
            row += (f" {r['realfaces_found']} of {r['realfaces']} ({r['realfaces_found'] / r['realfaces']:.2%}) | "
                    f"{r['realfaces_extra']} |")
        lines.append(row)
    before, after = results[0], results[1]
    lines += ["", "## Per photo, before and after", "",
              "| photo | kind | faces | before: found (scores) | after: found (scores) |", "| --- | --- | --- | --- | --- |"]
    for b, a in zip(before["per_image"], after["per_image"]):
        mark = "" if a["found"] == a["faces"] else " **x**"
        lines.append(f"| {b['name']} | {b['category']} | {b['faces']} | {b['found']} {b['scores'] or ''} | "
                     f"{a['found']} {a['scores'] or ''}{mark} |")
    if "realfaces" in before:
        lines += ["", f"realfaces images with no face before: {', '.join(before['realfaces_lost']) or 'none'}; "
                  f"after: {', '.join(after['realfaces_lost']) or 'none'}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(OUT), help=f"report folder (default: {OUT.relative_to(ROOT)})")
    ap.add_argument("--realfaces", default=str(REALFACES), help="realfaces folder (skipped when absent)")
    ap.add_argument("--limit", type=int, default=0, help="realfaces: every k-th image, N in all (0 = all)")
    ap.add_argument("--wheels", help="folder of PyPI wheels to take extra photos from (see WHEEL_IMAGES)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", help="keep the YuNet candidates in this .pkl between runs (for sweeps)")
    args = ap.parse_args(argv)

    t0 = time.time()
    items = check_set() + scenes()
    if args.wheels:
        items += wheel_items(Path(args.wheels))
    root = Path(args.realfaces)
    if (root / "manifest.csv").is_file():
        items += realfaces(root, args.limit)
    else:
        print(f"realfaces: {root} not found, skipped", file=sys.stderr)
    det = FaceDetector(FLOOR, face_check=False, threads=args.threads)
    cache = {}
    if args.cache and Path(args.cache).is_file():
        cache = pickle.loads(Path(args.cache).read_bytes())
    cands = []
    for k, it in enumerate(items):
        key = (it.group, it.name, it.image.shape, int(it.image.sum()))
        if key not in cache:
            cache[key] = candidates(det, it.image)
        cands.append(cache[key])
        if k % 200 == 199:
            print(f"{k + 1}/{len(items)} images", file=sys.stderr, flush=True)
    if args.cache:
        Path(args.cache).write_bytes(pickle.dumps(cache))
    results = [evaluate(items, cands, cfg) for cfg in default_configs()]
    for r in results:
        print(f"{r['config']}: {r['noface_with_faces']}/{r['noface_photos']} no-face photos with a face "
              f"({r['false_faces']} false faces); exact counts {r['exact_count']}/{r['face_photos']}"
              + (f"; realfaces found {r['realfaces_found']}/{r['realfaces']}, >1 face {r['realfaces_extra']}"
                 if "realfaces" in r else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python bench/detection.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
            "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1),
            "wheels": bool(args.wheels), "floor": FLOOR, "gray_score": face_check.GRAY_SCORE, "gray_below": face_check.GRAY_BELOW,
            "gray_iou": face_check.GRAY_IOU,
            "bounds": face_check.BOUNDS}
    (out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    (out / "README.md").write_text(markdown(results, meta))
    print(f"wrote {out / 'README.md'} and results.json ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
