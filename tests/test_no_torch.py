"""Recognition must work where PyTorch is not installed (the README's first quick-start command).

A stub ``torch`` package that refuses to import is put first on the path of a subprocess, so
any import of torch on the recognition path fails loudly here.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_without_torch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    stub = tmp_path / "stub"
    (stub / "torch").mkdir(parents=True, exist_ok=True)
    # What Python raises when torch is not installed at all.
    (stub / "torch" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(stub), str(ROOT)]), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fervid", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_help_and_predict_run_without_torch(tmp_path):
    help_out = _run_without_torch(tmp_path, "--help")
    assert help_out.returncode == 0, help_out.stderr
    for command in ("predict", "video", "train", "evaluate", "serve"):
        assert command in help_out.stdout
    res = _run_without_torch(tmp_path, "predict", str(ROOT / "fervid" / "assets" / "sample.jpg"),
                             "-o", "out", "--threads", "1")
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(tmp_path / "out" / "predictions.csv")))
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["emotion"]
    assert (tmp_path / "out" / "sample.jpg").stat().st_size > 0


def test_training_without_torch_is_a_one_line_error(tmp_path):
    res = _run_without_torch(tmp_path, "train", "--data", str(ROOT / "tests" / "data" / "fer"), "--epochs", "1",
                             "--out", "run")
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "torch" in res.stderr.lower()


def test_every_torch_command_without_torch_is_a_one_line_error(tmp_path):
    """Commands that load a .safetensors model or a training state need torch; without it they
    must say so in one line, even where the import sits deep in the library."""
    model = str(ROOT / "fervid" / "assets" / "model.safetensors")
    data = str(ROOT / "tests" / "data" / "fer")
    for args in (["carry", "unpack", model, "--out", "run"],
                 ["evaluate", "--model", model, "--data", data],
                 ["export", model, "-o", "m.onnx"],
                 ["visualize", "filters", "-o", "f.png"],
                 ["cv", "--data", data, "--out", "cv"],
                 ["tune", "--data", data, "--out", "tune"]):
        res = _run_without_torch(tmp_path, *args)
        assert res.returncode == 1, (args, res.stderr)
        assert "Traceback" not in res.stderr, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "PyTorch" in lines[0] and "pip install" in lines[0], (args, lines)
