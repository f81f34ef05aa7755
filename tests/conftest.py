"""Shared fixtures: a tiny trained model (and its ONNX export) built once per test session.

The model is ``vgg_tiny`` trained for one epoch on the 40 committed FER training faces: not
accurate, but a real fervid model with real metadata, made by the real training and export
code, in a few seconds on one thread.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_FER = ROOT / "tests" / "data" / "fer"
SHARED = ROOT.parent / "shared"

# The suite never writes into the user's real ~/.cache/fervid (a test run must not leave
# gigabytes of cached faces behind, nor read a stale cache): every cache goes to a private
# folder, removed at exit. Set at import, before any test, so subprocesses inherit it too.
TEST_CACHE_HOME = tempfile.mkdtemp(prefix="fervid-test-cache-")
os.environ["XDG_CACHE_HOME"] = TEST_CACHE_HOME
os.environ.pop("FERVID_CACHE", None)
atexit.register(shutil.rmtree, TEST_CACHE_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path to a ``.safetensors`` vgg_tiny trained one epoch on tests/data/fer/train."""
    torch = pytest.importorskip("torch")
    from fervid.data import load_faces
    from fervid.training.engine import TrainConfig, train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_run")
    train_set = load_faces(TEST_FER, "train", use_cache=False)
    val_set = load_faces(TEST_FER, "test", use_cache=False)
    cfg = TrainConfig(data=str(TEST_FER), train_split="train", val_split="test", model="vgg_tiny",
                      epochs=1, batch_size=8, lr=0.01, threads=1, precision="fp32", device="cpu",
                      out=str(out))
    summary = train(cfg, progress=False, train_set=train_set, val_set=val_set)
    return Path(summary["model"])


@pytest.fixture(scope="session")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported to ONNX (with its sidecar ``.json`` beside it)."""
    from fervid.export import export_model

    out = tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx"
    export_model(tiny_model, out)
    return out


@pytest.fixture(scope="session")
def fer_faces() -> tuple[np.ndarray, list[str]]:
    """The 30 committed FER test faces as raw gray uint8 [N, 48, 48] and their labels."""
    paths = sorted(TEST_FER.glob("test/*/*.jpg"))
    faces = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
    return faces, [p.parent.name for p in paths]


@pytest.fixture(scope="session")
def paste():
    """The :func:`paste_faces` helper, for tests that build multi-face frames."""
    return paste_faces


def paste_faces(faces: list[np.ndarray], sizes: list[int], canvas: tuple[int, int] = (480, 640),
                seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """Upscale gray faces to ``sizes`` and paste them, apart, onto a textured BGR canvas.

    Returns the frame and where each face went (x, y, w, h). The background is a smooth
    gradient plus mild noise, so the detector sees face-like scale context and no edges
    that look like faces.
    """
    rng = np.random.default_rng(seed)
    h, w = canvas
    yy, xx = np.mgrid[0:h, 0:w]
    base = (90 + 60 * xx / w + 30 * yy / h)[..., None] + np.array([10.0, 0.0, -10.0])
    frame = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    frame = cv2.GaussianBlur(frame, (5, 5), 0)
    boxes: list[tuple[int, int, int, int]] = []
    x = 20
    for face, size in zip(faces, sizes):
        big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
        y = int(rng.integers(10, max(11, h - size - 10)))
        assert x + size <= w, "canvas too small for these faces"
        frame[y:y + size, x:x + size] = cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)
        boxes.append((x, y, size, size))
        x += size + 30
    return frame, boxes
