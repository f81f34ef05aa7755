"""The peer: the ``fer`` package (PyPI) measured on the same faces, photos and clip as fervid.

Runs under the peer's own Python (``--peer-python``, a virtual environment with fer and
TensorFlow; see bench/setup_peer.sh), never imports fervid, and writes one JSON file.
fer is used as its README shows: ``FER()`` (Haar cascade detector, and since fer 25 the
quantised TFLite copy of its Keras model, one face per call) and ``Video.analyze``. Its
Keras model (``FER(use_tflite=False)``) is timed too, called the way fer calls it.

    python -m bench.sections.peer_fer --faces faces.npz --photos DIR --clip clip.mp4 --out peer.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TQDM_DISABLE", "1")
warnings.filterwarnings("ignore")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ..common import rate  # noqa: E402  (pure Python: no fervid)
from ..scenes import recall  # noqa: E402

BATCHES = (1, 8, 32, 256)


def keras_mflops(model) -> float:
    """Multiply-adds x 2 of the convolutions and dense layers for one face (as torch's
    FlopCounterMode counts fervid's models: element-wise layers are not counted)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        try:
            out = layer.output.shape
            cin = layer.input.shape[-1]
        except (AttributeError, ValueError):
            continue
        if kind == "Conv2D":
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw * cin // layer.groups
        elif kind == "SeparableConv2D":
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * cin * kh * kw + out[1] * out[2] * out[3] * cin
        elif kind == "DepthwiseConv2D":
            kh, kw = layer.kernel_size
            total += out[1] * out[2] * out[3] * kh * kw
        elif kind == "Dense":
            total += cin * out[-1]
    return round(2 * total / 1e6, 2)


def to_fer_input(faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """48x48 uint8 faces as fer's classifier takes them: resized, scaled to [-1, 1]."""
    x = np.stack([cv2.resize(f, size) for f in faces]).astype("float32")
    return (x / 255.0 - 0.5) * 2.0


def classifier(detectors: dict, faces: np.ndarray, labels: np.ndarray, eq: np.ndarray, seconds: float,
               windows: int) -> dict:
    out: dict = {"rows": [], "accuracy": {}}
    for name, det in detectors.items():
        size = det._FER__emotion_target_size
        classify = det._classify_emotions
        for batch in BATCHES:
            x = faces[:batch]
            fps = rate(lambda: classify(to_fer_input(x, size)), batch, seconds, windows)
            out["rows"].append({"format": name, "batch": batch, "faces_per_s": round(fps, 1)})
        for kind, imgs in (("raw", faces), ("equalized", eq)):
            pred = np.concatenate([np.asarray(classify(to_fer_input(imgs[i:i + 256], size))).argmax(1)
                                   for i in range(0, len(imgs), 256)])
            out["accuracy"][f"{name}/{kind}"] = round(float((pred == labels).mean()), 5)
        print(f"[peer] {name}: " + ", ".join(f"b{r['batch']} {r['faces_per_s']:.0f}" for r in out["rows"]
                                             if r["format"] == name) + f"; accuracy {out['accuracy']}",
              file=sys.stderr, flush=True)
    out["accuracy_faces"] = int(len(labels))
    return out


def photos(det, folder: Path, out: Path, passes: int) -> dict:
    from fer.utils import draw_annotations

    truth = json.loads((folder / "truth.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    det.detect_emotions(cv2.imread(str(folder / truth[0]["file"])))
    best: dict = {}
    for _ in range(max(1, passes)):
        clock = dict.fromkeys(("read", "detect", "classify", "draw+write"), 0.0)
        found = {}
        t0 = time.perf_counter()
        for item in truth:
            t1 = time.perf_counter()
            img = cv2.imread(str(folder / item["file"]))
            t2 = time.perf_counter()
            boxes = det.find_faces(img)
            t3 = time.perf_counter()
            result = det.detect_emotions(img, face_rectangles=boxes)
            t4 = time.perf_counter()
            cv2.imwrite(str(out / item["file"]), draw_annotations(img.copy(), result))
            clock["read"] += t2 - t1
            clock["detect"] += t3 - t2
            clock["classify"] += t4 - t3
            clock["draw+write"] += time.perf_counter() - t4
            found[item["file"]] = [list(map(int, r["box"])) for r in result]
        total = time.perf_counter() - t0
        if not best or total < best["seconds"]:
            n = len(truth)
            best = {"images": n, "faces": sum(len(t["faces"]) for t in truth),
                    "faces_found": sum(len(v) for v in found.values()), "recall": round(recall(truth, found), 4),
                    "seconds": round(total, 3), "images_per_s": round(n / total, 2),
                    "ms_per_image": {k: round(1000 * v / n, 2) for k, v in clock.items()}}
    return best


def video(det, clip: Path, passes: int) -> dict:
    """``Video.analyze`` end to end (annotated video written, results as a DataFrame), best pass,
    then one pass of the same steps by hand for the time per stage."""
    from fer.classes import Video
    from fer.utils import draw_annotations

    best: dict = {}
    for _ in range(max(1, passes)):
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
            v = Video(str(clip), outdir=tmp)
            t0 = time.perf_counter()
            v.analyze(det, display=False, save_frames=False, save_video=True, annotate_frames=True,
                      zip_images=False, output="pandas")
            seconds = time.perf_counter() - t0
            frames = v.frameCount
        if not best or frames / seconds > best["fps"]:
            best = {"frames": frames, "seconds": round(seconds, 3), "fps": round(frames / seconds, 2)}
    clock = dict.fromkeys(("decode", "detect", "classify", "draw", "encode"), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        cap = cv2.VideoCapture(str(clip))
        size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        writer = cv2.VideoWriter(str(Path(tmp) / "out.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
        n = faces = 0
        while True:
            t0 = time.perf_counter()
            ok, frame = cap.read()
            t1 = time.perf_counter()
            if not ok:
                break
            boxes = det.find_faces(frame)
            t2 = time.perf_counter()
            result = det.detect_emotions(frame, face_rectangles=boxes)
            t3 = time.perf_counter()
            frame = draw_annotations(frame, result)
            t4 = time.perf_counter()
            writer.write(frame)
            t5 = time.perf_counter()
            for k, a, b in (("decode", t0, t1), ("detect", t1, t2), ("classify", t2, t3), ("draw", t3, t4),
                            ("encode", t4, t5)):
                clock[k] += b - a
            n += 1
            faces += len(result)
        cap.release()
        writer.release()
    best["faces"] = faces
    best["ms_per_frame"] = {k: round(1000 * v / max(1, n), 2) for k, v in clock.items()}
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", required=True, help=".npz with raw (uint8 [N,48,48]), equalized and labels")
    ap.add_argument("--photos", required=True, help="folder of photos with truth.json")
    ap.add_argument("--clip", required=True, help="video clip")
    ap.add_argument("--out", required=True, help="JSON written here")
    ap.add_argument("--seconds", type=float, default=0.4, help="length of one timing window")
    ap.add_argument("--windows", type=int, default=3, help="timing windows per figure (best is kept)")
    ap.add_argument("--passes", type=int, default=2, help="passes over the photos and the clip (best is kept)")
    ap.add_argument("--threads", type=int, default=0, help="TensorFlow and OpenCV threads (0: their defaults)")
    args = ap.parse_args()
    logging.getLogger("fer").setLevel(logging.ERROR)
    t_start = time.perf_counter()
    import tensorflow as tf
    from fer import __version__ as fer_version
    from fer.fer import FER

    if args.threads:  # as fervid's runtimes get in the same run; fer's TFLite path is single-threaded anyway
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        cv2.setNumThreads(args.threads)

    cascade = str(Path(__import__("fer").__file__).parent / "data" / "haarcascade_frontalface_default.xml")
    default = FER(cascade_file=cascade)  # the README's FER(): Haar cascade + TFLite int8
    keras = FER(cascade_file=cascade, use_tflite=False)
    data = np.load(args.faces)
    model = keras._FER__emotion_classifier
    result = {"available": True, "fer": fer_version, "threads": args.threads or None, "tensorflow": tf.__version__, "opencv": cv2.__version__,
              "params": int(model.count_params()), "mflops": keras_mflops(model),
              "input": list(model.input_shape[1:3])}
    result["classifier"] = classifier({"fer-tflite-int8": default, "fer-keras-fp32": keras}, data["raw"],
                                      data["labels"], data["equalized"], args.seconds, args.windows)
    result["predict"] = photos(default, Path(args.photos), Path(tempfile.mkdtemp()), args.passes)
    print(f"[peer] photos: {result['predict']['images_per_s']} images/s, recall {result['predict']['recall']}",
          file=sys.stderr, flush=True)
    result["video"] = video(default, Path(args.clip), args.passes)
    print(f"[peer] video: {result['video']['fps']} frames/s", file=sys.stderr, flush=True)
    result["seconds"] = round(time.perf_counter() - t_start, 1)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
