"""Smoke test of the benchmark (python -m bench.run --quick): it runs, and its JSON and tables are well formed.

Speeds are not checked (they depend on the machine and its load); structure, the accuracy
bookkeeping, the fervid / fer ratios and the peer's clean skip are.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
SHARED = ROOT.parent / "shared"
# The shipped model's architecture: the benchmark times it with trained weights (and scores it).
SHIPPED_ARCH = json.loads((ROOT / "fervid" / "assets" / "model.json").read_text())["arch"]

pytest.importorskip("torch")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bench.run", "--quick", "--threads", "1", "--archs", SHIPPED_ARCH,
           "--out", str(out), "--pareto", str(out / "pareto.png"), "--peer-python", str(out / "no-such-python")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), proc


def test_quick_run_writes_complete_results(quick_run):
    out, res, _ = quick_run
    assert res["quick"] is True and res["machine"]["cores"] >= 1 and res["machine"]["date"]
    rows = res["classifier"]["rows"]
    assert {(r["format"], r["batch"]) for r in rows} == {
        (f, b) for f in ("torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8") for b in (1, 8, 32, 256)}
    for r in rows:
        assert r["faces_per_s"] > 0 and r["mflops"] > 100  # vgg_s 193.6 MFLOPs per face, vgg_m 530.2
        assert r["gflops"] == pytest.approx(r["faces_per_s"] * r["mflops"] / 1000, rel=0.01, abs=0.1)
    pipe = res["pipeline"]
    assert pipe["predict"]["images"] == 8 and 0 <= pipe["predict"]["recall"] <= 1
    assert pipe["video"]["frames"] == 30 and pipe["video"]["fps"] > 0
    assert set(pipe["video"]["ms_per_frame"]) >= {"decode", "detect", "align", "classify", "draw", "encode"}
    assert [r["detect_size"] for r in pipe["detect_sizes"]] == [640, 320]
    assert {(r["arch"], r["precision"], r["layout"]) for r in res["training"]["rows"]} == {
        (SHIPPED_ARCH, p, lay) for p in ("fp32", "bf16") for lay in ("nchw", "nhwc")}
    assert all(r["seconds_per_epoch"] == pytest.approx(28709 / r["images_per_s"], rel=0.01)
               for r in res["training"]["rows"])
    assert any(t["target"].startswith("video") for t in res["targets"])


def test_peer_is_skipped_with_a_note_when_its_python_is_missing(quick_run):
    out, res, proc = quick_run
    assert res["peer"]["available"] is False and "not found" in res["peer"]["note"]
    assert res["ratios"] == {}
    md = (out / "results.md").read_text()
    assert "fer comparison skipped" in md and "not found" in md


def test_tables_and_chart(quick_run):
    out, res, _ = quick_run
    md = (out / "results.md").read_text()
    for heading in ("### Classifier: faces per second", "### predict", "### video", "### Training", "### Targets"):
        assert heading in md
    header = next(line for line in md.splitlines() if line.startswith("| model | weights |"))
    table = [line for line in md.splitlines() if line.startswith(f"| {SHIPPED_ARCH} | trained |")]
    assert len(table) == 4 and all(line.count("|") == header.count("|") for line in table)
    summary = (out / "summary.md").read_text()
    assert 5 <= len(summary.strip().splitlines()) <= 15 and res["command"] in summary
    if SHARED.joinpath("datasets", "fer2013").is_dir():
        acc = res["classifier"]["accuracy"]
        assert set(acc) == {"torch-fp32", "torch-bf16", "onnx-fp32", "onnx-int8"}
        assert all(0.4 < a < 0.9 for a in acc.values())  # the shipped model on 300 PublicTest faces
        assert acc["onnx-fp32"] == pytest.approx(acc["torch-fp32"], abs=0.01)
        png = (out / "pareto.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_from_json_remakes_tables_with_a_peer(quick_run, tmp_path, monkeypatch):
    """Re-rendering: add a peer's results to the saved JSON; ratios, targets and fer rows follow."""
    monkeypatch.syspath_prepend(str(ROOT))  # bench is a package of the repository, not installed
    from bench import run as bench_run
    from bench.report import markdown, targets
    _, res, _ = quick_run
    fake = dict(res)
    fake["peer"] = {"available": True, "params": 58423, "mflops": 20.3,
                    "classifier": {"rows": [{"format": "fer-tflite-int8", "batch": b, "faces_per_s": 100.0 * b}
                                            for b in (1, 8, 32, 256)],
                                   "accuracy": {"fer-tflite-int8/raw": 0.5}},
                    "predict": {"images_per_s": 1.0, "recall": 1.0, "ms_per_image": {"read": 1.0}},
                    "video": {"fps": 2.0, "ms_per_frame": {"decode": 1.0}}}
    ratios = bench_run.ratios(fake)
    fervid_b32 = next(r["faces_per_s"] for r in res["classifier"]["rows"]
                      if r["format"] == "onnx-fp32" and r["batch"] == 32)
    assert ratios[f"classifier {SHIPPED_ARCH} onnx-fp32 / fer-tflite-int8, batch 32"] == pytest.approx(fervid_b32 / 3200, abs=0.01)
    assert ratios["video fps"] == pytest.approx(res["pipeline"]["video"]["fps"] / 2.0, abs=0.01)
    met = [t for t in targets(fake) if t["target"].startswith("classifier")]
    assert len(met) == 1 and met[0]["met"] == (max(
        r["faces_per_s"] for r in res["classifier"]["rows"] if r["batch"] == 32) >= 3200)
    md = markdown(fake)
    assert "| fervid / fer |" in md and "fer-tflite-int8" in md
    saved = tmp_path / "fake.json"
    saved.write_text(json.dumps(fake))
    out = tmp_path / "again"
    assert bench_run.main(["--from-json", str(saved), "--out", str(out), "--pareto", str(tmp_path / "p.png")]) == 0
    assert "fer-tflite-int8" in (out / "results.md").read_text()
    docs_chart = Path(bench_run.ROOT) / "docs" / "images" / "pareto.png"
    before = docs_chart.stat().st_mtime_ns if docs_chart.exists() else None
    elsewhere = tmp_path / "elsewhere"
    # A chart needs an accuracy (scored only where ../shared is): give the re-render one.
    fake["classifier"] = {**fake["classifier"], "accuracy": {"onnx-fp32": 0.68}}
    saved.write_text(json.dumps(fake))
    assert bench_run.main(["--from-json", str(saved), "--out", str(elsewhere)]) == 0
    assert (elsewhere / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "the chart follows --out"
    after = docs_chart.stat().st_mtime_ns if docs_chart.exists() else None
    assert after == before, "a run with its own --out leaves the docs' chart alone"
