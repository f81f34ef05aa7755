"""``fervid tune``: tiny real studies on the committed faces. Reports are well formed, a study
continues where it stopped, two processes share one SQLite study, pruning stops trials and leaves
them consistent, and the best.yaml it writes trains with ``fervid train --config``."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

torch = pytest.importorskip("torch")
optuna = pytest.importorskip("optuna")

from fervid.training import engine  # noqa: E402
from fervid.cli import main  # noqa: E402
from fervid.training.config import TrainConfig  # noqa: E402
from fervid.errors import BadInputError  # noqa: E402
from fervid.analysis.tune import TuneSettings, apply_overrides, suggest  # noqa: E402
from fervid.analysis.tune_report import HISTORY_SIZE, IMPORTANCE_SIZE, plot_importance  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_FER = ROOT / "tests" / "data" / "fer"
TINY = ["--data", str(TEST_FER), "--train-split", "train", "--val-split", "test", "--epochs", "1",
        "--threads", "1", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(1)


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def study_of(out: Path):
    return optuna.load_study(study_name="fervid", storage=f"sqlite:///{out / 'study.db'}")


def rows(out: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((out / "trials.csv").open()))


def png_shape(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path))
    assert img is not None and img.std() > 10, f"{path} is not a drawn PNG"
    return img.shape[1], img.shape[0]


def test_study_reports_resume_and_best_yaml_trains(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["tune", *TINY, "--models", "vgg_tiny,baseline", "--sampler-seed", "0", "--out", str(out)]
    code, text, err = cli([*args, "--trials", "1"], capsys)
    assert code == 0, err
    assert "no importance plot yet: it needs at least 2 complete trials (the study has 1)" in text
    assert not (out / "importance.png").exists()

    code, text, err = cli(["tune", "--resume", str(out), "--trials", "2"], capsys)
    assert code == 0, err
    assert "1 trial(s) so far; target 2" in text
    first = rows(out)
    assert [r["number"] for r in first] == ["0", "1"] and {r["state"] for r in first} == {"complete"}
    assert all(r["model"] in ("vgg_tiny", "baseline") and 0 < float(r["lr"]) for r in first)
    assert first[0]["lr"] != first[1]["lr"], "a resumed seeded study draws new configs, not its first run's again"
    assert png_shape(out / "history.png") == HISTORY_SIZE
    # Two trials on 28 faces may well tie, and then there is no variance to apportion.
    assert ("importance: " in text and png_shape(out / "importance.png") == IMPORTANCE_SIZE) \
        or "complete trials scored the same" in text, text

    code, text, err = cli([*args, "--trials", "3"], capsys)  # the same command again continues the study too
    assert code == 0, err
    after = rows(out)
    assert [r["number"] for r in after] == ["0", "1", "2"]
    assert after[:2] == first, "earlier trials kept as they were"
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0001", "0002"]
    assert not any((out / "trials").glob("*/last.pt")), "finished trials keep only their model and metrics"
    code, text, _ = cli([*args, "--trials", "3"], capsys)
    assert code == 0 and "3 trial(s) so far" in text and len(rows(out)) == 3, "target reached: nothing new"

    code, _, err = cli(["tune", *TINY, "--models", "vgg_tiny", "--lr", "0.3", "--out", str(out)], capsys)
    assert code == 2 and "holds another study" in err and err.count("\n") == 1
    code, _, err = cli(["tune", "--resume", str(out), "--lr", "0.3", "--space", "augment"], capsys)
    assert code == 2 and "cannot take --lr, --space" in err

    study = study_of(out)
    best = study.best_trial
    assert best.value == pytest.approx(max(float(r["value"]) for r in after), abs=1e-5)
    yaml_text = (out / "best.yaml").read_text()
    assert f"trial {best.number}" in yaml_text
    run = tmp_path / "from-best"
    code, text, err = cli(["train", "--config", str(out / "best.yaml"), "--out", str(run), "--no-progress"], capsys)
    assert code == 0, err
    trained = json.loads((run / "config.json").read_text())
    for k, v in best.user_attrs["overrides"].items():
        assert trained[k] == pytest.approx(v) if isinstance(v, float) else trained[k] == v, k
    assert trained["epochs"] == 1 and (run / "best.safetensors").exists()


def test_forced_pruning_stops_trials_and_leaves_no_junk(tmp_path, capsys):
    out = tmp_path / "pruned"
    # No face set scores 100%, so every trial is pruned as soon as the warm-up epoch is over.
    argv = ["tune", *TINY, "--epochs", "3", "--model", "vgg_tiny", "--space", "augment", "--pruner", "threshold:1.0",
            "--trials", "2", "--out", str(out)]
    code, text, err = cli(argv, capsys)
    assert code == 0, err
    study = study_of(out)
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    for t in study.trials:
        assert list(t.intermediate_values) == [1], "stopped after its first epoch of three"
        run = out / "trials" / f"{t.number:04d}"
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
        assert (run / "best.safetensors").exists() and not (run / "last.pt").exists()
    r = rows(out)
    assert [x["state"] for x in r] == ["pruned", "pruned"] and all("pruned after epoch 1" in x["stopped"] for x in r)
    assert {"augment.rotate", "augment.erase", "augment.crop"} <= set(r[0]) and "model" not in r[0]
    assert "no best.yaml: no trial has completed" in text and not (out / "best.yaml").exists()
    assert "the study has 0" in text
    assert png_shape(out / "history.png") == HISTORY_SIZE

    # The pruner belongs to the study's settings: another is refused, --resume keeps the saved one
    # and goes on past the pruned trials' folders.
    code, _, err = cli([*argv[:-4], "--pruner", "none", "--trials", "3", "--out", str(out)], capsys)
    assert code == 2 and "holds another study" in err
    code, _, err = cli(["tune", "--resume", str(out), "--trials", "3"], capsys)
    assert code == 0 and len(study_of(out).trials) == 3


def test_last_epoch_is_never_pruned(tmp_path, capsys):
    """Pruning at the last epoch would save nothing and throw the finished trial's score away."""
    out = tmp_path / "one-epoch"
    code, text, err = cli(["tune", *TINY, "--models", "vgg_tiny", "--pruner", "threshold:1.0", "--prune-warmup", "0",
                           "--trials", "1", "--out", str(out)], capsys)
    assert code == 0, err
    assert [t.state.name for t in study_of(out).trials] == ["COMPLETE"] and (out / "best.yaml").exists()


def test_importance_plot_of_a_synthetic_study(tmp_path):
    """fANOVA on a study whose score depends on lr alone: the plot is drawn and lr leads it."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: -abs(t.suggest_float("lr", 1e-3, 1.0, log=True) - 0.1)
                   + 0 * t.suggest_float("dropout", 0.0, 0.5), n_trials=8)
    assert plot_importance(study, tmp_path / "imp.png") == ""
    assert png_shape(tmp_path / "imp.png") == IMPORTANCE_SIZE
    imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert next(iter(imp)) == "lr"
    assert "at least 2 complete trials (the study has 0)" in plot_importance(
        optuna.create_study(direction="maximize"), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_augment_space_suggestions():
    base = TrainConfig(model="vgg_tiny")
    settings = TuneSettings(out="x", space="augment")
    params = {"augment.flip": 0.25, "augment.rotate": 12.0, "augment.shift": 0.1, "augment.scale": 0.05,
              "augment.erase": 0.3}
    off = apply_overrides(base, suggest(optuna.trial.FixedTrial({**params, "augment.crop_on": False}), settings, base))
    on = apply_overrides(base, suggest(optuna.trial.FixedTrial({**params, "augment.crop_on": True,
                                                                "augment.crop": 0.8}), settings, base))
    assert (off.augment.crop, on.augment.crop) == (0.0, 0.8)
    assert (on.augment.flip, on.augment.rotate, on.model, on.lr) == (0.25, 12.0, "vgg_tiny", base.lr)


def test_dropout_passthrough(tmp_path, monkeypatch):
    seen: list[dict] = []
    real = engine.create_model
    monkeypatch.setattr(engine, "create_model", lambda name, **kw: (seen.append(kw), real(name, **kw))[1])
    for i, dropout in enumerate((0.2, -1.0)):
        cfg = TrainConfig(data=str(TEST_FER), train_split="train", val_split="test", model="vgg_tiny", epochs=1,
                          batch_size=8, threads=1, device="cpu", dropout=dropout, out=str(tmp_path / str(i)))
        engine.train(cfg, progress=False)
    assert seen[0]["dropout"] == 0.2 and "dropout" not in seen[1]
    with pytest.raises(BadInputError, match="dropout 1.0 is out of range"):
        TrainConfig(dropout=1.0).validate()
    cfg = dataclasses.replace(cfg, model="baseline", dropout=0.7, out=str(tmp_path / "b"))
    with pytest.raises(BadInputError, match="--dropout 0.7 does not fit baseline"):
        engine.train(cfg, progress=False)


@pytest.mark.parametrize("extra,match", [
    (["--models", "vgg_tiny,nope"], "unknown model 'nope'"),
    (["--pruner", "sometimes"], "--pruner 'sometimes': use median, none or threshold:ACC"),
    (["--trials", "0"], "--trials 0: must be at least 1"),
    (["--prune-warmup", "-1"], "--prune-warmup -1"),
    (["--storage", "nosuchdb://x"], "--storage nosuchdb://x: not a usable database URL"),
    (["--data", "/nonexistent/fer"], "/nonexistent/fer"),
    (["--optimizer", "lion"], "unknown optimizer 'lion'"),
    (["--space", "augment", "--model", "nope"], "unknown model 'nope'"),
])
def test_bad_input_is_one_line(tmp_path, capsys, extra, match):
    code, _, err = cli(["tune", *TINY, "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and match in err, err
    assert err.startswith("fervid tune: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "o" / "tune.json").exists(), "a refused study leaves nothing to trip over"


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    subprocess.run([sys.executable, "-c", f"from fervid.data import read_source; read_source({str(TEST_FER)!r})"],
                   check=True, env=env, cwd=ROOT)  # fill the face cache once, not in both workers at once
    cmd = [sys.executable, "-m", "fervid", "tune", *TINY, "--epochs", "2", "--models", "vgg_tiny",
           "--trials", "6", "--out", str(out)]
    workers = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(logs)
    ran = [[int(line.split(":")[0].split()[1]) for line in log.splitlines() if line.startswith("trial ")]
           for log in logs]
    numbers = sorted(ran[0] + ran[1])
    assert numbers == list(range(6)), f"each trial run once, by one worker: {ran}"
    study = study_of(out)
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)  # the median pruner may act
    assert all((out / "trials" / f"{n:04d}" / "metrics.jsonl").exists() for n in numbers)
    assert len(rows(out)) == 6
