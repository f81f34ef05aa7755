"""``fervid video`` and ``Recognizer.predict_video`` end to end on short generated clips.

Clips are made here with cv2.VideoWriter: FER test faces upscaled and pasted at moving
positions on a smooth background, so the real detector, tracker, model, drawing and
encoder all run. The tiny session model is barely trained, so tests check structure
(frames, rows, ids, files), never which emotion wins.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import fervid.recognition.video as video_mod  # sets the FFmpeg log level before any capture is opened
from fervid.cli import main
from fervid.recognition.timeline import TIMELINE_SIZE

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "fer" / "test"
N_FRAMES = 30
SIZE = (640, 480)
FPS = 15.0


def face_image(emotion: str) -> np.ndarray:
    return cv2.imread(str(sorted((FACES / emotion).glob("*.jpg"))[0]), cv2.IMREAD_GRAYSCALE)


def make_clip(path: Path, n_faces: int = 2, frames: int = N_FRAMES, fourcc: str = "mp4v") -> list[list[tuple]]:
    """Write a clip with ``n_faces`` faces moving towards each other; returns their boxes per frame."""
    faces = [face_image("happy"), face_image("surprise")][:n_faces]
    w, h = SIZE
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.clip((90 + 60 * xx / w + 30 * yy / h)[..., None] + np.array([10.0, 0.0, -10.0]), 0, 255).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, SIZE)
    assert writer.isOpened()
    boxes = []
    s = 140
    for t in range(frames):
        frame = bg.copy()
        placed = []
        for i, face in enumerate(faces):
            x, y = (40 + 4 * t, 60 + 2 * t) if i == 0 else (460 - 4 * t, 280 - 2 * t)
            frame[y:y + s, x:x + s] = cv2.cvtColor(cv2.resize(face, (s, s), interpolation=cv2.INTER_CUBIC),
                                                   cv2.COLOR_GRAY2BGR)
            placed.append((x, y, s, s))
        writer.write(frame)
        boxes.append(placed)
    writer.release()
    return boxes


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    n, size = 0, (0, 0)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, size = n + 1, (frame.shape[1], frame.shape[0])
    cap.release()
    return n, size


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "two_faces.mp4"
    make_clip(path)
    return path


@pytest.fixture(scope="module")
def recognizer(tiny_onnx):
    from fervid.recognition.recognize import Recognizer

    return Recognizer(tiny_onnx, threads=1)


def test_predict_video_yields_every_frame_with_stable_ids(recognizer, clip):
    results = list(recognizer.predict_video(clip, smoothing=0.5))
    assert [r.index for r in results] == list(range(N_FRAMES))
    assert results[1].time == pytest.approx(1 / FPS, abs=1e-3)
    ids_left, ids_right = set(), set()
    for r in results:
        assert r.analysed and len(r.faces) == 2
        left, right = sorted(r.faces, key=lambda f: f.box[0])
        ids_left.add(left.track_id)
        ids_right.add(right.track_id)
        for f in r.faces:
            assert f.emotion in recognizer.classes
            assert sum(f.smoothed.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(ids_left) == 1 and len(ids_right) == 1 and ids_left != ids_right
    d = results[5].to_dict()
    json.dumps(d)  # plain JSON types only
    assert d["frame"] == 5 and {f["id"] for f in d["faces"]} == ids_left | ids_right


def test_predict_video_every_reuses_results_between_samples(recognizer, clip):
    results = list(recognizer.predict_video(clip, every=4))
    assert len(results) == N_FRAMES
    assert [r.index for r in results if r.analysed] == list(range(0, N_FRAMES, 4))
    assert results[5].faces is results[4].faces  # carried over, not recomputed


def test_cli_writes_video_csv_and_timelines(clip, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "out" / "annotated.mp4"
    rc = main(["video", str(clip), "-o", str(out), "--model", str(tiny_onnx), "--quiet", "--timings", "--threads", "1"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert f"{N_FRAMES} frames" in stdout and "2 tracks" in stdout and "frames/s" in stdout
    assert "decode" in stdout and "encode" in stdout
    n, size = count_frames(out)
    assert n == N_FRAMES and size == SIZE
    # the annotated video differs from the input where the boxes are drawn
    a, b = cv2.VideoCapture(str(clip)), cv2.VideoCapture(str(out))
    fa, fb = a.read()[1], b.read()[1]
    a.release(), b.release()
    assert np.abs(fa.astype(int) - fb.astype(int)).max() > 100

    rows = read_csv(out.with_suffix(".csv"))
    assert len(rows) == N_FRAMES * 2
    for c in ("frame", "time", "face_id", "x", "y", "w", "h", "smoothed_emotion", "p_happy", "p_neutral"):
        assert c in rows[0]
    assert {r["face_id"] for r in rows} == {"1", "2"}
    assert sorted({int(r["frame"]) for r in rows}) == list(range(N_FRAMES))
    probs = [sum(float(r[f"p_{c}"]) for c in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"))
             for r in rows]
    assert np.allclose(probs, 1.0, atol=1e-3)

    tl = out.parent / "annotated_timelines"
    pngs = sorted(tl.glob("*.png"))
    assert [p.name for p in pngs] == ["face_1.png", "face_2.png"]
    for p in pngs:
        img = cv2.imread(str(p))
        assert img is not None and (img.shape[1], img.shape[0]) == TIMELINE_SIZE
        assert img.std() > 10  # something was drawn
    assert not list(out.parent.glob(".*tmp*")), "temporary files left behind"


def test_cli_every_keeps_frame_count_and_samples_rows(clip, tiny_onnx, tmp_path):
    out = tmp_path / "every.mp4"
    assert main(["video", str(clip), "-o", str(out), "--model", str(tiny_onnx), "--every", "3",
                 "--no-timeline", "--quiet", "--threads", "1"]) == 0
    assert count_frames(out)[0] == N_FRAMES
    rows = read_csv(out.with_suffix(".csv"))
    assert len(rows) == (N_FRAMES // 3) * 2
    assert {int(r["frame"]) % 3 for r in rows} == {0}
    assert not (tmp_path / "every_timelines").exists()


def test_cli_no_video_writes_only_the_table(clip, tiny_onnx, tmp_path):
    table = tmp_path / "t.csv"
    assert main(["video", str(clip), "--no-video", "--csv", str(table), "--timeline-dir", str(tmp_path / "tl"),
                 "--model", str(tiny_onnx), "--quiet", "--every", "5", "--threads", "1"]) == 0
    assert len(read_csv(table)) == (N_FRAMES // 5) * 2
    assert not list(tmp_path.glob("*.mp4")) and len(list((tmp_path / "tl").glob("*.png"))) == 2


def test_cli_refuses_to_overwrite(clip, tiny_onnx, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"keep me")
    args = ["video", str(clip), "-o", str(out), "--model", str(tiny_onnx), "--quiet", "--no-timeline",
            "--every", "10", "--threads", "1"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert not out.with_suffix(".csv").exists()
    assert main(args + ["--overwrite"]) == 0
    assert count_frames(out)[0] == N_FRAMES


def _bad(kind: str, folder: Path, good: Path) -> Path:
    if kind == "missing":
        return folder / "nope.mp4"
    p = folder / f"{kind}.mp4"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("this is not a video\n" * 20)
    elif kind == "truncated":
        p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return p


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "truncated"])
def test_cli_bad_input_is_one_line_exit_2_and_no_output(kind, clip, tiny_onnx, tmp_path, capfd):
    bad = _bad(kind, tmp_path, clip)
    outdir = tmp_path / "out"
    rc = main(["video", str(bad), "-o", str(outdir / "o.mp4"), "--model", str(tiny_onnx), "--quiet", "--threads", "1"])
    err = capfd.readouterr().err
    assert rc == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err  # FFmpeg's own complaints are silenced too
    assert lines[0].startswith("fervid video: error: ") and str(bad) in lines[0]
    assert "Traceback" not in err
    assert not outdir.exists() or not any(outdir.iterdir())


def test_truncated_avi_processes_what_decodes_and_warns(recognizer, tmp_path):
    src = tmp_path / "clip.avi"
    make_clip(src, n_faces=1, frames=20, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    summary = video_mod.process_video(recognizer, cut, tmp_path / "cut_out.avi", progress=False)
    assert 0 < summary.frames < 20
    assert any("truncated" in w for w in summary.warnings)
    assert count_frames(tmp_path / "cut_out.avi")[0] == summary.frames


def test_interrupted_run_leaves_no_partial_files(recognizer, clip, tmp_path):
    class Boom:
        classes = recognizer.classes

        def __init__(self):
            self.n = 0

        def predict(self, frame):
            self.n += 1
            if self.n == 10:
                raise KeyboardInterrupt
            return recognizer.predict(frame)

    with pytest.raises(KeyboardInterrupt):
        video_mod.process_video(Boom(), clip, tmp_path / "o.mp4", csv_path=tmp_path / "o.csv",
                                timeline_dir=tmp_path / "tl", progress=False)
    assert list(tmp_path.rglob("*")) == [] or all(p.is_dir() for p in tmp_path.rglob("*"))


def test_falls_back_to_mjpg_avi_when_mp4_cannot_be_encoded(recognizer, clip, tmp_path, monkeypatch):
    monkeypatch.setattr(video_mod, "encoder_works", lambda suffix: suffix.lower() == ".avi")
    messages: list[str] = []
    summary = video_mod.process_video(recognizer, clip, tmp_path / "o.mp4", every=10, progress=False,
                                      notify=messages.append)
    assert summary.outputs == [str(tmp_path / "o.avi")]
    assert not (tmp_path / "o.mp4").exists() and count_frames(tmp_path / "o.avi")[0] == N_FRAMES
    assert len(messages) == 1 and "o.avi" in messages[0]


def test_bad_options_are_refused(recognizer, clip, tmp_path):
    from fervid.errors import BadInputError

    with pytest.raises(BadInputError, match="every"):
        list(recognizer.predict_video(clip, every=0))
    with pytest.raises(BadInputError, match="smoothing"):
        video_mod.process_video(recognizer, clip, tmp_path / "o.mp4", smoothing=1.0)
    with pytest.raises(BadInputError, match="suffix"):
        video_mod.process_video(recognizer, clip, tmp_path / "o.gif")
    with pytest.raises(BadInputError, match="input"):
        video_mod.process_video(recognizer, clip, csv_path=clip, overwrite=True)
    assert not list(tmp_path.iterdir())
