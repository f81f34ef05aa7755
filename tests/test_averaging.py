"""SWA in the training loop: what is averaged, which weights are validated and saved, and resume."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from fervid.training import checkpoint as ckpt  # noqa: E402
from fervid.training.weight_averaging import BN_FACES, make_swa, refresh_bn  # noqa: E402
from fervid.data import load_faces  # noqa: E402
from fervid.training.engine import TrainConfig, predict_logits, to_input, train  # noqa: E402
from fervid.models import create_model  # noqa: E402

TEST_FER = Path(__file__).resolve().parents[1] / "tests" / "data" / "fer"
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sets():
    return load_faces(TEST_FER, "train", use_cache=False), load_faces(TEST_FER, "test", use_cache=False)


def run(out: Path, sets, resume: bool = False, on_epoch=None, **kw) -> dict:
    # A constant lr without warmup: epoch e of a short run is epoch e of a longer one.
    base = dict(data=str(TEST_FER), train_split="train", val_split="test", model="vgg_tiny", epochs=2,
                batch_size=8, lr=0.02, schedule="constant", warmup_epochs=0.0, seed=5, threads=1,
                device="cpu", precision="fp32", out=str(out))
    cfg = TrainConfig(out=str(out)) if resume else TrainConfig(**{**base, **kw})
    return train(cfg, resume=resume, progress=False, on_epoch=on_epoch, train_set=sets[0], val_set=sets[1])


def module_part(sd: dict) -> dict:
    return {k[len("module."):]: v for k, v in sd.items() if k.startswith("module.")}


def test_swa_is_the_mean_of_each_epochs_weights_and_is_what_gets_validated(tmp_path, sets):
    run(tmp_path / "one", sets, epochs=1)
    run(tmp_path / "two", sets, epochs=2)
    run(tmp_path / "swa", sets, epochs=3, swa_start=2)
    w1 = ckpt.load_training_state(tmp_path / "one" / "last.pt")["model"]
    w2 = ckpt.load_training_state(tmp_path / "two" / "last.pt")["model"]
    st = ckpt.load_training_state(tmp_path / "swa" / "last.pt")
    w3, swa = st["model"], module_part(st["swa"])
    assert int(st["swa"]["n_averaged"]) == 2  # epochs 2 and 3
    bn_stats = [k for k in w3 if k.endswith(("running_mean", "running_var"))]
    weights = [k for k, v in w3.items() if torch.is_floating_point(v) and k not in bn_stats]
    assert bn_stats and weights
    for k in weights:
        torch.testing.assert_close(swa[k], (w2[k] + w3[k]) / 2)
    # BatchNorm statistics are measured for the averaged weights, not averaged or copied.
    assert all(not torch.allclose(swa[k], (w2[k] + w3[k]) / 2) and not torch.equal(swa[k], w3[k])
               for k in bn_stats if k.endswith("running_var"))
    # The logged accuracy of the last epoch is the SWA model's.
    model = create_model("vgg_tiny", num_classes=len(sets[0].classes))
    model.load_state_dict(swa)
    acc = float((predict_logits(model, sets[1].images).argmax(1) == torch.from_numpy(sets[1].labels)).float().mean())
    rows = [json.loads(x) for x in (tmp_path / "swa" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_acc"] == pytest.approx(acc, abs=1e-4)
    # The best file holds the weights validated at its epoch: the raw ones before SWA starts,
    # the mean of the epochs so far after (at epoch 2, the mean of one epoch: w2 itself).
    _, meta = ckpt.load_model(tmp_path / "swa" / "best.safetensors")
    expected = {1: w1, 2: w2, 3: {k: (w2[k] + w3[k]) / 2 for k in weights}}[meta["trained"]["epoch"]]
    best = load_file(tmp_path / "swa" / "best.safetensors")
    for k in weights:
        torch.testing.assert_close(best[k].float(), expected[k].float())


class Interrupt(Exception):
    pass


def test_swa_run_resumes_to_identical_weights(tmp_path, sets):
    run(tmp_path / "straight", sets, epochs=3, swa_start=1, mixup=0.3)

    def stop_after_second(m):
        if m["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "cut", sets, epochs=3, swa_start=1, mixup=0.3, on_epoch=stop_after_second)
    run(tmp_path / "cut", sets, resume=True)
    a = ckpt.load_training_state(tmp_path / "straight" / "last.pt")
    b = ckpt.load_training_state(tmp_path / "cut" / "last.pt")
    for part in ("model", "swa"):
        assert a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    best_a, best_b = load_file(tmp_path / "straight" / "best.safetensors"), load_file(tmp_path / "cut" / "best.safetensors")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_refresh_bn_measures_statistics_of_training_faces(sets):
    torch.manual_seed(0)
    swa = make_swa(create_model("vgg_tiny", num_classes=7))
    images = torch.from_numpy(sets[0].images)
    refresh_bn(swa, images, torch.Generator().manual_seed(0), to_input, torch.device("cpu"), None)
    first_bn = next(m for m in swa.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # The faces go in unaugmented, so the first BatchNorm's mean is that of the first conv's
    # outputs over all of them (fewer than BN_FACES here), whatever order they came in.
    assert len(images) < BN_FACES
    conv = next(m for m in swa.module.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        expected = conv(to_input(images, torch.device("cpu"))).mean(dim=(0, 2, 3))
    torch.testing.assert_close(first_bn.running_mean, expected, rtol=1e-4, atol=1e-5)
