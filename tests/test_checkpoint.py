"""Model files: one .safetensors with fervid metadata; anything else is refused with one line."""
from __future__ import annotations

import json
import os
import stat

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import save_file  # noqa: E402

from fervid.training import checkpoint as ckpt  # noqa: E402
from fervid.errors import BadInputError, ModelFileError  # noqa: E402
from fervid.files import atomic_path, write_text_atomic  # noqa: E402
from fervid.modelfile import resolve  # noqa: E402
from fervid.models import create_model  # noqa: E402

torch.set_num_threads(1)
CLASSES = ["angry", "happy", "sad"]


def _model(name: str = "vgg_tiny", n: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    m = create_model(name, num_classes=n)
    m.train()  # move batch-norm statistics off their defaults, so buffers are tested too
    with torch.no_grad():
        m(torch.randn(8, 1, 48, 48))
    return m.eval()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_roundtrip_gives_identical_outputs(tmp_path):
    model = _model()
    meta = ckpt.make_meta("vgg_tiny", CLASSES, params=123, trained={"epoch": 4}, metrics={"val_acc": 0.5})
    path = ckpt.save_model(tmp_path / "m.safetensors", model, meta)
    loaded, meta2 = ckpt.load_model(path)
    assert not loaded.training
    x = torch.randn(5, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta2 == json.loads(json.dumps(meta))
    assert meta2["arch"] == "vgg_tiny" and meta2["classes"] == CLASSES and meta2["trained"]["epoch"] == 4
    assert ckpt.read_meta(path) == meta2
    # A run folder stands for its best model.
    (tmp_path / "run").mkdir()
    ckpt.save_model(tmp_path / "run" / "best.safetensors", model, meta)
    assert resolve(tmp_path / "run", torch_only=True) == tmp_path / "run" / "best.safetensors"
    assert ckpt.read_meta(tmp_path / "run")["classes"] == CLASSES
    # Readable like any other output file (safetensors itself writes 0600 files).
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_current_umask()


def test_not_a_fervid_model(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in _model().state_dict().items()}, str(plain))
    with pytest.raises(ModelFileError, match=r"plain.safetensors: not a fervid model \(no fervid metadata"):
        ckpt.load_model(plain)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"fervid": json.dumps({"format": "something-else"})})
    with pytest.raises(ModelFileError, match="not a fervid model"):
        ckpt.read_meta(other)
    junk = tmp_path / "random.safetensors"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ModelFileError, match=r"random.safetensors: not a fervid model \(not a safetensors file\)"):
        ckpt.load_model(junk)
    text = tmp_path / "model.onnx"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        ckpt.load_model(text)
    with pytest.raises(ModelFileError, match="no such model file"):
        ckpt.load_model(tmp_path / "missing.safetensors")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(ModelFileError, match="folder holds no best.safetensors"):
        ckpt.load_model(tmp_path / "empty_run")
    assert issubclass(ModelFileError, BadInputError) and ModelFileError("x").exit_code == 2


def test_weights_that_do_not_fit_the_metadata(tmp_path):
    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, _model("vgg_tiny"), ckpt.make_meta("vgg_s", CLASSES))  # another architecture
    with pytest.raises(ModelFileError, match=r"weights do not match architecture 'vgg_s' with 3 classes"):
        ckpt.load_model(path)
    ckpt.save_model(path, _model("vgg_tiny", n=7), ckpt.make_meta("vgg_tiny", CLASSES))  # 7 outputs, 3 names
    with pytest.raises(ModelFileError, match="weights do not match"):
        ckpt.load_model(path)
    ckpt.save_model(path, _model("vgg_tiny"), ckpt.make_meta("vgg_future", CLASSES))
    with pytest.raises(ModelFileError, match=r"unknown architecture 'vgg_future'"):
        ckpt.load_model(path)
    ckpt.save_model(path, _model("vgg_tiny"), ckpt.make_meta("vgg_tiny", CLASSES, version=99))
    with pytest.raises(ModelFileError, match="newer than this fervid reads"):
        ckpt.read_meta(path)
    ckpt.save_model(path, _model("vgg_tiny"), ckpt.make_meta("vgg_tiny", []))
    with pytest.raises(ModelFileError, match="not a fervid model"):
        ckpt.read_meta(path)


def test_truncated_model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    ckpt.save_model(path, _model(), ckpt.make_meta("vgg_tiny", CLASSES))
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 1000])
    with pytest.raises(ModelFileError, match="m.safetensors"):
        ckpt.load_model(path)


def test_training_state_roundtrip_and_damage(tmp_path):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 1, 48, 48)).sum().backward()
    opt.step()
    state = {"config": {"model": "vgg_tiny", "augment": {"flip": 0.5}}, "epoch": 2, "best_acc": 0.25,
             "model": model.state_dict(), "optimizer": opt.state_dict(), "ema": None,
             "history": [{"epoch": 1, "val_acc": 0.25}]}
    ckpt.save_training_state(tmp_path / "last.pt", state)
    back = ckpt.load_training_state(tmp_path / "last.pt")  # weights_only: no pickled code
    assert back["config"] == state["config"] and back["history"] == state["history"]
    assert all(torch.equal(back["model"][k], v) for k, v in state["model"].items())
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match=r"bad.pt: cannot read training checkpoint"):
        ckpt.load_training_state(tmp_path / "bad.pt")


def test_atomic_writes(tmp_path):
    target = tmp_path / "out" / "report.txt"
    write_text_atomic(target, "one")
    assert target.read_text() == "one"
    with pytest.raises(BadInputError, match=r"report.txt: already exists \(use --overwrite"):
        write_text_atomic(target, "two", overwrite=False)
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "one", "a failed write must leave the old file in place"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.txt"], "no temporary left behind"
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_current_umask()


def test_a_training_state_ends_with_the_model_the_engine_validated():
    """Cross-validation scores a fold's last.pt: with SWA started it must be the SWA average
    (as the engine validates and saves it), not the EMA or the raw weights."""
    from torch.optim.swa_utils import AveragedModel

    raw, ema, swa = _model(seed=0), _model(seed=1), _model(seed=2)
    state = {"config": {"model": "vgg_tiny", "swa_start": 3}, "epoch": 2, "model": raw.state_dict(),
             "ema": AveragedModel(ema).state_dict(), "swa": AveragedModel(swa).state_dict()}
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        for want, s in ((swa, state), (ema, {**state, "epoch": 1}), (raw, {**state, "ema": None, "swa": None})):
            assert torch.equal(ckpt.model_from_state(s, CLASSES)(x), want(x))
