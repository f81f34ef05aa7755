"""The malformed-input corpus (scripts/make_corpus.py) through every entry point that can receive it.

Each input is either handled (with the result the corpus says: faces found, upright for
EXIF-rotated photos, frames counted) or refused with ONE line that names the file and the
problem: exit code 2 on the command line, a BadInputError in Python, a 4xx JSON error from
the service. Batches go on past a bad input and count it. Each test walks one entry point
over every case and reports all deviations at once.
"""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from fervid.cli import main
from fervid.errors import BadInputError, FervidError

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
make_corpus_mod = importlib.util.module_from_spec(_spec)
sys.modules["make_corpus"] = make_corpus_mod  # dataclasses look their module up there
_spec.loader.exec_module(make_corpus_mod)
SHIPPED_ONNX = ROOT / "fervid" / "assets" / "model.onnx"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> list:
    return make_corpus_mod.make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def recognizer():
    from fervid.recognition.recognize import Recognizer

    return Recognizer(SHIPPED_ONNX, threads=1)


def of(corpus: list, kind: str) -> list:
    cases = [c for c in corpus if c.kind == kind]
    if not cases:
        pytest.skip(f"no {kind} cases in this corpus (PyTorch or onnx missing)")
    return cases


def error_problem(case, message: str) -> str | None:
    """Why ``message`` is not a proper refusal of ``case`` (None when it is)."""
    if "\n" in message.strip():
        return f"{case.name}: error spans several lines: {message!r}"
    if str(case.path) not in message:
        return f"{case.name}: error does not name the file: {message!r}"
    if case.problem and case.problem not in message:
        return f"{case.name}: error does not say {case.problem!r}: {message!r}"
    return None


def cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def cli_problem(case, cmd: str, code: int, err: str, ok_codes=(0,)) -> str | None:
    """Why a CLI run on ``case`` did not end as the corpus says."""
    if case.expect == "ok" or (case.expect == "any" and code in ok_codes):
        if code not in ok_codes:
            return f"{case.name}: fervid {cmd} exited {code}: {err.strip()[-300:]}"
        return None
    lines = [x for x in err.splitlines() if x.strip()]
    if code != 2:
        return f"{case.name}: fervid {cmd} exited {code}, not 2: {err.strip()[-300:]}"
    errors = [x for x in lines if x.startswith(f"fervid {cmd}: error: ")]
    if len(errors) != 1 or any("Traceback" in x for x in lines):
        return f"{case.name}: fervid {cmd} did not print exactly one error line: {lines}"
    return error_problem(case, errors[0])


def report(problems: list) -> None:
    problems = [p for p in problems if p]
    assert not problems, f"{len(problems)} deviation(s):\n" + "\n".join(problems)


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- images --------------------------------------------------------------------------------------

def test_corpus_has_what_the_issue_lists(corpus):
    names = {c.name for c in corpus}
    for must in ("empty.jpg", "truncated.jpg", "truncated.png", "text.jpg", "cmyk.jpg", "rgb16.png", "palette.png",
                 "rgba.png", "gray.png", "one_pixel.png", "huge_10k.png", "bomb.png", "exif_orientation_6.jpg",
                 "animated.gif", "zero_frames.avi", "truncated.avi", "size_change.mjpeg", "missing_column.csv",
                 "wrong_pixel_count.csv", "non_numeric.csv", "unknown_label.csv", "folder_unknown_class"):
        assert must in names
    assert all(c.path.exists() for c in corpus if c.kind != "special")  # special: loops, outputs
    big = next(c for c in corpus if c.name == "huge_10k.png").path
    assert big.stat().st_size < 1_000_000  # 100 megapixels, small on disk


def test_images_python_api(corpus, recognizer):
    problems = []
    upright: dict[Path, list] = {}
    for c in of(corpus, "image"):
        try:
            faces = recognizer.predict(c.path)
        except BadInputError as e:
            problems.append(f"{c.name}: refused: {e}" if c.expect == "ok" else error_problem(c, str(e)))
            continue
        if c.expect == "error":
            problems.append(f"{c.name}: accepted, expected an error with {c.problem!r}")
        elif c.faces is not None and len(faces) != c.faces:
            problems.append(f"{c.name}: {len(faces)} faces, expected {c.faces}")
        elif c.upright is not None:
            if c.upright not in upright:
                upright[c.upright] = recognizer.predict(c.upright)
            want = upright[c.upright]
            if not faces or iou(faces[0].box, want[0].box) < 0.8:
                problems.append(f"{c.name}: face at {[f.box for f in faces]}, upright photo has {want[0].box}")
    report(problems)


def test_images_cli_batch_goes_on_and_counts_failures(corpus, tmp_path):
    """The whole image corpus in one real `fervid predict` process: every file gets its row."""
    cases = of(corpus, "image")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "fervid", "predict", *[str(c.path) for c in cases], "-o", str(out),
                           "--format", "jsonl", "--threads", "1", "--model", str(SHIPPED_ONNX)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    # Only our lines, and the one-line complaints libjpeg/libpng print by themselves (OpenCV's
    # own multi-part "[ERROR:0@...] can't read header" log lines are silenced).
    codec = ("Corrupt JPEG data", "Premature end of JPEG", "libpng ")
    noise = [x for x in proc.stderr.splitlines() if x.strip() and not x.startswith(("fervid predict: ",) + codec)]
    assert not noise, noise
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    by_file: dict[str, list] = {}
    for r in rows:
        by_file.setdefault(r["file"], []).append(r)
    problems, failed = [], 0
    for c in cases:
        got = by_file.get(str(c.path), [])
        status = {r["status"] for r in got}
        if not got:
            problems.append(f"{c.name}: no row in the table")
        elif status == {"error"}:
            failed += 1
            if c.expect == "ok":
                problems.append(f"{c.name}: error row {got[0]['error']!r}")
            else:
                problems.append(error_problem(c, got[0]["error"]))
                if f"fervid predict: error: {got[0]['error']}" not in proc.stderr.splitlines():
                    problems.append(f"{c.name}: its error is not one stderr line")
        elif c.expect == "error":
            problems.append(f"{c.name}: rows {status}, expected an error")
        elif c.faces is not None and sum(r["status"] == "ok" for r in got) != c.faces:
            problems.append(f"{c.name}: {len(got)} rows {status}, expected {c.faces} faces")
    report(problems)
    assert proc.returncode == 2, proc.stderr
    assert failed == sum(c.expect == "error" for c in cases) + sum(
        c.expect == "any" and by_file[str(c.path)][0]["status"] == "error" for c in cases)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    assert f"{failed} failed" in summary, summary
    annotated = {p.name for p in out.iterdir()}
    for c in cases:
        if c.expect == "ok":
            assert c.path.name in annotated or c.path.name + ".png" in annotated, c.name


def test_images_cli_one_by_one(corpus, tmp_path, capsys):
    problems = []
    for c in of(corpus, "image"):
        if c.expect == "ok" and c.name not in ("photo.jpg", "one_pixel.png", "exif_orientation_6.jpg"):
            continue  # every ok image went through the batch above; these three stand for them
        code, out, err = cli(["predict", c.path, "-o", tmp_path / c.name, "--threads", "1", "--model", SHIPPED_ONNX],
                             capsys)
        problems.append(cli_problem(c, "predict", code, err))
    report(problems)


@pytest.fixture(scope="module")
def client(recognizer):
    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from fervid.serve.app import create_app

    app = create_app(recognizer=recognizer, concurrency=1, max_batch_files=64, max_batch_mb=64.0)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _service_problem(c, status: int, body: dict) -> str | None:
    if status >= 500:
        return f"{c.name}: service answered {status}: {body}"
    if c.serve is not None and status != c.serve:
        return f"{c.name}: service answered {status}, expected {c.serve}: {body}"
    if status != 200 and (not isinstance(body.get("error"), str) or "\n" in body["error"]):
        return f"{c.name}: error answer is not one line of JSON: {body}"
    return None


def test_images_service(corpus, client, recognizer):
    cases = of(corpus, "image")
    problems = []
    for c in cases:
        r = client.post("/v1/predict", files={"file": (c.path.name, c.path.read_bytes(), "application/octet-stream")})
        body = r.json()
        problems.append(_service_problem(c, r.status_code, body))
        if r.status_code == 200 and c.upright is not None:  # as a browser shows it: upright
            import cv2

            h, w = cv2.imread(str(c.upright)).shape[:2]
            want = recognizer.predict(c.upright)[0].box
            if (body["width"], body["height"]) != (w, h) or not body["faces"] \
                    or iou(body["faces"][0]["box"], want) < 0.8:
                problems.append(f"{c.name}: service saw {body['width']}x{body['height']} with faces "
                                f"{[f['box'] for f in body['faces']]}, upright is {w}x{h} with {want}")
    report(problems)


def test_images_service_batch_goes_on_and_counts_failures(corpus, client):
    cases = of(corpus, "image")
    files = [("files", (c.path.name, c.path.read_bytes(), "application/octet-stream")) for c in cases]
    r = client.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == len(cases)
    problems = [_service_problem(c, res["status"], res) for c, res in zip(cases, body["results"])]
    problems += [f"{c.name}: result for {res['filename']}" for c, res in zip(cases, body["results"])
                 if res["filename"] != c.path.name]
    report(problems)
    assert body["failed"] == sum(res["status"] != 200 for res in body["results"]) > 0


# --- videos --------------------------------------------------------------------------------------

def test_videos_python_api(corpus, recognizer, tmp_path):
    from fervid.recognition.video import process_video

    problems = []
    for c in of(corpus, "video"):
        out, table = tmp_path / f"{c.name}.avi", tmp_path / f"{c.name}.csv"
        try:
            frames = sum(1 for _ in recognizer.predict_video(c.path))
            summary = process_video(recognizer, c.path, out, csv_path=table, progress=False, notify=lambda m: None)
        except BadInputError as e:
            problems.append(f"{c.name}: refused: {e}" if c.expect == "ok" else error_problem(c, str(e)))
            if out.exists() or table.exists() or any(p.name.startswith(f".{c.name}") for p in tmp_path.iterdir()):
                problems.append(f"{c.name}: a refused video left output behind")
            continue
        if c.expect == "error":
            problems.append(f"{c.name}: accepted, expected an error with {c.problem!r}")
            continue
        want = c.extra.get("frames")
        if want is not None and not frames == summary.frames == want:
            problems.append(f"{c.name}: {frames} / {summary.frames} frames, expected {want}")
        if not (out.stat().st_size > 0 and table.read_text().count("\n") > summary.analysed * 0):
            problems.append(f"{c.name}: outputs missing")
        if c.extra.get("warning") and not any(c.extra["warning"] in w for w in summary.warnings):
            problems.append(f"{c.name}: no warning about {c.extra['warning']!r}: {summary.warnings}")
    report(problems)


def test_videos_whose_frame_size_changes_mid_stream(recognizer, tmp_path):
    """Frames that change size (a capture-like source; decoders of files rescale them already)."""
    import cv2

    photo = cv2.imread(str(ROOT / "fervid" / "assets" / "sample.jpg"))
    sizes = [(320, 240)] * 3 + [(640, 480)] * 3 + [(200, 300)] * 3

    class Source:
        def __init__(self):
            self.i = 0

        def read(self):
            if self.i >= len(sizes):
                return False, None
            self.i += 1
            return True, cv2.resize(photo, sizes[self.i - 1])

    results = list(recognizer.predict_video(Source()))
    assert [r.image.shape[1::-1] for r in results] == sizes
    for r, (w, h) in zip(results, sizes):
        assert len(r.faces) == 1
        x, y, bw, bh = r.faces[0].face.box
        assert 0 <= x and x + bw <= w and 0 <= y and y + bh <= h, (r.index, r.faces[0].face.box, (w, h))


def test_videos_cli(corpus, tmp_path, capsys):
    problems = []
    for c in of(corpus, "video"):
        out = tmp_path / f"{c.name}.avi"
        code, _, err = cli(["video", c.path, "-o", out, "--no-timeline", "--quiet", "--threads", "1",
                            "--model", SHIPPED_ONNX], capsys)
        problems.append(cli_problem(c, "video", code, err))
        if code == 2 and (out.exists() or out.with_suffix(".csv").exists()):
            problems.append(f"{c.name}: a refused video left output behind")
    report(problems)


def test_videos_service(corpus, client):
    problems = []
    for c in of(corpus, "video"):
        r = client.post("/v1/video", files={"file": (c.path.name, c.path.read_bytes(), "application/octet-stream")})
        body = r.json()
        problems.append(_service_problem(c, r.status_code, body))
        want = c.extra.get("frames")
        if r.status_code == 200 and want is not None and body["frames"] != want:
            problems.append(f"{c.name}: service counted {body['frames']} frames, expected {want}")
    report(problems)


# --- training data (fer2013.csv and folders) ------------------------------------------------------

def test_data_python_api(corpus):
    from fervid.data import load_faces, read_source

    problems = []
    for c in of(corpus, "data"):
        try:
            raw = read_source(c.path)
            faces = load_faces(c.path, "all")
        except BadInputError as e:
            problems.append(f"{c.name}: refused: {e}" if c.expect == "ok" else error_problem(c, str(e)))
            continue
        if c.expect == "error":
            problems.append(f"{c.name}: accepted, expected an error with {c.problem!r}")
        elif not (len(raw.labels) == len(faces) > 0 and faces.images.shape[1:] == (48, 48)):
            problems.append(f"{c.name}: read {len(raw.labels)} / {len(faces)} faces")
    report(problems)


def test_data_cli_evaluate(corpus, tmp_path, capsys):
    pytest.importorskip("sklearn")
    problems = []
    for c in of(corpus, "data"):
        code, _, err = cli(["evaluate", "--model", SHIPPED_ONNX, "--data", c.path, "--split", "all",
                            "--out-dir", tmp_path / c.name], capsys)
        problems.append(cli_problem(c, "evaluate", code, err))
    report(problems)


def test_data_cli_train(corpus, tmp_path, capsys):
    pytest.importorskip("torch")
    problems = []
    for c in of(corpus, "data"):
        if c.expect == "ok" and c.name != "ok.csv":
            continue  # one training run stands for the readable sources (read above, same reader)
        out = tmp_path / c.name
        code, _, err = cli(["train", "--data", c.path, "--train-split", "all", "--val-split", "all", "--model",
                            "vgg_tiny", "--epochs", "1", "--batch-size", "4", "--threads", "1", "--device", "cpu",
                            "--no-progress", "--out", out], capsys)
        problems.append(cli_problem(c, "train", code, err))
        if code == 2 and out.exists():
            problems.append(f"{c.name}: a refused training run left {out} behind")
    report(problems)


# --- models and run folders -----------------------------------------------------------------------

def test_models_python_api(corpus):
    from fervid.training.checkpoint import load_model
    from fervid.analysis.predictors import load_model_any
    from fervid.recognition.recognize import Recognizer

    problems = []
    for c in of(corpus, "model"):
        loaders = [Recognizer, load_model_any] + ([load_model] if c.path.suffix == ".safetensors" else [])
        for load in loaders:
            try:
                load(c.path)
            except BadInputError as e:
                problems.append(f"{c.name}: {load.__name__} refused: {e}" if c.expect == "ok"
                                else error_problem(c, str(e)))
                continue
            if c.expect == "error":
                problems.append(f"{c.name}: {load.__name__} accepted it, expected {c.problem!r}")
    report(problems)


def test_models_cli(corpus, tmp_path, capsys):
    photo = next(c for c in corpus if c.name == "photo.jpg").path
    data = next(c for c in corpus if c.name == "ok.csv").path
    problems = []
    for c in of(corpus, "model"):
        runs = [("predict", [photo, "--model", c.path, "-o", tmp_path / "p" / c.name, "--threads", "1"]),
                ("video", [next(x for x in corpus if x.name == "clip.avi").path, "--model", c.path, "-o",
                           tmp_path / "v" / f"{c.name}.avi", "--no-timeline", "--quiet", "--threads", "1"]),
                ("evaluate", ["--model", c.path, "--data", data, "--split", "all",
                              "--out-dir", tmp_path / "e" / c.name])]
        if c.path.suffix == ".safetensors":  # the commands that take PyTorch models only
            runs.append(("export", [c.path, "-o", tmp_path / "x" / f"{c.name}.onnx"]))
            runs.append(("train", ["--init", c.path, "--data", data, "--train-split", "all", "--val-split", "all",
                                   "--model", "vgg_tiny", "--epochs", "1", "--batch-size", "4", "--threads", "1",
                                   "--device", "cpu", "--no-progress", "--out", tmp_path / "t" / c.name]))
        if c.expect == "error":  # a good model would start serving and never return
            runs.append(("serve", ["--model", c.path, "--port", free_port()]))
        for cmd, argv in runs:
            code, _, err = cli([cmd, *argv], capsys)
            problems.append(cli_problem(c, cmd, code, err))
    report(problems)


def test_models_service(corpus):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from fervid.serve.app import create_app

    problems = []
    for c in of(corpus, "model"):
        try:
            with TestClient(create_app(c.path, concurrency=1)) as client:
                r = client.get("/v1/model")
        except FervidError as e:  # the model loads in the lifespan: the server never starts
            problems.append(f"{c.name}: refused: {e}" if c.expect == "ok" else error_problem(c, str(e)))
            continue
        if c.expect == "error":
            problems.append(f"{c.name}: service started on it, expected {c.problem!r}")
        elif r.status_code != 200 or len(r.json()["classes"]) != 7:
            problems.append(f"{c.name}: /v1/model answered {r.status_code} {r.text[:200]}")
    report(problems)


def test_run_folders_resume(corpus, capsys):
    pytest.importorskip("torch")
    from fervid.training.engine import TrainConfig, train

    problems = []
    for c in of(corpus, "run"):
        before = sorted(p.name for p in c.path.iterdir())
        code, _, err = cli(["train", "--resume", c.path, "--no-progress"], capsys)
        problems.append(cli_problem(c, "train", code, err))
        try:
            train(TrainConfig(out=str(c.path)), resume=True, progress=False)
            problems.append(f"{c.name}: train(resume=True) accepted it")
        except BadInputError as e:
            problems.append(error_problem(c, str(e)))
        if sorted(p.name for p in c.path.iterdir()) != before:
            problems.append(f"{c.name}: a refused resume changed the run folder")
    report(problems)
