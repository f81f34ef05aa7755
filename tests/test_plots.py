"""Training curves and confusion-matrix figures: ``fervid plot``, :mod:`fervid.analysis.plots`, and the
curves PNG that ``fervid train`` leaves in its run folder."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.cli import main
from fervid.errors import BadInputError
from fervid.analysis.plots import CONFUSION_SIZE, CURVES_SIZE, best_epoch, plot_confusion, plot_curves, read_metrics

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT / "tests" / "data" / "fer"


def _rows(val_acc: list[float]) -> list[dict]:
    return [{"epoch": e + 1, "train_loss": 2.0 - 0.1 * e, "train_acc": 0.2 + 0.05 * e, "val_loss": 1.9 - 0.05 * e,
             "val_acc": a, "lr": 0.01, "seconds": 1.0, "best_val_acc": max(val_acc[:e + 1])}
            for e, a in enumerate(val_acc)]


def _write(path: Path, rows: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def _png(path: Path) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None, f"{path} is not a readable image"
    return img


def test_read_metrics_and_best_epoch(tmp_path):
    rows = _rows([0.30, 0.45, 0.52, 0.52, 0.40])
    path = _write(tmp_path / "metrics.jsonl", rows)
    got = read_metrics(tmp_path)  # a run folder works as well as the file
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5]
    assert got == read_metrics(path)
    assert best_epoch(got) == 3  # earliest of a tie, as the engine keeps it
    # a resumed run repeats epoch 2 with a better score: the later record counts
    resumed = rows[:2] + [dict(rows[1], val_acc=0.9)] + rows[2:]
    assert best_epoch(resumed) == 2


def test_read_metrics_errors(tmp_path):
    with pytest.raises(BadInputError, match="no such metrics file"):
        read_metrics(tmp_path / "missing.jsonl")
    with pytest.raises(BadInputError, match="no such metrics file"):
        read_metrics(tmp_path)  # a folder without metrics.jsonl
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BadInputError, match="empty"):
        read_metrics(tmp_path / "empty.jsonl")
    rows = _rows([0.3, 0.4, 0.5])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n{not json\n" + json.dumps(rows[2]) + "\n")
    with pytest.raises(BadInputError, match=r"bad.jsonl:2: not a JSON line"):
        read_metrics(bad)
    _write(bad, [rows[0], {"epoch": 2, "train_loss": 1.0}])
    with pytest.raises(BadInputError, match=r":2: missing field\(s\) train_acc, val_loss, val_acc"):
        read_metrics(bad)
    _write(bad, [dict(rows[0], val_acc="high")])
    with pytest.raises(BadInputError, match="non-numeric"):
        read_metrics(bad)
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(BadInputError):
        read_metrics(bad)
    # the torn last line of a run killed while writing is skipped, not fatal
    torn = _write(tmp_path / "torn.jsonl", rows[:2], tail='{"epoch": 3, "train_lo')
    assert len(read_metrics(torn)) == 2


def test_plot_curves_png(tmp_path):
    path = _write(tmp_path / "metrics.jsonl", _rows([0.3, 0.45, 0.52, 0.5]))
    out = plot_curves(path, tmp_path / "curves.png")
    img = _png(out)
    assert img.shape == (CURVES_SIZE[1], CURVES_SIZE[0], 3) and img.std() > 10
    with pytest.raises(BadInputError, match="already exists"):
        plot_curves(path, out, overwrite=False)
    # a single epoch is still a valid figure
    one = _write(tmp_path / "one.jsonl", _rows([0.25]))
    assert _png(plot_curves(one, tmp_path / "one.png")).shape[:2] == (CURVES_SIZE[1], CURVES_SIZE[0])


def test_plot_confusion_png(tmp_path):
    classes = ["angry", "happy", "sad"]
    counts = np.array([[5, 1, 0], [0, 9, 1], [2, 0, 0]])  # rows of counts are normalised here
    out = plot_confusion(counts, classes, tmp_path / "cm.png", title="t")
    img = _png(out)
    assert img.shape == (CONFUSION_SIZE[1], CONFUSION_SIZE[0], 3)
    other = _png(plot_confusion(np.eye(3), classes, tmp_path / "eye.png"))
    assert np.abs(img.astype(int) - other.astype(int)).sum() > 0  # the cells really are drawn
    with pytest.raises(ValueError):
        plot_confusion(np.eye(2), classes, tmp_path / "wrong.png")


def test_cli_plot(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "metrics.jsonl", _rows([0.3, 0.6, 0.5]))
    assert main(["plot", str(run)]) == 0
    out = capsys.readouterr().out
    assert "best val accuracy 0.6000 at epoch 2" in out
    assert _png(run / "curves.png").shape == (CURVES_SIZE[1], CURVES_SIZE[0], 3)
    assert main(["plot", str(run / "metrics.jsonl")]) == 2  # would replace curves.png
    assert "--overwrite" in capsys.readouterr().err
    target = tmp_path / "sub" / "c.png"
    assert main(["plot", str(run / "metrics.jsonl"), "-o", str(target)]) == 0 and target.exists()
    capsys.readouterr()
    for bad in (tmp_path / "nothing", tmp_path / "sub"):
        assert main(["plot", str(bad)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fervid plot: error:") and "metrics" in err[0]


def test_train_cli_writes_curves(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    rc = main(["train", "--data", str(FER), "--train-split", "train", "--val-split", "test", "--model", "vgg_tiny",
               "--epochs", "1", "--batch-size", "8", "--threads", "1", "--no-progress", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert f"curves: {out / 'curves.png'}" in capsys.readouterr().out
    assert _png(out / "curves.png").shape == (CURVES_SIZE[1], CURVES_SIZE[0], 3)
    assert len(read_metrics(out)) == 1
