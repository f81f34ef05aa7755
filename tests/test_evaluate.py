"""``fervid evaluate`` and :func:`fervid.analysis.evaluate.evaluate` on the committed test faces.

A vgg_tiny trained for two short epochs on the 28 train faces is scored on the 42 test
faces; every figure is checked against a direct computation from the model's logits or
against scikit-learn, so the tests hold whatever the (weak) model predicts.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

import fervid
from fervid.training.checkpoint import load_model, make_meta, save_model
from fervid.cli import main
from fervid.data import FER_CLASSES, ClassSet, load_faces
from fervid.errors import BadInputError
from fervid.analysis.evaluate import EvalReport, evaluate, load_eval_faces, scored_class_set
from fervid.models import create_model
from fervid.analysis.plots import CONFUSION_SIZE

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT / "tests" / "data" / "fer"
ACC_LINE = "accuracy: "


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real training run: two epochs of vgg_tiny on the train faces (batch 4 so it learns a little)."""
    from fervid.training.augment import AugmentConfig
    from fervid.training.engine import TrainConfig, train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "vgg_tiny"
    train_set = load_faces(FER, "train", use_cache=False)
    val_set = load_faces(FER, "test", use_cache=False)
    cfg = TrainConfig(model="vgg_tiny", epochs=2, batch_size=4, lr=0.01, warmup_epochs=0, label_smoothing=0.0,
                      threads=1, out=str(out), augment=AugmentConfig(rotate=0, shift=0, scale=0, erase=0))
    with contextlib.redirect_stdout(io.StringIO()):
        train(cfg, progress=False, train_set=train_set, val_set=val_set)
    assert (out / "best.safetensors").exists()
    return out


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _last_accuracy(stdout: str) -> float:
    last = stdout.rstrip("\n").splitlines()[-1]
    assert last.startswith(ACC_LINE), last
    return float(last[len(ACC_LINE):].split()[0])


def _direct(run_dir: Path, faces, tta: bool = False, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """Predictions computed here, not by fervid.analysis.evaluate: argmax over the chosen classes' logits."""
    from fervid.training.engine import predict_logits

    model, meta = load_model(run_dir)
    logits = predict_logits(model, faces.images, tta=tta).numpy()
    cols = [meta["classes"].index(c) for c in (classes or faces.classes)]
    return logits[:, cols].argmax(1), logits


def test_library_figures_match_direct_computation(run_dir):
    model, meta = load_model(run_dir)
    faces = load_eval_faces(FER, "test", meta)
    assert faces.classes == tuple(meta["classes"]) and len(faces) == 42
    report = evaluate(model, meta, faces)
    pred, _ = _direct(run_dir, faces)
    assert report.accuracy == pytest.approx(float((pred == faces.labels).mean()))
    assert report.macro_f1 == pytest.approx(f1_score(faces.labels, pred, average="macro"))
    np.testing.assert_array_equal(report.predicted, pred)
    assert report.predicted_names() == [meta["classes"][i] for i in pred]
    cm = np.asarray(report.plain.confusion)
    assert cm.shape == (7, 7) and cm.sum() == 42
    np.testing.assert_array_equal(cm.sum(1), [6] * 7)  # six test faces per class
    assert np.trace(cm) == (pred == faces.labels).sum()
    np.testing.assert_allclose(report.plain.confusion_normalized().sum(1), 1.0)
    for i, c in enumerate(faces.classes):
        pc = report.plain.per_class[c]
        assert pc["support"] == 6
        tp, predicted = int(cm[i, i]), int(cm[:, i].sum())
        assert pc["recall"] == pytest.approx(tp / 6)
        assert pc["precision"] == pytest.approx(tp / predicted if predicted else 0.0)
    assert report.tta is None and np.isfinite(report.plain.loss) and report.plain.loss > 0
    assert report.n == 42 and report.counts == {c: 6 for c in FER_CLASSES}


def test_tta_is_reported_beside_plain(run_dir):
    model, meta = load_model(run_dir)
    faces = load_eval_faces(FER, "test", meta)
    plain = evaluate(model, meta, faces)
    both = evaluate(model, meta, faces, tta=True)
    assert both.tta is not None
    assert both.accuracy == pytest.approx(plain.accuracy)  # the plain figure is not replaced
    pred_tta, _ = _direct(run_dir, faces, tta=True)
    assert both.tta.accuracy == pytest.approx(float((pred_tta == faces.labels).mean()))
    d = both.to_dict()
    assert d["tta"]["accuracy"] == pytest.approx(both.tta.accuracy)
    assert d["accuracy"] == pytest.approx(plain.accuracy)


def test_cli_folder_report_png_json_and_last_line(run_dir, tmp_path, capsys):
    out = tmp_path / "eval"
    rc, stdout, err = _cli(["evaluate", "--model", str(run_dir), "--data", str(FER), "--split", "test",
                            "--out-dir", str(out), "--threads", "1"], capsys)
    assert rc == 0, err
    model, meta = load_model(run_dir)
    faces = load_eval_faces(FER, "test", meta)
    pred, _ = _direct(run_dir, faces)
    acc = _last_accuracy(stdout)
    assert acc == pytest.approx(float((pred == faces.labels).mean()), abs=5e-5)
    for c in FER_CLASSES:  # the per-class table names every class
        assert any(line.startswith(c + " ") for line in stdout.splitlines()), c
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == list(meta["classes"])
    assert set(report["plain"]["per_class"]) == set(FER_CLASSES)
    assert report["n"] == 42 and report["accuracy"] == pytest.approx(acc, abs=5e-5)
    assert report["tta"] is None
    np.testing.assert_allclose(np.asarray(report["plain"]["confusion_normalized"]).sum(1), 1.0, atol=1e-4)
    img = cv2.imread(str(out / "confusion.png"))
    assert img is not None and img.shape == (CONFUSION_SIZE[1], CONFUSION_SIZE[0], 3)
    assert img.std() > 10  # a drawn matrix, not a blank canvas
    assert not (out / "confusion-tta.png").exists()

    # a second run refuses to replace the report unless told
    rc, stdout, err = _cli(["evaluate", "--model", str(run_dir), "--data", str(FER), "--out-dir", str(out)], capsys)
    assert rc == 2 and "already exists" in err and len(err.strip().splitlines()) == 1
    rc, stdout, err = _cli(["evaluate", "--model", str(run_dir), "--data", str(FER), "--out-dir", str(out),
                            "--overwrite", "--tta"], capsys)
    assert rc == 0, err
    last = stdout.rstrip().splitlines()[-1]
    assert _last_accuracy(stdout) == pytest.approx(acc) and "tta" not in last
    assert any(line.startswith("tta: accuracy") for line in stdout.splitlines())
    report = json.loads((out / "report.json").read_text())
    assert report["tta"] is not None and set(report["tta"]["per_class"]) == set(FER_CLASSES)
    assert cv2.imread(str(out / "confusion-tta.png")) is not None


def test_cli_default_out_dir_is_beside_model(run_dir, capsys):
    rc, stdout, err = _cli(["evaluate", "--model", str(run_dir / "best.safetensors"), "--data", str(FER),
                            "--split", "PublicTest", "--overwrite"], capsys)
    assert rc == 0, err
    assert (run_dir / "eval-best-safetensors-PublicTest" / "report.json").exists()
    assert (run_dir / "eval-best-safetensors-PublicTest" / "confusion.png").exists()
    assert (run_dir / "eval-best-safetensors-PublicTest" / "reliability.png").exists()


def _write_csv(path: Path) -> dict[str, int]:
    """fer2013.csv from the committed faces: train faces as Training, test faces alternately
    PublicTest and PrivateTest; returns the number of rows per Usage."""
    counts = {"Training": 0, "PublicTest": 0, "PrivateTest": 0}
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["emotion", "pixels", "Usage"])
        for group in ("train", "test"):
            for k, img_path in enumerate(sorted((FER / group).glob("*/*.jpg"))):
                img = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)
                usage = "Training" if group == "train" else ("PublicTest", "PrivateTest")[k % 2]
                counts[usage] += 1
                w.writerow([FER_CLASSES.index(img_path.parent.name), " ".join(map(str, img.ravel())), usage])
    return counts


def test_cli_csv_private_test(run_dir, tmp_path, capsys):
    csv_path = tmp_path / "fer2013.csv"
    counts = _write_csv(csv_path)
    rc, stdout, err = _cli(["evaluate", "--model", str(run_dir), "--data", str(csv_path), "--split", "PrivateTest",
                            "--out-dir", str(tmp_path / "ev")], capsys)
    assert rc == 0, err
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["n"] == counts["PrivateTest"] == 21
    _, meta = load_model(run_dir)
    faces = load_faces(csv_path, "PrivateTest", ClassSet.parse(",".join(meta["classes"])), use_cache=False)
    pred, _ = _direct(run_dir, faces)
    assert _last_accuracy(stdout) == pytest.approx(float((pred == faces.labels).mean()), abs=5e-5)
    assert sum(report["counts"].values()) == 21


def test_cli_class_subset_drops_faces_and_renormalises(run_dir, tmp_path, capsys):
    out = tmp_path / "sub"
    rc, stdout, err = _cli(["evaluate", "--model", str(run_dir), "--data", str(FER), "--classes", "no-disgust-fear",
                            "--out-dir", str(out)], capsys)
    assert rc == 0, err
    report = json.loads((out / "report.json").read_text())
    kept = [c for c in FER_CLASSES if c not in ("disgust", "fear")]
    assert report["classes"] == kept and report["model_classes"] == list(FER_CLASSES)
    assert report["n"] == 30 and set(report["plain"]["per_class"]) == set(kept)
    assert np.asarray(report["plain"]["confusion"]).shape == (5, 5)
    faces = load_faces(FER, "test", ClassSet.parse("no-disgust-fear"), use_cache=False)
    pred, _ = _direct(run_dir, faces, classes=kept)
    assert _last_accuracy(stdout) == pytest.approx(float((pred == faces.labels).mean()), abs=5e-5)
    assert report["plain"]["macro_f1"] == pytest.approx(f1_score(faces.labels, pred, average="macro"))


def _untrained(path: Path, classes: tuple[str, ...]) -> Path:
    torch.manual_seed(0)
    model = create_model("vgg_tiny", num_classes=len(classes))
    save_model(path, model, make_meta("vgg_tiny", classes))
    return path


def test_model_class_set_relabels_data(tmp_path):
    """A 3-class model is scored on its 3 classes' faces only, in its own class order."""
    classes = ("sad", "happy", "neutral")
    model, meta = load_model(_untrained(tmp_path / "m3.safetensors", classes))
    faces = load_eval_faces(FER, "test", meta)
    assert faces.classes == classes and len(faces) == 18
    report = evaluate(model, meta, faces)
    assert report.classes == list(classes) and report.n == 18
    assert list(report.plain.per_class) == list(classes)
    # a merge folds a class the model lacks into one it has
    merged = scored_class_set(meta, merge="surprise:happy")
    faces = load_eval_faces(FER, "test", meta, merge="surprise:happy")
    assert merged.classes == classes and len(faces) == 24 and faces.counts["happy"] == 12
    with pytest.raises(BadInputError, match="does not predict"):
        scored_class_set(meta, classes="happy,angry")
    from fervid.data import FaceSet

    seven = load_faces(FER, "test", use_cache=False)
    with pytest.raises(BadInputError, match="does not predict"):
        evaluate(model, meta, FaceSet(seven.images, seven.labels, seven.classes))


@pytest.mark.parametrize("make", ["garbage", "missing", "foreign"])
def test_bad_model_file_is_one_line_exit_2(tmp_path, capsys, make):
    path = tmp_path / "model.safetensors"
    if make == "garbage":
        path.write_bytes(b"\x00not a model at all" * 10)
    elif make == "foreign":  # a real safetensors file without fervid metadata
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(3)}, str(path))
    rc, stdout, err = _cli(["evaluate", "--model", str(path), "--data", str(FER)], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervid evaluate: error: ") and str(path) in lines[0]
    assert "Traceback" not in err and not list(tmp_path.glob("eval-*"))


def test_bad_data_and_classes_are_exit_2(run_dir, tmp_path, capsys):
    for extra in (["--data", str(tmp_path / "nowhere.csv")],
                  ["--data", str(FER), "--classes", "happy,joy"],
                  ["--data", str(FER), "--split", "Validation"],
                  ["--data", str(FER), "--batch-size", "0"],
                  ["--data", str(FER), "--merge", "happy:sad"]):
        rc, _, err = _cli(["evaluate", "--model", str(run_dir), "--out-dir", str(tmp_path / "x"), *extra], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "error:" in err, extra


def test_report_to_dict_is_plain_json(run_dir):
    model, meta = load_model(run_dir)
    report = evaluate(model, meta, load_eval_faces(FER, "test", meta, classes="happy,sad"), tta=True)
    assert isinstance(report, EvalReport) and report.classes == ["happy", "sad"]
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["classes"] == ["happy", "sad"] and d["n"] == 12
    assert d["plain"]["confusion"] == report.plain.confusion


def test_onnx_export_scores_like_pytorch(run_dir, tmp_path, capsys):
    export = pytest.importorskip("fervid.export")
    pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "tiny.onnx"
    export.export_model(run_dir, onnx_path)
    rc, stdout, err = _cli(["evaluate", "--model", str(onnx_path), "--data", str(FER), "--tta",
                            "--out-dir", str(tmp_path / "ev")], capsys)
    assert rc == 0, err
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    model, meta = load_model(run_dir)
    faces = load_eval_faces(FER, "test", meta)
    torch_report = evaluate(model, meta, faces, tta=True)
    assert report["classes"] == list(meta["classes"]) and report["n"] == 42
    # same weights, two runtimes: predictions agree (a near-tie may flip at most one face)
    assert abs(report["accuracy"] - torch_report.accuracy) <= 1 / 42 + 1e-9
    assert abs(report["tta"]["accuracy"] - torch_report.tta.accuracy) <= 1 / 42 + 1e-9
    assert report["plain"]["loss"] == pytest.approx(torch_report.plain.loss, abs=1e-3)
    assert report["tta"]["loss"] == pytest.approx(torch_report.tta.loss, abs=1e-3)
    assert _last_accuracy(stdout) == pytest.approx(report["accuracy"], abs=5e-5)


def test_default_out_dir_never_inside_the_package():
    """Scoring the bundled model (or an ensemble led by it) must not write into the install."""
    from fervid.cli.evaluate import default_out_dir

    shipped = Path(fervid.__file__).resolve().parent / "assets" / "model.safetensors"
    assert default_out_dir(shipped, "PublicTest") == Path("fervid-eval") / "eval-model-safetensors-PublicTest"
    assert default_out_dir(shipped, "PublicTest", ensemble=True) == Path("fervid-eval") / "eval-ensemble-PublicTest"


def test_default_out_dir_is_named_after_the_model(tmp_path):
    """Two models in one folder get two report folders: the second is no longer refused."""
    from fervid.cli.evaluate import default_out_dir

    dirs = {default_out_dir(tmp_path / name, "PublicTest") for name in ("a.onnx", "b.onnx", "a.safetensors")}
    assert len(dirs) == 3 and all(d.parent == tmp_path for d in dirs)


def test_evaluate_takes_an_exports_json_sidecar():
    """``--model model.json`` scores its ``model.onnx``, as ``fervid predict`` reads it."""
    from fervid.analysis.predictors import OnnxPredictor, load_model_any

    shipped = Path(fervid.__file__).resolve().parent / "assets"
    model, meta, path = load_model_any(shipped / "model.json")
    assert isinstance(model, OnnxPredictor) and path == shipped / "model.onnx" and meta["arch"]
