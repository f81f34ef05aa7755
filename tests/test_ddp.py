"""Data-parallel training: ``torchrun --nproc-per-node 2`` (gloo on the CPU) through the real CLI.

A small driver runs ``fervid train`` in each rank with two spies on the engine: one hashes
the faces each rank trains on (before augmentation), one records each rank's validation
result and a digest of the evaluated weights. From those: the ranks train on disjoint
shards, hold identical models when they evaluate, agree on every val accuracy (so early
stopping cannot split them), and only rank 0 writes files and logs.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from fervid.training import checkpoint as ckpt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_FER = ROOT / "tests" / "data" / "fer"

DRIVER = '''
import hashlib, json, os, sys
import torch
import fervid.training.engine as eng
import fervid.training.step as st
from fervid.cli import main

rank = int(os.environ["RANK"])
current, epochs = [], []
real_augment, real_evaluate = st.augment, eng.validate

def augment(x, cfg, g, flip=None):
    current.extend(hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in x)
    return real_augment(x, cfg, g, flip)

def evaluate(model, *args, **kw):
    result = real_evaluate(model, *args, **kw)
    digest = hashlib.sha1()
    for t in model.state_dict().values():
        digest.update(t.detach().float().numpy().tobytes())
    epochs.append({"faces": list(current), "val": list(result), "weights": digest.hexdigest()})
    current.clear()
    return result

st.augment, eng.validate = augment, evaluate
code = main(sys.argv[2:])
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as fh:
    json.dump({"world": int(os.environ["WORLD_SIZE"]), "epochs": epochs, "code": code}, fh)
sys.exit(code)
'''


@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun is not installed")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    records, out = tmp_path / "records", tmp_path / "run"
    records.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FERVID_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    epochs = 3
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", str(driver), str(records),
           "train", "--data", str(TEST_FER), "--train-split", "train", "--val-split", "test", "--model", "vgg_tiny",
           "--epochs", str(epochs), "--batch-size", "8", "--ema", "0.5", "--patience", "1", "--threads", "1",
           "--device", "cpu", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log

    r0, r1 = (json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r0["code"] == r1["code"] == 0
    n = len(r0["epochs"])
    assert 1 <= n <= epochs and len(r1["epochs"]) == n, "both ranks must run (and stop after) the same epochs"
    n_train = len(list((TEST_FER / "train").glob("*/*.jpg")))
    for e0, e1 in zip(r0["epochs"], r1["epochs"]):
        a, b = set(e0["faces"]), set(e1["faces"])
        assert len(e0["faces"]) == len(e1["faces"]) == (n_train // 2) // 4 * 4, "per-rank batch is batch_size/2"
        assert len(a) == len(e0["faces"]) and not a & b, "the ranks' shards must be disjoint"
        assert e0["weights"] == e1["weights"], "ranks evaluated different weights (unsynced BatchNorm/EMA?)"
        assert e0["val"] == e1["val"]

    # Rank 0 alone writes: one metrics line per epoch, one log line per epoch, one summary.
    assert sorted(p.name for p in out.iterdir() if not p.name.endswith(".png")) == \
        ["best.safetensors", "config.json", "last.pt", "metrics.jsonl"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, n + 1))
    for row, e in zip(rows, r0["epochs"]):
        assert row["val_acc"] == pytest.approx(e["val"][1], abs=1e-5)
        assert row["val_loss"] == pytest.approx(e["val"][0], abs=1e-5)
    assert log.count("epoch 1/") == 1 and log.count("best val accuracy") == 1
    st = ckpt.load_training_state(out / "last.pt")
    assert st["epoch"] == n - 1 and st["config"]["epochs"] == epochs
    model, meta = ckpt.load_model(out)
    assert meta["arch"] == "vgg_tiny" and len(meta["classes"]) == 7
    best = load_file(out / "best.safetensors")
    assert all(torch.isfinite(v.float()).all() for v in best.values())
