"""Class priors (``--prior``) and calibration figures (ECE, reliability diagram)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fervid.calibrate import (FER2013_TRAIN_COUNTS, apply_prior, expected_calibration_error, reliability_bins,
                              resolve_prior, training_prior)
from fervid.cli import main
from fervid.errors import BadInputError

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
META = {"classes": CLASSES, "trained": {"data": "fer2013"}}


# --- ECE on cases with a known answer --------------------------------------------------------

def test_ece_of_a_constant_overconfident_model():
    """Always 80% sure, right 60% of the time: every face in one bin, ECE = |0.6 - 0.8| = 0.2."""
    conf = np.full(100, 0.8)
    correct = np.arange(100) < 60
    assert expected_calibration_error(conf, correct) == pytest.approx(0.2)


def test_ece_weights_bins_by_count():
    """Bin 0.95 (30 faces, all right: gap 0.05) and bin 0.5 (70 faces, 20 right: gap 0.5 - 2/7)."""
    conf = np.r_[np.full(30, 0.95), np.full(70, 0.5)]
    correct = np.r_[np.ones(30, bool), np.arange(70) < 20]
    expected = 0.3 * 0.05 + 0.7 * abs(20 / 70 - 0.5)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)
    bins = reliability_bins(conf, correct)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 100
    full = [b for b in bins if b["count"]]
    assert [b["count"] for b in full] == [70, 30]
    assert full[1]["accuracy"] == 1.0 and full[1]["confidence"] == pytest.approx(0.95)


def test_ece_is_near_zero_for_a_calibrated_sampler():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 200_000)
    correct = rng.uniform(size=conf.size) < conf  # right exactly as often as it says
    assert expected_calibration_error(conf, correct) < 0.005


def test_bin_edges_are_right_closed():
    """1.0 falls in the last bin, 1/15 (an edge) in the first, 0 in the first too."""
    bins = reliability_bins(np.array([1.0, 1 / 15, 0.0]), np.array([True, False, True]))
    assert bins[-1]["count"] == 1 and bins[0]["count"] == 2


# --- priors -------------------------------------------------------------------------------------

def test_fer2013_prior_leaves_probabilities_alone():
    assert resolve_prior("fer2013", CLASSES, META) is None and resolve_prior(None, CLASSES, META) is None
    p = np.array([[0.1, 0.2, 0.7]])
    assert apply_prior(p, None) is p


def test_uniform_prior_divides_by_training_frequencies():
    m = resolve_prior("uniform", CLASSES, META)
    counts = np.array([FER2013_TRAIN_COUNTS[c] for c in CLASSES], float)
    probs = np.full((1, 7), 1 / 7)  # the net cannot tell: under a uniform prior the rarest class wins
    out = apply_prior(probs, m)
    assert out.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(out[0], (1 / counts) / (1 / counts).sum())
    assert CLASSES[int(out.argmax())] == "disgust"


def test_a_prior_equal_to_the_training_one_changes_nothing(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({c: 2 * n for c, n in FER2013_TRAIN_COUNTS.items()}))
    np.testing.assert_allclose(resolve_prior(str(f), CLASSES, META), np.ones(7))


def test_prior_from_csv_with_and_without_header(tmp_path):
    rows = "\n".join(f"{c},{1 + i}" for i, c in enumerate(CLASSES))
    for text in (rows, "class,weight\n" + rows):
        f = tmp_path / "p.csv"
        f.write_text(text + "\n")
        m = resolve_prior(str(f), CLASSES, META)
        target = np.arange(1, 8) / 28
        np.testing.assert_allclose(m, target / training_prior(META, CLASSES))


def test_model_class_counts_in_metadata_win():
    meta = {"trained": {"class_counts": {"happy": 1, "sad": 3}}}
    np.testing.assert_allclose(training_prior(meta, ["happy", "sad"]), [0.25, 0.75])


@pytest.mark.parametrize("content, words", [
    ('{"happy": 1}', "no weight for angry"),
    ('{"angry":1,"disgust":1,"fear":1,"happy":1,"sad":1,"surprise":1,"neutral":1,"contempt":1}', "contempt"),
    ('{"angry": -1}', "must be a number >= 0"),
    ('{"angry": "x"}', "must be a number >= 0"),
    ("[1, 2]", "must be an object"),
    ("{broken", "not valid JSON"),
    ("angry,1,2\n", "rows must be class,weight"),
])
def test_bad_prior_files_are_one_line_errors(tmp_path, content, words):
    f = tmp_path / ("p.json" if content.lstrip()[:1] in "{[" else "p.csv")
    f.write_text(content)
    with pytest.raises(BadInputError, match=words) as e:
        resolve_prior(str(f), CLASSES, META)
    assert "\n" not in str(e.value)


def test_all_zero_weights_and_unknown_names(tmp_path):
    f = tmp_path / "z.json"
    f.write_text(json.dumps({c: 0 for c in CLASSES}))
    with pytest.raises(BadInputError, match="all zero"):
        resolve_prior(str(f), CLASSES, META)
    with pytest.raises(BadInputError, match="not fer2013 or uniform and no such file"):
        resolve_prior("balanced", CLASSES, META)
    with pytest.raises(BadInputError, match="training frequency of class"):
        resolve_prior("uniform", ["happy", "contempt"], {})


# --- the same prior through the library, the CLI and evaluate --------------------------------

def test_recognizer_prior_is_the_shipped_probabilities_reweighted(tiny_onnx, fer_faces):
    from fervid import Recognizer
    from fervid.preprocess import equalize

    crops = np.stack([equalize(f) for f in fer_faces[0][:6]])
    plain = Recognizer(tiny_onnx, detect=False, threads=1)
    uniform = Recognizer(tiny_onnx, detect=False, threads=1, prior="uniform")
    m = resolve_prior("uniform", plain.model_classes, plain.meta)
    np.testing.assert_allclose(uniform.probabilities(crops), apply_prior(plain.probabilities(crops), m), atol=1e-9)
    assert plain.prior == "fer2013" and "uniform" in repr(uniform)
    # a class subset renormalises the re-weighted probabilities over the kept classes
    sub = Recognizer(tiny_onnx, detect=False, threads=1, prior="uniform", classes="happy,sad")
    full = uniform.probabilities(crops)[:, [uniform.classes.index("happy"), uniform.classes.index("sad")]]
    np.testing.assert_allclose(sub.probabilities(crops), full / full.sum(1, keepdims=True), atol=1e-9)


def test_predict_cli_bad_prior_is_one_line(tiny_onnx, tmp_path, capsys):
    face = next((Path(__file__).parent / "data" / "fer" / "test").glob("*/*.jpg"))
    rc = main(["predict", str(face), "--model", str(tiny_onnx), "--no-detect", "-o", str(tmp_path / "o"),
               "--prior", str(tmp_path / "missing.json")])
    err = capsys.readouterr().err
    assert rc != 0 and "missing.json" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_predict_cli_uniform_prior(tiny_onnx, tmp_path, capsys):
    import csv

    face = next((Path(__file__).parent / "data" / "fer" / "test").glob("*/*.jpg"))
    tables = {}
    for prior in ("fer2013", "uniform"):
        out = tmp_path / prior
        assert main(["predict", str(face), "--model", str(tiny_onnx), "--no-detect", "-o", str(out), "-q",
                     "--no-annotate", "--prior", prior]) == 0
        with open(out / "predictions.csv", newline="") as fh:
            tables[prior] = next(csv.DictReader(fh))
    capsys.readouterr()
    cols = [f"p_{c}" for c in CLASSES]
    p = np.array([[float(tables["fer2013"][c]) for c in cols]])
    m = resolve_prior("uniform", CLASSES, META)
    np.testing.assert_allclose([float(tables["uniform"][c]) for c in cols], apply_prior(p, m)[0], atol=2e-5)


def test_evaluate_report_has_ece_and_reliability_png(tmp_path):
    """score() turns log-probabilities into the report's ECE; write_report draws the diagram."""
    import cv2

    from fervid.analysis.evaluate import EvalReport, score, write_report

    y = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    p1 = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.55, 0.95, 0.4])  # probability of class 1
    logp = np.log(np.c_[1 - p1, p1])
    pred = logp.argmax(1)
    conf = np.exp(logp.max(1))
    s = score(y, pred, ["happy", "sad"], logp)
    assert s.ece == pytest.approx(expected_calibration_error(conf, pred == y))
    report = EvalReport(classes=["happy", "sad"], model_classes=["happy", "sad"], counts={"happy": 4, "sad": 4},
                        plain=s, model="m.onnx", arch="vgg_tiny", data="synthetic", prior="uniform")
    paths = write_report(report, tmp_path / "eval")
    saved = json.loads(paths["report"].read_text())
    assert saved["ece"] == pytest.approx(s.ece) and saved["prior"] == "uniform"
    assert len(saved["plain"]["reliability"]) == 15
    img = cv2.imread(str(paths["reliability"]))
    assert img is not None and img.shape[0] > 200
