"""The fast recipe's engine features on tiny models and the committed faces: the frozen patch-whitening
layer, Dirac starts, the triangle schedule and per-group learning rates, alternating flips,
progressive resizing, the ``stop_at`` target, the wall-clock bookkeeping and ``bench/speedrun.py``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fervid.training.augment import alternate_flips, augment  # noqa: E402
from fervid.training.config import AugmentConfig, TrainConfig  # noqa: E402
from fervid.data import FaceSet, load_faces  # noqa: E402
from fervid.training.engine import to_input, train  # noqa: E402
from fervid.errors import BadInputError  # noqa: E402
from fervid.models import create_model, init_whitening, train_whitening  # noqa: E402
from fervid.models.fastnet import whitening_weights  # noqa: E402
from fervid.training.optim import lr_factor, make_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_FER = ROOT / "tests" / "data" / "fer"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sets() -> tuple[FaceSet, FaceSet]:
    return load_faces(TEST_FER, "train", use_cache=False), load_faces(TEST_FER, "test", use_cache=False)


def faces(sets) -> torch.Tensor:
    return to_input(torch.from_numpy(sets[0].images), torch.device("cpu"))


def run(out: Path, sets, **kw) -> dict:
    base = dict(data=str(TEST_FER), train_split="train", val_split="test", model="fastnet_s", epochs=2,
                batch_size=8, lr=0.05, threads=1, device="cpu", precision="fp32", out=str(out))
    base.update(kw)
    return train(TrainConfig(**base), progress=False, train_set=sets[0], val_set=sets[1])


def test_whitening_layer_decorrelates_real_face_patches(sets):
    x = faces(sets)
    model = create_model("fastnet_s")
    assert init_whitening(model, x)
    with torch.no_grad():
        out = model.whiten(x)  # [N, 18, 46, 46]: 9 whitened directions and their negatives
    half = out[:, :9].permute(0, 2, 3, 1).reshape(-1, 9)
    assert torch.allclose(out[:, 9:], -out[:, :9], atol=1e-5)
    assert half.mean(0).abs().max() < 1e-3  # centred by the bias
    cov = torch.cov(half.T)
    # Unit variance up to the eps added to each eigenvalue (tiny for the smallest ones), no correlation.
    assert torch.allclose(cov.diag()[:6], torch.ones(6), atol=0.05)
    off = cov - torch.diag(cov.diag())
    assert off.abs().max() < 0.02
    # Raw face patches are strongly correlated (neighbouring pixels): the layer really did something.
    raw = x.unfold(2, 3, 1).unfold(3, 3, 1).reshape(-1, 9)
    assert torch.corrcoef(raw.T)[0, 1] > 0.5
    assert not model.whiten.weight.requires_grad and not model.whiten.bias.requires_grad


def test_whitening_weights_are_eigenvectors_largest_first(sets):
    w, _ = whitening_weights(faces(sets))
    assert w.shape == (18, 1, 3, 3)
    norms = w[:9].flatten(1).norm(dim=1)  # 1/sqrt(eigenvalue): grows as the variance falls
    assert torch.all(norms[1:] >= norms[:-1] - 1e-4)


def test_whiten_off_trains_the_first_layer_and_no_whitening_model_is_untouched(sets):
    model = create_model("fastnet_s")
    assert train_whitening(model)
    assert model.whiten.weight.requires_grad and model.whiten.bias.requires_grad
    assert not init_whitening(create_model("vgg_tiny"), faces(sets))
    assert not train_whitening(create_model("vgg_tiny"))


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("kw", [dict(whiten=False), dict(optimizer="muon", muon_lr=0.02)])
def test_whiten_off_and_muon_runs_resume_to_identical_weights(tmp_path, sets, kw):
    """A killed run resumes exactly: the optimizer must be rebuilt over the same parameters."""
    from fervid.training import checkpoint as ckpt

    run(tmp_path / "straight", sets, epochs=2, **kw)

    def stop_after_first(m):
        if m["epoch"] == 1:
            raise Interrupt

    cfg = TrainConfig(data=str(TEST_FER), train_split="train", val_split="test", model="fastnet_s", epochs=2,
                      batch_size=8, lr=0.05, threads=1, device="cpu", precision="fp32", out=str(tmp_path / "cut"),
                      **kw)
    with pytest.raises(Interrupt):
        train(cfg, progress=False, on_epoch=stop_after_first, train_set=sets[0], val_set=sets[1])
    train(TrainConfig(out=str(tmp_path / "cut")), resume=True, progress=False, train_set=sets[0], val_set=sets[1])
    a = ckpt.load_training_state(tmp_path / "straight" / "last.pt")
    b = ckpt.load_training_state(tmp_path / "cut" / "last.pt")
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    if "whiten" in kw:
        assert not torch.equal(a["model"]["whiten.weight"], create_model("fastnet_s").whiten.weight)


def test_muon_updates_conv_weights_in_place_through_their_matrix_views():
    model = create_model("fastnet_s").to(memory_format=torch.channels_last)
    opt = make_optimizer(model, TrainConfig(optimizer="muon", lr=0.1, muon_lr=0.05))
    muon_group, *sgd_groups = opt.param_groups
    assert muon_group["lr_scale"] == pytest.approx(0.5) and len(muon_group["params"]) == 6  # 3 groups x 2 convs
    assert all(p.ndim < 4 for g in sgd_groups for p in g["params"])
    conv = model.groups[0].conv1.weight
    before = conv.detach().clone()
    model(torch.randn(4, 1, 48, 48).contiguous(memory_format=torch.channels_last)).sum().backward()
    opt.step()
    step = conv.detach() - before
    assert step.abs().max() > 0  # the conv moved through the view Muon holds
    # Muon's step is an orthogonalised matrix: its singular values are all of one size (~0.5-1.5 x lr).
    sv = torch.linalg.svdvals(step.permute(0, 2, 3, 1).reshape(64, -1).float())
    assert sv.max() / sv.min() < 4


def test_fastnet_starts_as_identity_and_takes_any_face_size():
    torch.manual_seed(0)
    model = create_model("fastnet_s")
    w = model.groups[1].conv2.weight.detach()  # 128 -> 128: a Dirac start passes each channel through
    centre = w[:, :, 1, 1]
    assert torch.equal(centre, torch.eye(128)) and float(w.abs().sum()) == 128.0
    assert all(not m.norm1.weight.requires_grad for m in model.groups)  # BatchNorm scale fixed at 1
    model.eval()
    for side in (32, 40, 48):
        assert model(torch.randn(2, 1, side, side)).shape == (2, 7)


def test_fastnet_normalises_before_the_pool_in_eval_with_the_same_numbers():
    """Eval puts conv1's BatchNorm before the max-pool (so ONNX folds it into the conv); with a
    positive fixed scale the two orders agree, and an exported graph has no BatchNorm left."""
    from fervid.models.fastnet import ConvGroup

    torch.manual_seed(0)
    group = ConvGroup(3, 8)
    with torch.no_grad():
        group.norm1.running_mean.uniform_(-1, 1)
        group.norm1.running_var.uniform_(0.2, 3)
        group.norm1.bias.uniform_(-1, 1)
    group.eval()
    x = torch.randn(4, 3, 12, 12)
    pooled_first = group.act(group.norm2(group.conv2(group.act(group.norm1(group.pool(group.conv1(x)))))))
    assert torch.allclose(group(x), pooled_first, atol=1e-5)
    assert not torch.allclose(group.norm1(group.conv1(x)), group.conv1(x))  # the norm does something
    pytest.importorskip("onnx")
    import onnx

    from fervid.export import onnx_bytes

    model = create_model("fastnet_s", num_classes=7).eval()
    ops = {n.op_type for n in onnx.load_from_string(onnx_bytes(model, {"arch": "fastnet_s", "classes": ["a"] * 7})).graph.node}
    assert "Conv" in ops and "BatchNormalization" not in ops


def test_triangle_schedule_and_bias_lr_scale():
    steps = [i / 100 for i in range(101)]
    tri = [lr_factor(p, "triangle", 0.2) for p in steps]
    assert tri[10] == pytest.approx(0.5, abs=1e-6) and tri[20] == pytest.approx(1.0, abs=1e-6)
    assert tri[60] == pytest.approx(0.5, abs=1e-6) and tri[100] == 0.0
    assert all(a <= b for a, b in zip(tri[:20], tri[1:21])) and all(a >= b for a, b in zip(tri[20:], tri[21:]))
    model = create_model("fastnet_s")
    opt = make_optimizer(model, TrainConfig(bias_lr_scale=16.0, weight_decay=1e-3))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0 and no_decay["lr_scale"] == 16.0
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    assert frozen and not frozen & {id(p) for g in opt.param_groups for p in g["params"]}


def test_alternating_flips_show_every_face_both_ways_in_two_epochs():
    base = alternate_flips(1000, seed=3)
    assert torch.equal(base, alternate_flips(1000, seed=3)) and 400 < int(base.sum()) < 600
    x = torch.arange(48.0).repeat(4, 1, 48, 1)  # a horizontal ramp: a flip reverses it
    flip = torch.tensor([True, False, True, False])
    off = AugmentConfig(rotate=0, shift=0, scale=0, erase=0, flip=0.5)
    out = augment(x, off, torch.Generator().manual_seed(0), flip)
    assert all((out[i, 0, 0, 0] > out[i, 0, 0, -1]) == bool(flip[i]) for i in range(4))


def test_progressive_sizes_split_the_epochs():
    cfg = TrainConfig(epochs=6, progressive="32,40,48")
    assert [cfg.train_size(e) for e in range(6)] == [32, 32, 40, 40, 48, 48]
    assert TrainConfig(epochs=3).train_size(2) == 0
    for bad in ("32,x", "8,48", "32,40,48,48"):
        with pytest.raises(BadInputError, match="progressive"):
            TrainConfig(epochs=3, progressive=bad).validate()


def test_progressive_run_records_sizes_time_and_speed(tmp_path, sets):
    out = tmp_path / "run"
    summary = run(out, sets, epochs=2, progressive="32,48", augment=AugmentConfig(flip_mode="alternate"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["size"] for r in rows] == [32, 48]
    assert 0 < rows[0]["elapsed"] < rows[1]["elapsed"] and all(r["images_per_s"] > 0 for r in rows)
    assert summary["minutes"] == pytest.approx(rows[-1]["elapsed"] / 60, abs=0.01)
    assert not summary["target_reached"]


def test_stop_at_ends_the_run_once_the_target_is_met(tmp_path, sets):
    out = tmp_path / "stop"
    summary = run(out, sets, epochs=5, stop_at=0.01)  # any val accuracy above 1% meets it
    assert summary["epochs_run"] == 1 and summary["stopped_early"] and summary["target_reached"]
    # A train-accuracy condition the first epoch cannot meet keeps the run going.
    out2 = tmp_path / "stop-train"
    summary = run(out2, sets, epochs=2, stop_at=0.01, stop_at_train=1.0)
    assert summary["epochs_run"] == 2 and not summary["target_reached"]


def test_stop_at_out_of_range_is_refused():
    with pytest.raises(BadInputError, match="stop-at"):
        TrainConfig(stop_at=70).validate()


def test_speedrun_bench_trains_seeds_reports_and_reads_back(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"data: {TEST_FER}\ntrain_split: train\nval_split: test\nmodel: fastnet_s\nepochs: 2\n"
                   "batch_size: 8\nlr: 0.05\nprecision: fp32\ndevice: cpu\nschedule: triangle\n")
    out = tmp_path / "speed"
    cmd = [sys.executable, str(ROOT / "bench" / "speedrun.py"), "--config", str(cfg), "--seeds", "2",
           "--threads", "1", "--out", str(out), "--set", "progressive=32,48", "--set", "augment.rotate=5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summ = json.loads((out / "summary.json").read_text())
    assert [r["seed"] for r in summ["seeds"]] == [0, 1] and summ["sets"] == {"progressive": "32,48",
                                                                            "augment.rotate": 5}
    finals = [r["final_acc"] for r in summ["seeds"]]
    assert summ["summary"]["final_acc"]["mean"] == pytest.approx(sum(finals) / 2, abs=1e-4)
    assert summ["machine"]["threads"] == 1 and summ["machine"]["load_average"]
    saved = json.loads((out / "seed1" / "config.json").read_text())
    assert saved["seed"] == 1 and saved["progressive"] == "32,48" and saved["augment"]["rotate"] == 5
    assert (out / "curves.png").stat().st_size > 5000 and "| seed |" in (out / "report.md").read_text()
    # Run again: finished seeds are read back, not retrained.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert again.returncode == 0 and again.stderr.count("read back") == 2
    bad = subprocess.run(cmd[:-4] + ["--set", "nonsense"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode != 0 and "KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr
