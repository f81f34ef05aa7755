"""``fervid predict`` end to end: annotated images, the table, bad inputs in a batch, flags."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import pytest

from fervid.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "fervid" / "assets" / "sample.jpg"


@pytest.fixture()
def photos(tmp_path, paste, fer_faces):
    """A folder with a three-face frame, a one-face photo, a no-face image and, in a subfolder,
    a FER crop; plus bad files beside it (not picked up by the folder walk unless named)."""
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    frame, _ = paste([fer_faces[0][i] for i in (0, 13, 27)], [160, 140, 120], canvas=(400, 600))
    cv2.imwrite(str(d / "group.png"), frame)
    cv2.imwrite(str(d / "astronaut.jpg"), cv2.imread(str(SAMPLE)))
    empty, _ = paste([], [], canvas=(240, 320))
    cv2.imwrite(str(d / "sub" / "wall.jpg"), empty)
    cv2.imwrite(str(d / "sub" / "fer.jpg"), fer_faces[0][3])
    (d / "readme.txt").write_text("not an image, skipped by the folder walk\n")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "trunc.jpg").write_bytes(SAMPLE.read_bytes()[:20000])
    (bad / "text.jpg").write_text("this is text, not a JPEG\n")
    return d, bad


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_batch_with_good_and_bad_files(photos, tiny_onnx, tmp_path, capsys):
    d, bad = photos
    out = tmp_path / "out"
    args = ["predict", str(d), str(bad / "zero.jpg"), str(bad / "trunc.jpg"), str(bad / "text.jpg"),
            str(tmp_path / "missing.jpg"), "--model", str(tiny_onnx), "--out-dir", str(out)]
    assert main(args) == 2
    cap = capsys.readouterr()
    errors = cap.err.strip().splitlines()
    assert len(errors) == 4  # one line per bad input, nothing else on stderr
    for name in ("zero.jpg", "trunc.jpg", "text.jpg", "missing.jpg"):
        assert sum(name in line for line in errors) == 1
    assert all(line.startswith("fervid predict: error: ") and "Traceback" not in line for line in errors)
    assert "empty" in cap.err and "truncated" in cap.err

    rows = _rows(out / "predictions.csv")
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(Path(r["file"]).name, []).append(r)
    assert len(by_file["group.png"]) == 3 and [r["face"] for r in by_file["group.png"]] == ["0", "1", "2"]
    assert len(by_file["astronaut.jpg"]) == 1 and by_file["astronaut.jpg"][0]["status"] == "ok"
    assert by_file["wall.jpg"] == [{**by_file["wall.jpg"][0], "status": "no_face", "face": ""}]
    assert by_file["fer.jpg"][0]["status"] == "ok"  # a tight 48x48 crop is still found
    for name in ("zero.jpg", "trunc.jpg", "text.jpg", "missing.jpg"):
        assert by_file[name][0]["status"] == "error" and name in by_file[name][0]["error"]
    assert "readme.txt" not in by_file
    classes = [c[2:] for c in rows[0] if c.startswith("p_")]
    assert len(classes) == 7
    for r in rows:
        if r["status"] == "ok":
            probs = {c: float(r[f"p_{c}"]) for c in classes}
            assert abs(sum(probs.values()) - 1) < 1e-3 and r["emotion"] == max(probs, key=probs.get)
            assert float(r["confidence"]) == pytest.approx(probs[r["emotion"]], abs=1e-4)
            assert int(r["w"]) > 0 and len(r["landmarks"].split()) == 10

    for rel in ("photos/group.png", "photos/astronaut.jpg", "photos/sub/wall.jpg", "photos/sub/fer.jpg"):
        img = cv2.imread(str(out / rel))
        assert img is not None, rel
    assert cv2.imread(str(out / "photos/group.png")).shape == (400, 600, 3)
    summary = cap.out.strip().splitlines()[-1]
    assert "5 faces in 4 images" in summary and "1 without a face" in summary and "4 failed" in summary
    assert any(line.startswith(str(d / "group.png")) and "3 faces" in line for line in cap.out.splitlines())


def test_all_good_exits_zero_and_jsonl_table(photos, tiny_onnx, tmp_path, capsys):
    d, _ = photos
    out = tmp_path / "o"
    assert main(["predict", str(d / "group.png"), str(d / "sub" / "*.jpg"), "--model", str(tiny_onnx),
                 "-o", str(out), "--format", "jsonl", "--quiet", "--no-annotate"]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1  # --quiet: only the summary
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows].count("ok") == 4 and [r["status"] for r in rows].count("no_face") == 1
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(len(r["landmarks"]) == 5 and len(r["box"]) == 4 and len(r["probabilities"]) == 7 for r in ok)
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl"]


def test_no_detect_treats_each_image_as_one_face(photos, tiny_onnx, tmp_path):
    d, _ = photos
    out = tmp_path / "nd"
    assert main(["predict", str(d / "sub"), "--no-detect", "--model", str(tiny_onnx), "-o", str(out), "-q"]) == 0
    rows = _rows(out / "predictions.csv")
    assert len(rows) == 2 and all(r["status"] == "ok" and r["face"] == "0" and r["landmarks"] == "" for r in rows)
    fer = next(r for r in rows if r["file"].endswith("fer.jpg"))
    assert (fer["x"], fer["y"], fer["w"], fer["h"]) == ("0", "0", "48", "48")


def test_class_subset_columns_sum_to_one(photos, tiny_onnx, tmp_path):
    d, _ = photos
    out = tmp_path / "cs"
    assert main(["predict", str(d / "group.png"), "--classes", "happy,sad,neutral", "--model", str(tiny_onnx),
                 "-o", str(out), "-q"]) == 0
    rows = _rows(out / "predictions.csv")
    assert [c for c in rows[0] if c.startswith("p_")] == ["p_happy", "p_sad", "p_neutral"]
    for r in rows:
        assert abs(sum(float(r[c]) for c in ("p_happy", "p_sad", "p_neutral")) - 1) < 1e-3
        assert r["emotion"] in ("happy", "sad", "neutral")


def test_outputs_are_not_overwritten_silently(photos, tiny_onnx, tmp_path, capsys):
    d, _ = photos
    out = tmp_path / "ow"
    args = ["predict", str(d / "astronaut.jpg"), "--model", str(tiny_onnx), "-o", str(out), "-q"]
    assert main(args) == 0
    capsys.readouterr()
    table = out / "predictions.csv"
    before = table.read_bytes()
    table.write_text("mine\n")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--overwrite" in err
    assert table.read_text() == "mine\n"
    assert main(args + ["--overwrite"]) == 0 and table.read_bytes() == before


@pytest.mark.parametrize("kind", ["yunet", "text"])
def test_a_model_that_is_not_a_fervid_model(kind, photos, tmp_path, capsys):
    d, _ = photos
    model = ROOT / "fervid" / "assets" / "yunet.onnx" if kind == "yunet" else tmp_path / "model.onnx"
    if kind == "text":
        model.write_text("not a model")
    assert main(["predict", str(d), "--model", str(model), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(model) in err[0] and "not a fervid model" in err[0]
    assert not (tmp_path / "x").exists()


def test_help_mentions_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    for flag in ("--out-dir", "--format", "--min-confidence", "--min-face", "--model", "--classes",
                 "--no-detect", "--overwrite", "--no-annotate", "--quiet"):
        assert flag in text
