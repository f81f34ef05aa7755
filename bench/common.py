"""What every benchmark section shares: paths, the machine's description, and one way of timing.

Timing: a measurement is the *best* of several short windows, not their mean. This machine is
shared (a training run holds the cores at raised priority), and other jobs only ever make a
window slower, so the fastest window is the closest to what the code itself costs. Every
figure of one run is taken the same way, which is why the report gives ratios beside them.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FER_DATA = SHARED / "datasets" / "fer2013"
REALFACES = SHARED / "datasets" / "realfaces"
SAMPLE = ROOT / "fervid" / "assets" / "sample.jpg"
SHIPPED = ROOT / "fervid" / "assets" / "model.safetensors"
SHIPPED_ONNX = ROOT / "fervid" / "assets" / "model.onnx"
#: Training-set size of FER-2013, for seconds per epoch from images per second.
TRAIN_FACES = 28_709


def rate(fn: Callable[[], Any], items: int, seconds: float, windows: int = 3, min_calls: int = 1) -> float:
    """Items per second of ``fn`` (which handles ``items`` items a call): best of ``windows``
    windows of about ``seconds`` each, after one untimed warm-up call. A call that alone
    outlasts all the windows together (a big model at batch 256 on a loaded machine) is its
    own measurement: repeating it would only add minutes."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first > seconds * max(1, windows):
        return items / first
    best = 0.0
    for _ in range(max(1, windows)):
        n, t0 = 0, time.perf_counter()
        while n < min_calls or time.perf_counter() - t0 < seconds:
            fn()
            n += 1
        best = max(best, n * items / (time.perf_counter() - t0))
    return best


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine(threads: int) -> dict[str, Any]:
    """The machine and software a run was made on, as the report prints it."""
    import cv2
    import numpy as np
    import onnxruntime as ort

    info: dict[str, Any] = {
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
        "simd": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
                 if f in cpu_flags()],
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "numpy": np.__version__, "opencv": cv2.__version__, "onnxruntime": ort.__version__,
        "date": _dt.date.today().isoformat(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        info["commit"] = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    return info


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
