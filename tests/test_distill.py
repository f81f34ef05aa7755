"""Knowledge distillation (``teacher``) and ensembles: the loss, the teachers, and their effect on training."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fervid.training import checkpoint as ckpt  # noqa: E402
from fervid.training.config import AugmentConfig  # noqa: E402
from fervid.data import FaceSet, load_faces  # noqa: E402
from fervid.training.distill import distill_loss, load_teachers, teacher_probs  # noqa: E402
from fervid.training.engine import TrainConfig, train  # noqa: E402
from fervid.analysis.predictors import Ensemble, load_model_any, model_logits  # noqa: E402
from fervid.errors import BadInputError, ModelFileError  # noqa: E402
from fervid.analysis.evaluate import evaluate  # noqa: E402
from fervid.models import create_model  # noqa: E402

TEST_FER = Path(__file__).resolve().parents[1] / "tests" / "data" / "fer"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sets() -> tuple[FaceSet, FaceSet]:
    return load_faces(TEST_FER, "train", use_cache=False), load_faces(TEST_FER, "test", use_cache=False)


def run(out: Path, sets, train_set: FaceSet | None = None, **kw) -> dict:
    cfg = TrainConfig(**{**dict(data=str(TEST_FER), train_split="train", val_split="test", model="vgg_tiny",
                                epochs=2, batch_size=8, lr=0.02, threads=1, device="cpu", precision="fp32",
                                out=str(out)), **kw})
    return train(cfg, progress=False, train_set=train_set or sets[0], val_set=sets[1])


def test_distill_loss_is_zero_only_where_student_matches_teacher():
    torch.manual_seed(0)
    z = torch.randn(16, 7) * 3
    for temp in (1.0, 4.0):
        probs = torch.softmax(z / temp, -1)
        assert float(distill_loss(z, probs, temp)) == pytest.approx(0.0, abs=1e-5)
        assert float(distill_loss(z + torch.randn(16, 7), probs, temp)) > 1e-3
    # Shifting logits by a constant changes no probability, so no loss either.
    assert float(distill_loss(z + 5.0, torch.softmax(z / 2, -1), 2.0)) == pytest.approx(0.0, abs=1e-5)


def test_distill_loss_gradient_keeps_its_scale_across_temperatures():
    """The T² factor: at high T the soft-target gradient would otherwise shrink as 1/T²."""
    torch.manual_seed(1)
    teacher, student = torch.randn(64, 7), torch.randn(64, 7)
    norms = []
    for temp in (2.0, 8.0):
        s = (student * 0.1).requires_grad_()  # small logits: the regime where Hinton's T² argument holds
        distill_loss(s, torch.softmax(teacher * 0.1 / temp, -1), temp).backward()
        norms.append(float(s.grad.norm()))
    assert norms[1] / norms[0] == pytest.approx(1.0, rel=0.35)


def test_teacher_probs_average_the_members(tiny_model):
    teachers = load_teachers(f"{tiny_model},{tiny_model}", ckpt.read_meta(tiny_model)["classes"], torch.device("cpu"))
    assert len(teachers) == 2 and not any(p.requires_grad for t in teachers for p in t.parameters())
    x = torch.randn(5, 1, 48, 48)
    one = teacher_probs(teachers[:1], x, 3.0, None)
    assert torch.allclose(one.sum(1), torch.ones(5), atol=1e-5)
    assert torch.allclose(teacher_probs(teachers, x, 3.0, None), one, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(one, torch.softmax(teachers[0](x) / 3.0, -1), atol=1e-6)


def test_teachers_are_checked(tmp_path, tiny_model):
    with pytest.raises(BadInputError, match="differ from the run's"):
        load_teachers(str(tiny_model), ["happy", "sad"], torch.device("cpu"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelFileError):
        load_teachers(str(junk), ["happy"], torch.device("cpu"))


def test_pure_distillation_ignores_the_labels(tmp_path, sets, tiny_model):
    """With distill_alpha=1 the loss is the teacher's alone: shuffled labels train the same weights;
    with distill_alpha=0 the teacher changes nothing."""
    train_set = sets[0]
    shuffled = FaceSet(train_set.images, np.random.default_rng(0).permutation(train_set.labels),
                       train_set.classes, train_set.name, train_set.counts)
    kw = dict(teacher=str(tiny_model), distill_alpha=1.0, distill_temp=2.0)
    run(tmp_path / "a", sets, **kw)
    run(tmp_path / "b", sets, train_set=shuffled, **kw)
    a, b = (ckpt.load_training_state(tmp_path / r / "last.pt")["model"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    run(tmp_path / "c", sets, teacher=str(tiny_model), distill_alpha=0.0)
    run(tmp_path / "d", sets)
    c, d = (ckpt.load_training_state(tmp_path / r / "last.pt")["model"] for r in ("c", "d"))
    assert all(torch.equal(c[k], d[k]) for k in c)
    # ...and a real teacher does change training.
    run(tmp_path / "e", sets, teacher=str(tiny_model), distill_alpha=0.5)
    e = ckpt.load_training_state(tmp_path / "e" / "last.pt")["model"]
    assert not all(torch.equal(e[k], d[k]) for k in e)


def test_distilled_student_follows_its_teacher(tmp_path, sets, tiny_model):
    """A student taught only by the teacher agrees with it more than one taught only by the labels."""
    teacher, _ = ckpt.load_model(tiny_model)
    faces = np.concatenate([sets[0].images, sets[1].images])
    target = model_logits(teacher, faces).argmax(1)
    agree = {}
    for name, kw in {"kd": dict(teacher=str(tiny_model), distill_alpha=1.0, distill_temp=1.0), "labels": {}}.items():
        run(tmp_path / name, sets, epochs=12, lr=0.05, augment=AugmentConfig(flip=0, rotate=0, shift=0, scale=0,
                                                                             erase=0), **kw)
        student = ckpt.load_training_state(tmp_path / name / "last.pt")["model"]
        model = create_model("vgg_tiny", num_classes=7)
        model.load_state_dict(student)
        agree[name] = float((model_logits(model, faces).argmax(1) == target).mean())
    assert agree["kd"] > agree["labels"] + 0.1, agree


def test_ensemble_averages_member_probabilities(tmp_path, sets, tiny_model, tiny_onnx):
    run(tmp_path / "other", sets, epochs=1, seed=5)
    other = tmp_path / "other" / "best.safetensors"
    ens, meta, _ = load_model_any(f"{tiny_model},{other}")
    assert isinstance(ens, Ensemble) and meta["members"] == [str(tiny_model), str(other)]
    faces = sets[1].images
    p = [torch.softmax(torch.from_numpy(model_logits(ckpt.load_model(m)[0], faces)).double(), -1)
         for m in (tiny_model, other)]
    expect = ((p[0] + p[1]) / 2).log().numpy()
    assert np.allclose(model_logits(ens, faces), expect, atol=1e-5)
    # ONNX and torch members mix; a model and its own export ensemble to the model itself.
    same, _, _ = load_model_any(f"{tiny_model},{tiny_onnx}")
    single = torch.log_softmax(torch.from_numpy(model_logits(ckpt.load_model(tiny_model)[0], faces)), -1).numpy()
    assert np.allclose(model_logits(same, faces), single, atol=1e-4)
    report = evaluate(ens, meta, sets[1], tta=True)
    assert 0 <= report.plain.accuracy <= 1 and report.tta is not None and report.arch.startswith("ensemble(")


def test_ensemble_members_must_share_classes(tmp_path, sets, tiny_model):
    two = ckpt.save_model(tmp_path / "two.safetensors", create_model("vgg_tiny", num_classes=2),
                          ckpt.make_meta("vgg_tiny", ["happy", "sad"]))
    with pytest.raises(BadInputError, match="differ from"):
        load_model_any(f"{tiny_model},{two}")


def test_cli_ensemble_report_and_teacher_refusal(tmp_path, sets, tiny_model, tiny_onnx, capsys):
    """``evaluate --model a,b`` reports beside the first member without touching its own report;
    a teacher of other classes is a one-line error with exit code 2."""
    from fervid.cli import main

    run_dir = tmp_path / "member"
    run(run_dir, sets, epochs=1)
    rc = main(["evaluate", "--model", f"{run_dir / 'best.safetensors'},{tiny_onnx}", "--data", str(TEST_FER),
               "--split", "test"])
    out = capsys.readouterr().out
    assert rc == 0 and out.strip().splitlines()[-1].startswith("accuracy: ")
    assert (run_dir / "eval-ensemble-test" / "report.json").exists() and not (run_dir / "eval-test").exists()
    two = ckpt.save_model(tmp_path / "two.safetensors", create_model("vgg_tiny", num_classes=2),
                          ckpt.make_meta("vgg_tiny", ["happy", "sad"]))
    rc = main(["train", "--data", str(TEST_FER), "--train-split", "train", "--val-split", "test",
               "--model", "vgg_tiny", "--epochs", "1", "--teacher", str(two), "--out", str(tmp_path / "kd"),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "differ from the run's" in err and err.count("\n") == 1
