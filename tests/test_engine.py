"""The training loop, in-process on the committed faces: artefacts, determinism, resume,
early stopping, every optimiser/schedule/weighting option, and bf16."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from fervid.training import checkpoint as ckpt  # noqa: E402
from fervid.data import FaceSet, load_faces  # noqa: E402
from fervid.training.engine import (TIMING_KEYS, TrainConfig, TrainingDivergedError, autocast_dtype, lr_factor,  # noqa: E402
                           predict_logits, train)
from fervid.errors import BadInputError, FervidError  # noqa: E402
from fervid.models import create_model  # noqa: E402

TEST_FER = Path(__file__).resolve().parents[1] / "tests" / "data" / "fer"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sets() -> tuple[FaceSet, FaceSet]:
    return load_faces(TEST_FER, "train", use_cache=False), load_faces(TEST_FER, "test", use_cache=False)


def cfg_for(out: Path, **kw) -> TrainConfig:
    base = dict(data=str(TEST_FER), train_split="train", val_split="test", model="vgg_tiny", epochs=2,
                batch_size=8, lr=0.02, threads=1, device="cpu", precision="fp32", out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def run(out: Path, sets, resume: bool = False, **kw) -> dict:
    return train(cfg_for(out, **kw), resume=resume, progress=False, train_set=sets[0], val_set=sets[1])


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def state(out: Path) -> dict:
    return ckpt.load_training_state(out / "last.pt")


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def test_tiny_run_writes_its_artefacts(tmp_path, sets):
    out = tmp_path / "run"
    summary = run(out, sets, epochs=3)
    assert sorted(p.name for p in out.iterdir()) == ["best.safetensors", "config.json", "last.pt", "metrics.jsonl"]
    assert json.loads((out / "config.json").read_text()) == cfg_for(out, epochs=3).to_dict()
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "best_val_acc"} <= r.keys()
        assert math.isfinite(r["train_loss"]) and 0 <= r["val_acc"] <= 1
    best = max(rows, key=lambda r: r["val_acc"])  # first epoch reaching the best accuracy
    assert summary["best_epoch"] == best["epoch"] and summary["best_val_acc"] == pytest.approx(best["val_acc"], abs=1e-5)
    assert summary["epochs_run"] == 3 and not summary["stopped_early"]
    model, meta = ckpt.load_model(out)
    assert meta["arch"] == "vgg_tiny" and meta["classes"] == list(sets[0].classes)
    assert meta["trained"]["epoch"] == best["epoch"] and meta["metrics"]["val_acc"] == best["val_acc"]
    # The saved best model really scores what the metrics say.
    acc = float((predict_logits(model, sets[1].images).argmax(1) == torch.from_numpy(sets[1].labels)).float().mean())
    assert acc == pytest.approx(best["val_acc"], abs=1e-4)
    st = state(out)
    assert st["epoch"] == 2 and st["config"]["epochs"] == 3 and len(st["history"]) == 3


def test_same_seed_same_weights(tmp_path, sets):
    kw = dict(epochs=2, seed=3, ema=0.9, precision="auto")  # bf16 where the CPU has it
    run(tmp_path / "a", sets, **kw)
    run(tmp_path / "b", sets, **kw)
    run(tmp_path / "c", sets, **{**kw, "seed": 4})
    a, b, c = state(tmp_path / "a"), state(tmp_path / "b"), state(tmp_path / "c")
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["ema"], b["ema"])
    assert without_time(metrics(tmp_path / "a")) == without_time(metrics(tmp_path / "b"))
    assert not same_tensors(a["model"], c["model"])


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_weights(tmp_path, sets):
    kw = dict(epochs=3, seed=1, ema=0.8, mixup=0.3, class_weighting="sampler")
    run(tmp_path / "straight", sets, **kw)

    def stop_after_first(m):
        if m["epoch"] == 1:
            raise Interrupt

    out = tmp_path / "interrupted"
    with pytest.raises(Interrupt):
        train(cfg_for(out, **kw), progress=False, on_epoch=stop_after_first, train_set=sets[0], val_set=sets[1])
    assert state(out)["epoch"] == 0
    # A kill between the checkpoint and the metrics line leaves metrics.jsonl out of step:
    # resuming rewrites it from the checkpoint's history.
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"epoch": 2, "val_acc": 0.99}) + "\n")
    summary = train(TrainConfig(out=str(out)), resume=True, progress=False, train_set=sets[0], val_set=sets[1])
    a, b = state(tmp_path / "straight"), state(out)
    assert same_tensors(a["model"], b["model"]) and same_tensors(a["ema"], b["ema"])
    assert same_tensors(load_file(tmp_path / "straight" / "best.safetensors"), load_file(out / "best.safetensors"))
    assert without_time(metrics(out)) == without_time(metrics(tmp_path / "straight"))
    assert summary["epochs_run"] == 3
    # Resuming a finished run trains nothing more.
    train(TrainConfig(out=str(out)), resume=True, progress=False, train_set=sets[0], val_set=sets[1])
    assert same_tensors(state(out)["model"], b["model"]) and len(metrics(out)) == 3


def test_early_stopping(tmp_path, sets):
    one = FaceSet(sets[1].images[:1], sets[1].labels[:1], sets[1].classes)  # val accuracy is 0 or 1
    out = tmp_path / "es"
    summary = train(cfg_for(out, epochs=12, patience=1), progress=False, train_set=sets[0], val_set=one)
    rows = metrics(out)
    # It can improve at most once (0 -> 1), so with patience 1 it stops by epoch 3.
    assert summary["stopped_early"] and len(rows) <= 3 and summary["epochs_run"] == len(rows)
    assert rows[-1]["epoch"] - summary["best_epoch"] == 1
    train(TrainConfig(out=str(out)), resume=True, progress=False, train_set=sets[0], val_set=one)
    assert len(metrics(out)) == len(rows), "a run that stopped early stays stopped on --resume"


@pytest.mark.parametrize("optimizer,schedule", [("sgd", "cosine"), ("adamw", "onecycle"), ("sgd", "constant")])
def test_optimizers_and_schedules(tmp_path, sets, optimizer, schedule):
    lr = 0.002 if optimizer == "adamw" else 0.02
    run(tmp_path / "r", sets, optimizer=optimizer, schedule=schedule, lr=lr, epochs=2, warmup_epochs=0.5)
    rows = metrics(tmp_path / "r")
    assert len(rows) == 2 and all(math.isfinite(r["train_loss"]) for r in rows)
    if schedule == "constant":
        assert rows[-1]["lr"] == pytest.approx(lr)
    else:  # decaying: the last step's rate is below the peak
        assert rows[-1]["lr"] < lr
    opt_state = state(tmp_path / "r")["optimizer"]["state"]
    assert any(("exp_avg" in s) == (optimizer == "adamw") for s in opt_state.values())


def test_lr_factor_shape():
    steps = [i / 1000 for i in range(1000)]
    cos = [lr_factor(p, "cosine", 0.1) for p in steps]
    warm = cos[:100]
    assert all(b > a for a, b in zip(warm, warm[1:])), "warmup rises"
    assert warm[0] < 0.02 and max(cos) == pytest.approx(1.0, abs=0.02)
    after = cos[100:]
    assert all(b <= a + 1e-12 for a, b in zip(after, after[1:])), "cosine only falls"
    assert cos[-1] < 1e-3 and lr_factor(0.55, "cosine", 0.1) == pytest.approx(0.5, abs=1e-6)
    const = [lr_factor(p, "constant", 0.1) for p in steps]
    assert const[-1] == 1.0 and const[50] == pytest.approx(0.5, abs=0.01)
    one = [lr_factor(p, "onecycle", 0.05) for p in steps]  # onecycle warms up for at least 30%
    assert one.index(max(one)) == pytest.approx(300, abs=2) and one[-1] < 1e-3
    assert lr_factor(0.0, "cosine", 0.0) == 1.0


@pytest.mark.parametrize("extra", [dict(class_weighting="loss"), dict(class_weighting="sampler"),
                                   dict(mixup=0.4), dict(cutmix=1.0), dict(mixup=0.4, cutmix=1.0),
                                   dict(ema=0.9)])
def test_weighting_mixup_and_ema_train(tmp_path, sets, extra):
    out = tmp_path / "r"
    run(out, sets, epochs=1, **extra)
    rows = metrics(out)
    assert len(rows) == 1 and math.isfinite(rows[0]["train_loss"]) and math.isfinite(rows[0]["val_loss"])
    st = state(out)
    best = load_file(out / "best.safetensors")
    if extra.get("ema"):  # the EMA weights, not the raw ones, are what gets evaluated and saved
        ema_weights = {k[len("module."):]: v for k, v in st["ema"].items() if k.startswith("module.")}
        assert same_tensors(best, ema_weights) and not same_tensors(best, st["model"])
    else:
        assert st["ema"] is None and same_tensors(best, st["model"])


def test_limit_takes_a_seeded_subset(tmp_path, sets, capsys):
    run(tmp_path / "a", sets, epochs=1, limit=10)
    assert "10 train faces" in capsys.readouterr().out
    run(tmp_path / "b", sets, epochs=1, limit=10)
    assert same_tensors(state(tmp_path / "a")["model"], state(tmp_path / "b")["model"])


def test_bf16_autocast_and_training_step(tmp_path, sets):
    cpu = torch.device("cpu")
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "") \
        if Path("/proc/cpuinfo").exists() else ""
    native = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if native else None)
    assert autocast_dtype(cpu, "fp32") is None and autocast_dtype(cpu, "bf16") == torch.bfloat16
    model = create_model("vgg_tiny")
    x = torch.randn(4, 1, 48, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16
    loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())
    run(tmp_path / "bf16", sets, epochs=1, precision="bf16")
    row = metrics(tmp_path / "bf16")[0]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])


def test_refusals(tmp_path, sets):
    with pytest.raises(BadInputError, match=r"nothing to resume \(no last.pt\)"):
        train(TrainConfig(out=str(tmp_path / "none")), resume=True)
    out = tmp_path / "held"
    run(out, sets, epochs=1)
    before = (out / "last.pt").read_bytes()
    with pytest.raises(BadInputError, match=r"already holds a run"):
        run(out, sets, epochs=1)
    assert (out / "last.pt").read_bytes() == before
    for bad, match in [(dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
                       (dict(schedule="step"), "unknown schedule 'step'"),
                       (dict(class_weighting="focal"), "unknown class weighting"),
                       (dict(precision="fp16"), "unknown precision"),
                       (dict(epochs=0), "epochs 0 is out of range"), (dict(ema=1.0), "ema 1.0 is out of range"),
                       (dict(epochs=2, swa_start=3), "swa-start 3 is out of range"),
                       (dict(model="vgg_xxl"), "unknown model"), (dict(device="tpu"), "unknown device")]:
        with pytest.raises(BadInputError, match=match):
            run(tmp_path / "bad", sets, **bad)
    with pytest.raises(BadInputError, match="unknown config key"):
        TrainConfig.from_dict({"epochz": 3})
    with pytest.raises(BadInputError, match="config key epochs: expected int"):
        TrainConfig.from_dict({"epochs": "ten"})
    assert TrainConfig.from_dict({"lr": "5e-2", "augment": {"flip": 1}}).lr == 0.05  # YAML's 5e-2 is a string


def test_divergence_is_a_one_line_error(tmp_path, sets):
    with pytest.raises(TrainingDivergedError, match="lower --lr") as e:
        run(tmp_path / "boom", sets, epochs=1, lr=1e30, schedule="constant", warmup_epochs=0, weight_decay=0)
    assert isinstance(e.value, FervidError)


def test_to_input_matches_the_numpy_path(sets):
    """The PyTorch path (training) and the NumPy path (ONNX recognition) must feed models alike."""
    from fervid.training.engine import to_input
    from fervid.preprocess import normalize

    imgs = sets[1].images[:6]
    assert torch.allclose(to_input(torch.from_numpy(imgs), torch.device("cpu")), torch.from_numpy(normalize(imgs)),
                          atol=1e-6)


def test_predict_logits_batches_and_tta(sets):
    from fervid.training.runtime import accuracy

    torch.manual_seed(0)
    model = create_model("vgg_tiny").eval()
    imgs = sets[1].images
    whole = predict_logits(model, imgs, batch_size=512)
    assert whole.shape == (len(imgs), 7)
    assert torch.allclose(predict_logits(model, imgs, batch_size=5), whole, atol=1e-5)
    tta = predict_logits(model, imgs, tta=True)
    assert tta.shape == whole.shape and torch.allclose(tta.exp().sum(1), torch.ones(len(imgs)), atol=1e-4)
    labels = sets[1].labels
    assert accuracy(whole, labels) == float((whole.argmax(1).numpy() == labels).mean())
    assert predict_logits(model, imgs[:0]).numel() == 0


def test_pick_device():
    from fervid.training.engine import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(BadInputError, match="no CUDA GPU"):
            pick_device("cuda")
    with pytest.raises(BadInputError, match="unknown device"):
        pick_device("gpu0")


def test_ema_decay_warms_up_then_caps():
    """Early EMA updates follow the model closely; later ones use the configured decay."""
    from fervid.training.weight_averaging import ema_with_warmup

    update = ema_with_warmup(0.9)
    ema, cur = [torch.zeros(3)], [torch.ones(3)]
    update(ema, cur, torch.tensor(1))  # decay min(0.9, 2/11) = 0.1818...
    assert torch.allclose(ema[0], torch.full((3,), 1 - 2 / 11))
    ema = [torch.zeros(3)]
    update(ema, cur, torch.tensor(1000))  # capped at 0.9
    assert torch.allclose(ema[0], torch.full((3,), 0.1))
    counter = [torch.tensor(3)]
    update(counter, [torch.tensor(7)], torch.tensor(5))
    assert int(counter[0]) == 7


def test_init_starts_from_a_models_weights(tmp_path, sets):
    """``init`` loads a finished model's weights (fine-tuning); wrong architecture is refused."""
    first = tmp_path / "first"
    run(first, sets, epochs=1)
    start = load_file(str(first / "best.safetensors"))
    # With a vanishing learning rate the fine-tuned weights stay where init put them.
    second = tmp_path / "second"
    run(second, sets, epochs=1, init=str(first / "best.safetensors"), lr=1e-12, weight_decay=0.0)
    after = state(second)["model"]
    for k, v in start.items():
        if k.endswith("weight") and v.ndim == 4:
            assert torch.allclose(after[k], v, atol=1e-7), k
    fresh = create_model("vgg_tiny", num_classes=7).state_dict()
    conv = next(k for k, v in start.items() if v.ndim == 4)
    assert not torch.allclose(fresh[conv], start[conv])
    with pytest.raises(BadInputError, match="cannot start"):
        run(tmp_path / "third", sets, epochs=1, model="baseline", init=str(first / "best.safetensors"))
