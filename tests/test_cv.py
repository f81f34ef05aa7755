"""``fervid cv``: folds that are disjoint, stratified and complete; the table, JSON and box plot of a
tiny real cross-validation; and a cv interrupted inside a fold that resumes instead of restarting."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from fervid.analysis import crossval  # noqa: E402
from fervid.training import engine  # noqa: E402
from fervid.cli import main  # noqa: E402
from fervid.training.config import TrainConfig  # noqa: E402
from fervid.errors import BadInputError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_FER = ROOT / "tests" / "data" / "fer"
# The 70 committed faces (10 per class), so 3 folds hold 3 or 4 faces of each class.
TINY = ["--data", str(TEST_FER), "--splits", "train,test", "--model", "vgg_tiny", "--batch-size", "8",
        "--lr", "0.02", "--threads", "1", "--device", "cpu", "--precision", "fp32", "--no-progress"]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(1)


@pytest.mark.parametrize("counts,k,seed", [((3995, 436, 4097, 7215, 4830, 3171, 4965), 5, 0),  # FER Training
                                           ((10, 10, 10, 10, 10, 10, 10), 3, 1),
                                           ((7, 3, 12, 30, 5, 9, 4), 3, 7)])
def test_folds_disjoint_stratified_complete(counts, k, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(counts)), counts))
    folds = crossval.make_folds(labels, k, seed)
    assert len(folds) == k
    held = np.concatenate([va for _, va in folds])
    assert len(held) == len(labels) and len(np.unique(held)) == len(labels), "each face held out exactly once"
    for tr, va in folds:
        assert len(np.intersect1d(tr, va)) == 0
        assert len(tr) + len(va) == len(labels)
        per_class = np.bincount(labels[va], minlength=len(counts))
        assert np.all(np.abs(per_class - np.asarray(counts) / k) <= 1), (per_class, counts)
    again = crossval.make_folds(labels, k, seed)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again)), "seeded: the same folds every time"
    other = crossval.make_folds(labels, k, seed + 1)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


@pytest.mark.parametrize("k,match", [(1, "needs at least 2 folds"), (11, "class angry has only 10 faces")])
def test_fold_count_checked(k, match):
    labels = np.repeat(np.arange(7), 10)
    with pytest.raises(BadInputError, match=match):
        crossval.make_folds(labels, k, 0, classes=("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_refusals_are_one_line(tmp_path, capsys):
    cases = [
        (["-k", "11", "--out", str(tmp_path / "a")], "--folds 11: class angry has only 10 faces"),
        (["-k", "1", "--out", str(tmp_path / "b")], "--folds 1: cross-validation needs at least 2 folds"),
        (["--model", "nope", "--out", str(tmp_path / "c")], "unknown model 'nope'"),
        (["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "d")], "missing"),
        (["--splits", "Validation", "--out", str(tmp_path / "e")], "unknown split 'validation'"),
        ([], "--out: give the folder"),
    ]
    for extra, match in cases:
        code, _, err = cli(["cv", *TINY, *extra], capsys)
        assert code == 2 and match in err, err
        assert err.startswith("fervid cv: error: ") and err.count("\n") == 1, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    code, _, err = cli(["cv", "--config", str(bad), *TINY, "--out", str(tmp_path / "f")], capsys)
    assert code == 2 and "unknown config key(s): epochz" in err
    code, _, err = cli(["cv", "--resume", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "nothing to resume" in err
    assert not any((tmp_path / x).exists() for x in "abcdef")


def test_tiny_cv_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "cv"
    code, text, err = cli(["cv", *TINY, "-k", "3", "--epochs", "1", "--out", str(out)], capsys)
    assert code == 0, err
    result = json.loads((out / "cv.json").read_text())
    assert result["complete"] and result["k"] == 3 and result["n_faces"] == 70
    folds = result["folds"]
    assert [f["fold"] for f in folds] == [0, 1, 2]
    assert sum(f["val"] for f in folds) == 70 and all(f["train"] + f["val"] == 70 for f in folds)
    for f in folds:
        # The score is the last epoch's model on the held-out fold: the engine validated the same.
        last = json.loads((out / f"fold-{f['fold']}" / "metrics.jsonl").read_text().splitlines()[-1])
        assert f["accuracy"] == pytest.approx(last["val_acc"], abs=1e-5)
        assert 0.0 <= f["macro_f1"] <= 1.0 and f["epochs"] == 1
    acc = np.array([f["accuracy"] for f in folds])
    assert result["summary"]["accuracy"]["mean"] == pytest.approx(acc.mean())
    assert result["summary"]["accuracy"]["std"] == pytest.approx(acc.std(ddof=1))

    rows = list(csv.DictReader((out / "cv.csv").open()))
    assert [r["fold"] for r in rows] == ["0", "1", "2", "mean", "std"]
    assert float(rows[3]["accuracy"]) == pytest.approx(acc.mean(), abs=1e-5)
    assert float(rows[4]["macro_f1"]) == pytest.approx(np.std([f["macro_f1"] for f in folds], ddof=1), abs=1e-5)
    assert "mean ± std over 3/3 folds: accuracy" in text and f"{acc.mean():.4f}" in text

    img = cv2.imread(str(out / "cv.png"))
    assert img is not None and img.shape[:2] == (crossval.BOX_SIZE[1], crossval.BOX_SIZE[0])
    assert img.std() > 10, "the plot has content"

    code, _, err = cli(["cv", *TINY, "-k", "3", "--epochs", "1", "--out", str(out)], capsys)
    assert code == 2 and "already holds a cv" in err
    code, _, err = cli(["cv", "--resume", str(out), "--epochs", "4", "-k", "4"], capsys)
    assert code == 2 and "cannot take --epochs, --folds" in err


def test_interrupted_cv_resumes_unfinished_fold_and_skips_finished(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cv"
    cfg = TrainConfig(data=str(TEST_FER), model="vgg_tiny", epochs=2, batch_size=8, lr=0.02, threads=1,
                      device="cpu", precision="fp32", out=str(out))
    real_train = engine.train
    calls: list[tuple[str, bool]] = []

    def interrupting(fcfg, resume=False, on_epoch=None, **kw):
        """Train as usual, but stop fold 1 right after its first epoch's checkpoint, as a kill would."""
        calls.append((Path(fcfg.out).name, resume))

        def stop(metrics):
            if Path(fcfg.out).name == "fold-1" and metrics["epoch"] == 1:
                raise KeyboardInterrupt
        return real_train(fcfg, resume=resume, on_epoch=stop, **kw)

    monkeypatch.setattr(engine, "train", interrupting)
    with pytest.raises(KeyboardInterrupt):
        crossval.run_cv(cfg, k=3, splits="train,test", progress=False)
    assert calls == [("fold-0", False), ("fold-1", False)]
    partial = json.loads((out / "cv.json").read_text())
    assert not partial["complete"] and [f["fold"] for f in partial["folds"]] == [0], "the table grows fold by fold"
    assert (out / "fold-1" / "last.pt").exists() and not (out / "fold-1" / crossval.FOLD_FILE).exists()
    fold0 = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "fold-0").iterdir()}

    monkeypatch.setattr(engine, "train", lambda fcfg, resume=False, **kw: (calls.append((Path(fcfg.out).name, resume)),
                                                                         real_train(fcfg, resume=resume, **kw))[1])
    calls.clear()
    code, text, err = cli(["cv", "--resume", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert calls == [("fold-1", True), ("fold-2", False)], "fold 0 not retrained, fold 1 resumed, fold 2 fresh"
    assert "fold 0/3: done before" in text and "resuming after epoch 1" in text
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "fold-0").iterdir()} == fold0
    epochs = [json.loads(x)["epoch"] for x in (out / "fold-1" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    result = json.loads((out / "cv.json").read_text())
    assert result["complete"] and [f["fold"] for f in result["folds"]] == [0, 1, 2]

    # Killed after fold 2 trained but before it was scored: the resume scores it, trains nothing.
    record = json.loads((out / "fold-2" / crossval.FOLD_FILE).read_text())
    (out / "fold-2" / crossval.FOLD_FILE).unlink()
    metrics = (out / "fold-2" / "metrics.jsonl").read_text()
    calls.clear()
    code, text, err = cli(["cv", "--resume", str(out), "--no-progress"], capsys)
    assert code == 0, err
    assert calls == [("fold-2", True)] and "epoch 1/2" not in text
    assert (out / "fold-2" / "metrics.jsonl").read_text() == metrics
    assert json.loads((out / "fold-2" / crossval.FOLD_FILE).read_text()) == record
