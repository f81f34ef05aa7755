"""End-to-end speed: ``predict`` on a folder of photos and ``video`` on a clip, stage by stage.

Both run fervid's own code paths: ``Recognizer.predict`` plus ``fervid.recognition.draw.annotate`` and an
image write per photo (what ``fervid predict`` does per file), and ``fervid.recognition.video.process_video``
writing the annotated video and the per-frame CSV (``fervid video --no-timeline``). A
:class:`StageRecognizer` only adds clocks around the recogniser's steps, so alignment and
classification, which ``process_video`` times as one, can be told apart.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2

from ..common import SHIPPED_ONNX, log, rate
from ..scenes import recall
from .classifier import shipped_arch


def stage_recognizer(threads: int, detect_size: int | None = None, model: str | None = None):
    """A Recognizer that also keeps seconds spent in detection, alignment and classification."""
    from fervid.recognition.recognize import Recognizer

    class StageRecognizer(Recognizer):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            self.clock = {"detect": 0.0, "align": 0.0, "classify": 0.0}

        def detect(self, image):
            t0 = time.perf_counter()
            try:
                return super().detect(image)
            finally:
                self.clock["detect"] += time.perf_counter() - t0

        def crops(self, gray, detections):
            t0 = time.perf_counter()
            try:
                return super().crops(gray, detections)
            finally:
                self.clock["align"] += time.perf_counter() - t0

        def classify(self, gray, detections):
            t0, before = time.perf_counter(), self.clock["align"]
            try:
                return super().classify(gray, detections)
            finally:  # all of classify but the alignment inside it
                self.clock["classify"] += time.perf_counter() - t0 - (self.clock["align"] - before)

    kw = {"detect_size": detect_size} if detect_size else {}
    return StageRecognizer(model, threads=threads, **kw)


def predict_folder(folder: Path, out: Path, threads: int, passes: int, detect_size: int | None = None) -> dict:
    """Images/s of predict + annotate + write over ``folder``; best of ``passes`` passes."""
    from fervid.recognition.draw import annotate
    from fervid.images import read_image

    truth = json.loads((folder / "truth.json").read_text())
    rec = stage_recognizer(threads, detect_size)
    out.mkdir(parents=True, exist_ok=True)
    rec.predict(read_image(folder / truth[0]["file"]))  # warm-up
    best: dict[str, Any] = {}
    for _ in range(max(1, passes)):
        rec.clock = dict.fromkeys(rec.clock, 0.0)
        clock = {"read": 0.0, "draw+write": 0.0}
        found: dict[str, list] = {}
        t0 = time.perf_counter()
        for item in truth:
            t1 = time.perf_counter()
            image = read_image(folder / item["file"])
            t2 = time.perf_counter()
            faces = rec.predict(image)
            t3 = time.perf_counter()
            cv2.imwrite(str(out / item["file"]), annotate(image, faces))
            clock["read"] += t2 - t1
            clock["draw+write"] += time.perf_counter() - t3
            found[item["file"]] = [list(f.box) for f in faces]
        total = time.perf_counter() - t0
        if not best or total < best["seconds"]:
            n = len(truth)
            stages = {"read": clock["read"], **rec.clock, "draw+write": clock["draw+write"]}
            best = {"images": n, "faces": sum(len(t["faces"]) for t in truth),
                    "faces_found": sum(len(v) for v in found.values()), "recall": round(recall(truth, found), 4),
                    "seconds": total, "images_per_s": round(n / total, 2),
                    "ms_per_image": {k: round(1000 * v / n, 2) for k, v in stages.items()}}
    best["seconds"] = round(best["seconds"], 3)
    return best


def opencv_detector(threads: int, detect_size: int):
    """fervid's detector as it was before it ran YuNet in ONNX Runtime: OpenCV's FaceDetectorYN
    (kept here only to measure the change); None where this OpenCV has no FaceDetectorYN."""
    import cv2
    import numpy as np

    from fervid.recognition.detect import NMS_THRESHOLD, TOP_K, YUNET_PATH, FaceDetector

    if not hasattr(cv2, "FaceDetectorYN"):
        return None

    class OpenCVYuNet(FaceDetector):
        def _run(self, bgr, threshold=None):  # threshold: the face check's gray look asks for a lower one
            size = (bgr.shape[1], bgr.shape[0])
            if getattr(self, "_cv", None) is None:
                level = cv2.utils.logging.getLogLevel()
                cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # OpenCV 5's backend note
                self._cv = cv2.FaceDetectorYN.create(str(YUNET_PATH), "", size, self.min_confidence,
                                                     NMS_THRESHOLD, TOP_K)
                cv2.utils.logging.setLogLevel(level)
            self._cv.setInputSize(size)
            self._cv.setScoreThreshold(self.min_confidence if threshold is None else threshold)
            _, faces = self._cv.detect(bgr)
            return faces if faces is not None else np.zeros((0, 15), np.float32)

    return OpenCVYuNet(detect_size=detect_size, threads=threads)


def video(clip: Path, out: Path, threads: int, passes: int, detect_size: int | None = None,
          model: str | None = None, detector: Any = None) -> dict:
    """Frames/s of ``process_video`` (annotated video + CSV) and ms per frame per stage; best pass."""
    from fervid.recognition.video import process_video

    best: dict[str, Any] = {}
    for k in range(max(1, passes)):
        rec = stage_recognizer(threads, detect_size, model)
        if detector is not None:
            rec.detector = detector
        dest = out / f"pass{k}.mp4"
        s = process_video(rec, clip, dest, csv_path=dest.with_suffix(".csv"), progress=False,
                          notify=lambda m: None, overwrite=True)
        if best and s.fps <= best["fps"]:
            continue
        t = dict(s.timings)
        split = {"decode": t.get("decode", 0.0), "detect": rec.clock["detect"], "align": rec.clock["align"],
                 "classify": rec.clock["classify"], "track": t.get("track", 0.0), "draw": t.get("draw", 0.0),
                 "encode": t.get("encode", 0.0)}
        split["other"] = max(0.0, s.stream_seconds - sum(split.values()))  # CSV rows, loop, progress
        best = {"frames": s.frames, "faces": s.faces, "fps": round(s.fps, 2), "seconds": round(s.stream_seconds, 3),
                "ms_per_frame": {k2: round(1000 * v / max(1, s.frames), 2) for k2, v in split.items()}}
    return best


def sweep(folder: Path, clip: Path, sizes: list[int], threads: int, seconds: float) -> list[dict]:
    """For each detect size: pasted faces found in the photos, and detection ms on a clip frame."""
    from fervid.recognition.detect import FaceDetector

    truth = json.loads((folder / "truth.json").read_text())
    photos = {t["file"]: cv2.imread(str(folder / t["file"])) for t in truth}
    cap = cv2.VideoCapture(str(clip))
    ok, frame = cap.read()
    cap.release()
    rows = []
    for size in sizes:
        det = FaceDetector(detect_size=size, threads=threads)
        found = {f: [list(d.box) for d in det.detect(img)] for f, img in photos.items()}
        per_s = rate(lambda: det.detect(frame), 1, seconds, 3) if ok else 0.0
        rows.append({"detect_size": size, "recall": round(recall(truth, found), 4),
                     "detect_ms_640x480": round(1000 / per_s, 2) if per_s else None})
        log(f"detect size {size}: recall {rows[-1]['recall']:.3f}, {rows[-1]['detect_ms_640x480']} ms/frame")
    return rows


def run(folder: Path, clip: Path, tmp: Path, threads: int, passes: int, sizes: list[int],
        seconds: float) -> dict[str, Any]:
    """The end-to-end section: detect-size sweep, predict on the photos, video on the clip."""
    t0 = time.perf_counter()
    from fervid.recognition.detect import DETECT_SIZE

    result: dict[str, Any] = {"detect_size_default": DETECT_SIZE,
                              "detect_sizes": sweep(folder, clip, sizes, threads, seconds)}
    result["predict"] = predict_folder(folder, tmp / "predict-out", threads, passes)
    log(f"predict: {result['predict']['images_per_s']} images/s, recall {result['predict']['recall']}")
    result["video"] = video(clip, tmp, threads, passes)
    log(f"video: {result['video']['fps']} frames/s; ms/frame {result['video']['ms_per_frame']}")
    small, variants = min(sizes), []
    old = opencv_detector(threads, 640)
    if old is not None:
        variants.append(("OpenCV's YuNet at 640 (before)", {"detector": old}))
    variants.append((f"`--detect-size {small}`", {"detect_size": small}))
    # The shipped model in int8, under the name the classifier section gives it when it ran;
    # pointless when the shipped ONNX file is int8 already (the rows above are then int8).
    int8 = tmp / f"{shipped_arch()}-int8.onnx"
    sidecar = SHIPPED_ONNX.with_suffix(".json")
    shipped_int8 = sidecar.is_file() and json.loads(sidecar.read_text()).get("onnx", {}).get("weights") == "int8"
    if int8.is_file() and not shipped_int8:
        variants.append((f"int8 model, `--detect-size {small}`", {"detect_size": small, "model": str(int8)}))
    result["video_variants"] = []
    for label, kw in variants:
        result["video_variants"].append({"label": label, **video(clip, tmp, threads, 1, **kw)})
        log(f"video, {label}: {result['video_variants'][-1]['fps']} frames/s")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
