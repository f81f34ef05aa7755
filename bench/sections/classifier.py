"""Classifier speed (faces/s) and PublicTest accuracy for every architecture and runtime.

Runtimes, each timed from uint8 equalized 48x48 faces to class scores (what a caller gets):

* ``torch-fp32`` / ``torch-bf16``: ``fervid.training.engine.predict_logits`` (bf16 = CPU autocast);
* ``onnx-fp32``: ``Recognizer.probabilities`` on the ONNX export (fervid's recognition path);
* ``onnx-int8``: the same on a statically quantised copy (``fervid export --int8``: QDQ, uint8
  activations, per-channel int8 weights, calibrated on Training faces), for every
  architecture: int8 speed does not depend on the weights' values, so a random-weight copy
  tells whether a larger architecture could ship in int8; only the shipped model's int8
  accuracy means anything. ``quantize_dynamic`` was tried too: its ConvInteger kernels run
  about 10x *slower* than fp32 here, so only its speed is recorded.

Only the shipped model has trained weights; other architectures are timed with random
weights and get no accuracy.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..common import FER_DATA, SHIPPED, log, rate

BATCHES = (1, 8, 32, 256)


def gemm_peak(threads: int, seconds: float) -> dict[str, float]:
    """Best GFLOP/s of a large fp32 (and bf16) matrix product: the practical ceiling of a
    convolution lowered to GEMM on these cores, against which each model's rate is read."""
    import torch

    torch.set_num_threads(threads)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(1024, 1024, dtype=dtype)
        b = torch.randn(1024, 1024, dtype=dtype)
        out[name] = round(rate(lambda: torch.mm(a, b), 2 * 1024 ** 3, seconds, windows=3) / 1e9, 1)
    return out


def pretrained() -> tuple[Any, dict[str, Any]]:
    from fervid.training.checkpoint import load_model

    return load_model(SHIPPED)


def shipped_arch() -> str | None:
    """The architecture of the model in the package (the one timed with trained weights)."""
    from fervid.training.checkpoint import read_meta

    return read_meta(SHIPPED)["arch"] if SHIPPED.is_file() else None


def random_model(arch: str) -> tuple[Any, dict[str, Any]]:
    from fervid.training.checkpoint import make_meta
    from fervid.data import FER_CLASSES
    from fervid.models import count_flops, count_params, create_model

    model = create_model(arch, len(FER_CLASSES)).eval()
    meta = make_meta(arch, list(FER_CLASSES), params=count_params(model),
                     mflops=round(count_flops(model) / 1e6, 2))
    return model, meta


def export_onnx(model: Any, meta: dict[str, Any], path: Path) -> Path:
    from fervid.export import onnx_bytes

    path.write_bytes(onnx_bytes(model, meta))
    return path


def calibration_faces(n: int) -> np.ndarray:
    """``n`` seeded Training faces (equalized, normalised) for static quantisation; random if absent."""
    from fervid.export import calibration_faces as fer_calibration
    from fervid.preprocess import normalize

    try:
        return fer_calibration(FER_DATA, "Training", n)
    except Exception as e:  # no dataset: random faces still give a runnable (if worse) model
        log(f"calibration: FER Training faces unavailable ({e}); using random faces")
        return normalize(np.random.default_rng(0).integers(0, 256, (n, 48, 48), dtype=np.uint8))


def quantize(src: Path, dst: Path, calib: np.ndarray, dynamic: bool = False) -> Path:
    """An int8 copy of ``src`` with fervid's metadata: static as ``fervid export --int8`` makes it,
    or dynamic (kept only to time the alternative that was rejected)."""
    from fervid.export import quantize_int8

    if not dynamic:
        dst.write_bytes(quantize_int8(src.read_bytes(), calib))
        return dst
    import onnx
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    pre = dst.with_name(dst.stem + "-pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
    model = onnx.load(str(dst))
    del model.metadata_props[:]
    for prop in onnx.load(str(src)).metadata_props:
        model.metadata_props.add().CopyFrom(prop)
    onnx.save(model, str(dst))
    pre.unlink(missing_ok=True)
    return dst


def runners(model: Any, onnx_path: Path, threads: int, int8: Path | None) -> dict[str, Callable]:
    """Format name -> fn(uint8 faces [N,48,48]) -> scores."""
    import torch

    from fervid.training.engine import predict_logits
    from fervid.recognition.recognize import Recognizer

    torch.set_num_threads(threads)
    model = copy.deepcopy(model).float().eval()
    out: dict[str, Callable] = {
        "torch-fp32": lambda x: predict_logits(model, x, batch_size=len(x)),
        "torch-bf16": lambda x: predict_logits(model, x, batch_size=len(x), dtype=torch.bfloat16),
    }
    rec = Recognizer(onnx_path, detect=False, threads=threads)
    out["onnx-fp32"] = rec.probabilities
    if int8 is not None:
        out["onnx-int8"] = Recognizer(int8, detect=False, threads=threads).probabilities
    return out


def time_runners(arch: str, trained: bool, meta: dict, fns: dict[str, Callable], faces: np.ndarray,
                 seconds: float, windows: int) -> list[dict]:
    rows = []
    mflops = float(meta.get("mflops") or 0.0)
    for batch in BATCHES:
        x = np.ascontiguousarray(faces[:batch])
        for fmt, fn in fns.items():
            fps = rate(lambda: fn(x), batch, seconds, windows)
            rows.append({"arch": arch, "trained": trained, "format": fmt, "batch": batch,
                         "params": meta.get("params"), "mflops": mflops, "faces_per_s": round(fps, 1),
                         "gflops": round(fps * mflops / 1000.0, 1)})
        log(f"{arch} batch {batch}: " + ", ".join(f"{r['format']} {r['faces_per_s']:.0f}"
                                                   for r in rows if r["batch"] == batch))
    return rows


def publictest(limit: int) -> Any:
    """PublicTest faces (equalized) in the shipped model's classes; a seeded subset when ``limit``."""
    from fervid.data import FaceSet, load_faces

    faces = load_faces(FER_DATA, "PublicTest")
    if limit and limit < len(faces):
        idx = np.sort(np.random.default_rng(0).permutation(len(faces))[:limit])
        faces = FaceSet(faces.images[idx], faces.labels[idx], faces.classes, name=f"{faces.name}[{limit}]")
    return faces


def accuracies(model: Any, meta: dict, onnx_paths: dict[str, Path], faces: Any, threads: int) -> dict[str, float]:
    """PublicTest accuracy of the shipped model per runtime, through ``fervid.analysis.evaluate.evaluate``."""
    from fervid.analysis.evaluate import evaluate
    from fervid.analysis.predictors import OnnxPredictor
    from fervid.recognition.recognize import open_model

    acc = {}
    for fmt, precision in (("torch-fp32", "fp32"), ("torch-bf16", "bf16")):
        acc[fmt] = evaluate(model, meta, faces, precision=precision).plain.accuracy
    for fmt, path in onnx_paths.items():
        session, m, _ = open_model(path, threads)
        acc[fmt] = evaluate(OnnxPredictor(session, m), m, faces).plain.accuracy
    return {k: round(v, 5) for k, v in acc.items()}


def run(archs: list[str], threads: int, seconds: float, windows: int, tmp: Path, acc_limit: int,
        calib_n: int) -> dict[str, Any]:
    """The classifier section of the report."""
    from fervid.data import load_faces

    t0 = time.perf_counter()
    peak = gemm_peak(threads, seconds)
    log(f"GEMM peak, {threads} thread(s): fp32 {peak['fp32']} GFLOP/s, bf16 {peak['bf16']} GFLOP/s")
    try:
        faces = load_faces(FER_DATA, "PublicTest").images[:256]
    except Exception:
        faces = np.random.default_rng(0).integers(0, 256, (256, 48, 48), dtype=np.uint8)
    rows: list[dict] = []
    result: dict[str, Any] = {"peak_gflops": peak, "batches": list(BATCHES)}
    ship_arch = shipped_arch()
    calib = calibration_faces(calib_n)
    for arch in archs:
        shipped = arch == ship_arch
        model, meta = pretrained() if shipped else random_model(arch)
        path = export_onnx(model, meta, tmp / f"{arch}.onnx")
        # int8 for every architecture: its speed does not depend on the weights' values, and it
        # tells whether an architecture larger than the shipped one could ship in int8.
        int8 = quantize(path, tmp / f"{arch}-int8.onnx", calib)
        if shipped:
            dyn = quantize(path, tmp / f"{arch}-int8-dynamic.onnx", calib, dynamic=True)
            from fervid.recognition.recognize import Recognizer

            dyn_fn = Recognizer(dyn, detect=False, threads=threads).probabilities
            result["int8_dynamic_faces_per_s_b32"] = round(rate(lambda: dyn_fn(faces[:32]), 32, seconds, 1), 1)
        rows += time_runners(arch, shipped, meta, runners(model, path, threads, int8), faces, seconds, windows)
        if shipped:
            result["shipped"] = {"arch": arch, "params": meta.get("params"), "mflops": meta.get("mflops")}
            try:
                test = publictest(acc_limit)
                result["accuracy"] = accuracies(model, meta, {"onnx-fp32": path, "onnx-int8": int8}, test, threads)
                result["accuracy_faces"] = len(test)
            except Exception as e:
                result["accuracy"], result["accuracy_note"] = {}, f"PublicTest unavailable: {e}"
            log(f"PublicTest accuracy: {result.get('accuracy')}")
    # The peak again at the end, keeping the better: other jobs on a shared machine only lower it.
    again = gemm_peak(threads, seconds)
    peak = {k: max(v, again[k]) for k, v in peak.items()}
    result["peak_gflops"] = peak
    for r in rows:  # int8 arithmetic has no fp32 ceiling to compare with
        ref = {"torch-bf16": peak["bf16"], "onnx-int8": 0.0}.get(r["format"], peak["fp32"])
        r["peak_share"] = round(r["gflops"] / ref, 3) if ref else None
    result["rows"] = rows
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
