"""``fervid train`` from the command line: config files and flags, one-line errors, and a
training process killed with SIGKILL that resumes to the weights of an uninterrupted run."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from fervid.training import checkpoint as ckpt  # noqa: E402
from fervid.training.augment import AugmentConfig  # noqa: E402
from fervid.cli import build_parser, main  # noqa: E402
from fervid.cli.train import config_from_args  # noqa: E402
from fervid.data import FER_CLASSES  # noqa: E402
from fervid.training.engine import TIMING_KEYS, TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_FER = ROOT / "tests" / "data" / "fer"
TINY = ["--data", str(TEST_FER), "--train-split", "train", "--val-split", "test", "--model", "vgg_tiny",
        "--batch-size", "8", "--threads", "1", "--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path_factory.mktemp("cache")))


def cfg_of(argv: list[str]):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_config_file_then_flags(tmp_path, suffix):
    conf = {"model": "vgg_m", "epochs": 7, "lr": 0.01, "nesterov": False, "augment": {"flip": 0.0, "rotate": 3}}
    path = tmp_path / f"c{suffix}"
    if suffix == ".yaml":
        path.write_text("model: vgg_m\nepochs: 7\nlr: 1e-2\nnesterov: false\naugment:\n  flip: 0.0\n  rotate: 3\n")
    else:
        path.write_text(json.dumps(conf))
    cfg = cfg_of(["--config", str(path)])
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.nesterov) == ("vgg_m", 7, 0.01, False)
    assert (cfg.augment.flip, cfg.augment.rotate, cfg.augment.erase) == (0.0, 3.0, 0.5)  # erase: default
    cfg = cfg_of(["--config", str(path), "--epochs", "2", "--nesterov", "true", "--aug-rotate", "0", "--lr", "0.3"])
    assert (cfg.model, cfg.epochs, cfg.lr, cfg.nesterov) == ("vgg_m", 2, 0.3, True)
    assert (cfg.augment.flip, cfg.augment.rotate) == (0.0, 0.0)
    assert cfg_of([]).model == "vgg_s"  # defaults when neither says anything


@pytest.mark.parametrize("text,suffix,match", [
    ("epochz: 3\n", ".yaml", "unknown config key(s): epochz"),
    ('{"augment": {"blur": 1}}', ".json", "unknown config key(s): blur"),
    ("epochs: ten\n", ".yaml", "config key epochs: expected int, got 'ten'"),
    ("- 1\n- 2\n", ".yaml", "config must be a mapping"),
    ("model: [unclosed\n", ".yaml", "not valid YAML"),
    ("{nope", ".json", "not valid JSON"),
])
def test_bad_config_file_is_one_line(tmp_path, capsys, text, suffix, match):
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    code, out, err = cli(["train", "--config", str(path), *TINY, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and match in err
    assert err.startswith("fervid train: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_cli_refusals(tmp_path, capsys):
    code, _, err = cli(["train", "--resume", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "nothing to resume (no last.pt)" in err and err.count("\n") == 1
    code, _, err = cli(["train", "--config", str(tmp_path / "missing.yaml")], capsys)
    assert code == 2 and "missing.yaml: cannot read config" in err
    run = tmp_path / "run"
    code, out, _ = cli(["train", *TINY, "--epochs", "1", "--out", str(run)], capsys)
    assert code == 0 and "best val accuracy" in out and (run / "last.pt").exists()
    code, _, err = cli(["train", *TINY, "--epochs", "1", "--out", str(run)], capsys)
    assert code == 2 and "already holds a run" in err and err.count("\n") == 1
    code, _, err = cli(["train", "--resume", str(run), "--epochs", "5", "--aug-flip", "0"], capsys)
    assert code == 2 and "cannot take --aug-flip, --epochs" in err
    code, _, err = cli(["train", "--resume", str(run), "--threads", "2", "--lr", "0.1"], capsys)
    assert code == 2 and "cannot take --lr" in err and "--threads" not in err
    code, _, err = cli(["train", *TINY, "--optimizer", "lion", "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "unknown optimizer 'lion'" in err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        if f.name != "augment":
            assert "--" + f.name.replace("_", "-") in text
    for f in dataclasses.fields(AugmentConfig):
        assert "--aug-" + f.name.replace("_", "-") in text
    assert "--resume" in text and "--config" in text


# --- kill and resume ----------------------------------------------------------------------------

def _training_csv(path: Path, copies: int) -> Path:
    """The committed faces as fer2013.csv, the training ones repeated so that an epoch lasts long
    enough to be interrupted in."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for group, usage, n in (("train", "Training", copies), ("test", "PublicTest", 1)):
            for p in sorted((TEST_FER / group).glob("*/*.jpg")):
                px = " ".join(map(str, cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).ravel()))
                for _ in range(n):
                    w.writerow([FER_CLASSES.index(p.parent.name), px, usage])
    return path


def _fervid(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "fervid", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lines(path: Path) -> list[dict]:
    try:
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    except (OSError, ValueError):
        return []


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    """Killed half an epoch after a checkpoint (in the middle of the next epoch's steps), resumed
    with --resume: weights, EMA, optimizer state, best model and metrics equal an uninterrupted run's."""
    data = _training_csv(tmp_path / "fer2013.csv", copies=2)  # a few steps an epoch to be killed among
    args = ["--data", str(data), "--train-split", "Training", "--val-split", "PublicTest", "--model", "vgg_tiny",
            "--epochs", "4", "--batch-size", "8", "--lr", "0.02", "--ema", "0.9", "--seed", "5",
            "--threads", "1", "--device", "cpu", "--no-progress"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, "-c", f"from fervid.data import read_source; read_source({str(data)!r})"],
                   check=True, env=os.environ, cwd=ROOT)  # fill the cache once, not in both runs at once
    ref = _fervid([*args, "--out", str(straight)])  # the uninterrupted run, alongside
    proc = _fervid([*args, "--out", str(killed)])
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = _lines(killed / "metrics.jsonl")
        if (killed / "last.pt").exists() and done:
            time.sleep(done[0]["seconds"] / 2)  # half an epoch into the next one
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.communicate()[0]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved_epoch = ckpt.load_training_state(killed / "last.pt")["epoch"]  # 0-based
    assert 0 <= saved_epoch < 3, "killed after at least one checkpoint and before the end"
    # Between two checkpoints: epochs 1..saved_epoch+1 are recorded, the next one was under way.
    assert [r["epoch"] for r in _lines(killed / "metrics.jsonl")] == list(range(1, saved_epoch + 2))
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out

    proc = _fervid(["--resume", str(killed), "--no-progress"])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"resuming after epoch {saved_epoch + 1}" in out

    a, b = ckpt.load_training_state(straight / "last.pt"), ckpt.load_training_state(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after kill and resume"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, st in a["optimizer"]["state"].items():  # SGD momentum buffers
        for k, v in st.items():
            assert torch.equal(v, b["optimizer"]["state"][i][k]), f"optimizer state {i}.{k} differs"
    best_a, best_b = load_file(straight / "best.safetensors"), load_file(killed / "best.safetensors")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)

    def no_time(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]

    assert no_time(_lines(killed / "metrics.jsonl")) == no_time(_lines(straight / "metrics.jsonl"))
    assert [r["epoch"] for r in _lines(killed / "metrics.jsonl")] == [1, 2, 3, 4]


def test_resume_may_change_threads_and_nothing_else(tmp_path, capsys):
    """--threads is a speed setting: a resumed run takes it (and saves it), keeping every other
    field of its saved config."""
    run = tmp_path / "run"
    code, _, _ = cli(["train", *TINY, "--epochs", "1", "--threads", "1", "--out", str(run)], capsys)
    assert code == 0
    state = ckpt.load_training_state(run / "last.pt")
    state["config"]["epochs"] = 2  # as if the run had been killed after epoch 1 of 2
    ckpt.save_training_state(run / "last.pt", state)
    code, out, _ = cli(["train", "--resume", str(run), "--threads", "2", "--no-progress"], capsys)
    assert code == 0 and "resuming after epoch 1" in out and "epoch 2/2" in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["threads"] == 2 and saved["epochs"] == 2
    assert {k: v for k, v in saved.items() if k != "threads"} == \
        {k: v for k, v in state["config"].items() if k != "threads"}
