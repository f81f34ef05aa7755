"""Carrying a run across machines: what the small resume file keeps, how a run goes on from it,
and what it refuses."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from fervid.training import checkpoint as ckpt  # noqa: E402
from fervid.training.carry import pack, unpack  # noqa: E402
from fervid.cli import main  # noqa: E402
from fervid.data import load_faces  # noqa: E402
from fervid.training.engine import TIMING_KEYS, TrainConfig, train  # noqa: E402
from fervid.errors import BadInputError, ModelFileError  # noqa: E402

TEST_FER = Path(__file__).resolve().parents[1] / "tests" / "data" / "fer"
torch.set_num_threads(1)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def sets():
    return load_faces(TEST_FER, "train", use_cache=False), load_faces(TEST_FER, "test", use_cache=False)


def config(out: Path, **kw) -> TrainConfig:
    # A cosine schedule with warm-up, so an epoch's lr says where the run stands in it.
    base = dict(data=str(TEST_FER), train_split="train", val_split="test", model="vgg_tiny", epochs=3,
                batch_size=8, lr=0.02, schedule="cosine", warmup_epochs=0.5, ema=0.9, mixup=0.2, seed=3,
                threads=1, device="cpu", precision="fp32", out=str(out))
    return TrainConfig(**{**base, **kw})


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def interrupted(out: Path, sets, after: int, **kw) -> None:
    def stop(m):
        if m["epoch"] == after:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config(out, **kw), progress=False, on_epoch=stop, train_set=sets[0], val_set=sets[1])


def test_a_packed_run_goes_on_where_it_stopped(tmp_path, sets):
    train(config(tmp_path / "straight"), progress=False, train_set=sets[0], val_set=sets[1])
    interrupted(tmp_path / "first", sets, after=2)
    info = pack(tmp_path / "first", tmp_path / "carry.safetensors")
    assert info["epoch"] == 2 and info["epochs"] == 3
    before = ckpt.load_training_state(tmp_path / "first" / "last.pt")
    carried = load_file(tmp_path / "carry.safetensors")
    # Only the model travels, in fp16 (integer buffers as they are): no momentum, no average.
    assert set(carried) == set(before["model"])
    assert all(v.dtype == (torch.float16 if before["model"][k].is_floating_point() else before["model"][k].dtype)
               for k, v in carried.items())
    assert info["bytes"] < 0.6 * (tmp_path / "first" / "last.pt").stat().st_size

    unpack(tmp_path / "carry.safetensors", tmp_path / "second")
    rebuilt = ckpt.load_training_state(tmp_path / "second" / "last.pt")
    for k, v in before["model"].items():
        expected = v.half().float() if v.is_floating_point() else v
        assert torch.equal(rebuilt["model"][k], expected.to(v.dtype)), k
    assert rebuilt["optimizer"]["state"] == {}  # momentum starts again
    assert int(rebuilt["ema"]["n_averaged"]) == 0  # so does the average, from the carried weights
    assert (rebuilt["epoch"], rebuilt["step"]) == (before["epoch"], before["step"])

    summary = train(TrainConfig(out=str(tmp_path / "second")), resume=True, progress=False,
                    train_set=sets[0], val_set=sets[1])
    assert summary["epochs_run"] == 3
    straight, went_on = metrics(tmp_path / "straight"), metrics(tmp_path / "second")
    assert [m["epoch"] for m in went_on] == [1, 2, 3]
    strip = lambda rows: [{k: v for k, v in m.items() if k not in TIMING_KEYS} for m in rows]  # noqa: E731
    assert strip(went_on[:2]) == strip(metrics(tmp_path / "first"))  # the history travelled
    assert went_on[2]["lr"] == straight[2]["lr"]  # the schedule went on from the same step
    assert ckpt.load_training_state(tmp_path / "second" / "last.pt")["step"] == \
        ckpt.load_training_state(tmp_path / "straight" / "last.pt")["step"]
    # Best-model selection started again: the first epoch after the carry-over is the best so far.
    assert ckpt.read_meta(tmp_path / "second" / "best.safetensors")["trained"]["epoch"] == 3


def test_refusals(tmp_path, sets):
    with pytest.raises(BadInputError, match="nothing to pack"):
        pack(tmp_path, tmp_path / "c.safetensors")
    interrupted(tmp_path / "swa", sets, after=2, swa_start=1, epochs=3, schedule="constant", warmup_epochs=0.0)
    with pytest.raises(BadInputError, match="SWA run cannot be packed"):
        pack(tmp_path / "swa", tmp_path / "c.safetensors")

    with pytest.raises(BadInputError, match="no such file"):
        unpack(tmp_path / "missing.safetensors", tmp_path / "x")
    (tmp_path / "text.safetensors").write_text("not a carry file")
    with pytest.raises(ModelFileError, match="not a fervid carry file"):
        unpack(tmp_path / "text.safetensors", tmp_path / "x")
    # A model file is a safetensors file too, but not a resume file.
    with pytest.raises(ModelFileError, match="no fervid-carry header"):
        unpack(tmp_path / "swa" / "best.safetensors", tmp_path / "x")

    interrupted(tmp_path / "run", sets, after=1)
    pack(tmp_path / "run", tmp_path / "c.safetensors")
    with pytest.raises(BadInputError, match="already exists"):  # packing again needs overwrite
        pack(tmp_path / "run", tmp_path / "c.safetensors")
    assert pack(tmp_path / "run", tmp_path / "c.safetensors", overwrite=True)["epoch"] == 1
    with pytest.raises(BadInputError, match="already holds a run"):
        unpack(tmp_path / "c.safetensors", tmp_path / "run")
    # Weights of another architecture under a valid header.
    tensors = load_file(tmp_path / "c.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as f:
        header = json.loads(f.metadata()["fervid-carry"])
    for change, match in [({"config": {**header["config"], "model": "vgg_s"}}, "do not fit the vgg_s model"),
                          ({"config": {**header["config"], "model": "no_such_net"}}, "carried config cannot be used"),
                          ({"epoch": "two"}, "incomplete header"), ({"history": None}, "incomplete header")]:
        meta = {"fervid-carry": json.dumps({**header, **change})}
        save_file(tensors, str(tmp_path / "other.safetensors"), metadata=meta)
        with pytest.raises(ModelFileError, match=match):
            unpack(tmp_path / "other.safetensors", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing half-made


def test_cli_pack_unpack_and_one_line_errors(tmp_path, sets, capsys, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path / "cache"))
    interrupted(tmp_path / "run", sets, after=1)
    assert main(["carry", "pack", str(tmp_path / "run"), "-o", str(tmp_path / "c.safetensors")]) == 0
    assert "after epoch 1 of 3" in capsys.readouterr().out
    assert main(["carry", "unpack", str(tmp_path / "c.safetensors"), "--out", str(tmp_path / "again")]) == 0
    assert f"fervid train --resume {tmp_path / 'again'}" in capsys.readouterr().out
    assert main(["train", "--resume", str(tmp_path / "again"), "--no-progress"]) == 0
    assert [m["epoch"] for m in metrics(tmp_path / "again")] == [1, 2, 3]
    capsys.readouterr()
    assert main(["carry", "unpack", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fervid carry: error:") and "not a fervid carry file" in err and err.count("\n") == 1
