"""``fervid serve``: every endpoint, every documented error, and that answers equal the library's.

Runs the real app (FastAPI TestClient) on the tiny ONNX model, with images made by pasting
upscaled FER faces onto a canvas and a tiny generated video.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")  # python-multipart
pytest.importorskip("httpx")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # newer Starlette prefers httpx2 over httpx for its TestClient
    from fastapi.testclient import TestClient

from conftest import paste_faces  # noqa: E402
from fervid.serve.app import ENV_CONFIG, app_from_env, create_app  # noqa: E402
from fervid.serve.schemas import BatchResponse, ModelResponse, PredictResponse, VideoResponse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT / "tests" / "data" / "fer" / "test"
LIMITS = dict(max_upload_mb=1.0, max_pixels=4_000_000, max_batch_files=4, max_batch_mb=3.0,
              max_video_mb=2.0, max_video_seconds=3.0, concurrency=2)


def fer_face(emotion: str, i: int = 0) -> np.ndarray:
    return cv2.imread(str(sorted((FER / emotion).glob("*.jpg"))[i]), cv2.IMREAD_GRAYSCALE)


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that *claims* width x height (a decompression bomb's header) with a few bytes of data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    return paste_faces([fer_face("happy"), fer_face("surprise")], [160, 180])


@pytest.fixture(scope="module")
def scene_png(scene) -> bytes:
    return encode(scene[0])


@pytest.fixture(scope="module")
def recognizer(tiny_onnx):
    from fervid.recognition.recognize import Recognizer

    return Recognizer(tiny_onnx, threads=1)


@pytest.fixture(scope="module")
def app(tiny_onnx):
    return create_app(tiny_onnx, **LIMITS)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app) as c:  # runs the lifespan: the model pool loads once here
        yield c


def make_clip(path: Path, frames: int, fps: float = 10.0) -> Path:
    """A clip with one face drifting right (MJPG/AVI: every OpenCV build can write and read it)."""
    face = cv2.resize(fer_face("happy"), (150, 150), interpolation=cv2.INTER_CUBIC)
    base, _ = paste_faces([], [], canvas=(240, 320))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    assert writer.isOpened()
    for t in range(frames):
        frame = base.copy()
        frame[40:190, 30 + 3 * t:180 + 3 * t] = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.avi", frames=12).read_bytes()


def assert_error(response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    for w in words:
        assert w.lower() in body["error"].lower(), body["error"]
    assert "Traceback" not in body["error"]
    return body


# --- /v1/predict ------------------------------------------------------------------------

def test_predict_multipart_equals_the_library(client, scene, scene_png, recognizer):
    r = client.post("/v1/predict", files={"file": ("scene.png", scene_png, "image/png")})
    assert r.status_code == 200, r.text
    data = r.json()
    PredictResponse.model_validate(data)
    expected = recognizer.predict(cv2.imdecode(np.frombuffer(scene_png, np.uint8), cv2.IMREAD_COLOR))
    assert (data["width"], data["height"]) == (640, 480)
    assert len(data["faces"]) == len(expected) == 2
    for got, want in zip(data["faces"], expected):
        assert got["box"] == list(want.box)
        assert got["emotion"] == want.emotion
        assert list(got["probabilities"]) == recognizer.classes
        assert got["probabilities"] == pytest.approx(want.probabilities, abs=1e-4)
        assert sum(got["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert len(got["landmarks"]) == 5
    # each pasted face was found where it was pasted
    for placed in scene[1]:
        assert max(iou(placed, f["box"]) for f in data["faces"]) > 0.4
    t = data["timing"]
    assert t["total_ms"] >= t["inference_ms"] > 0 and t["decode_ms"] > 0


def test_predict_raw_body_jpeg(client, scene, recognizer):
    jpeg = encode(scene[0], ".jpg")
    r = client.post("/v1/predict", content=jpeg, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 200, r.text
    expected = recognizer.predict(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    assert [f["box"] for f in r.json()["faces"]] == [list(f.box) for f in expected]


def test_predict_image_without_faces_is_an_empty_list(client):
    blank, _ = paste_faces([], [], canvas=(200, 300))
    r = client.post("/v1/predict", content=encode(blank, ".webp"), headers={"Content-Type": "image/webp"})
    assert r.status_code == 200, r.text
    assert r.json()["faces"] == [] and r.json()["width"] == 300


@pytest.mark.parametrize("fmt, magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8\xff")])
def test_annotate_returns_the_drawn_image(client, scene, scene_png, fmt, magic):
    r = client.post(f"/v1/predict?annotate=true&format={fmt}", files={"file": ("s.png", scene_png, "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"image/{fmt}"
    assert r.content.startswith(magic)
    assert r.headers["x-faces"] == "2" and "inference;dur=" in r.headers["server-timing"]
    drawn = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == scene[0].shape
    # boxes and labels were drawn: many pixels changed, far more than JPEG noise
    changed = np.abs(drawn.astype(int) - scene[0].astype(int)).max(axis=2) > 40
    assert changed.mean() > 0.01


# --- errors -----------------------------------------------------------------------------

def test_upload_over_the_size_limit_is_413(client):
    big = np.random.default_rng(0).integers(0, 255, (800, 800, 3), np.uint8)
    data = encode(big)  # ~1.9 MB of noise, the test limit is 1 MB
    assert len(data) > 1_000_000
    assert_error(client.post("/v1/predict", files={"file": ("big.png", data, "image/png")}), 413, "limit")
    assert_error(client.post("/v1/predict", content=data, headers={"Content-Type": "image/png"}), 413, "1 MB")


def test_size_limit_applies_to_streamed_bodies_without_content_length(client):
    def chunks():
        for _ in range(40):
            yield b"\xff" * 50_000

    assert_error(client.post("/v1/predict", content=chunks(), headers={"Content-Type": "image/jpeg"}), 413)


def test_decompression_bomb_is_refused_from_its_header(client):
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 2000
    assert_error(client.post("/v1/predict", content=bomb, headers={"Content-Type": "image/png"}), 413, "megapixels")


def test_image_over_the_pixel_limit_is_413(client):
    flat = encode(np.full((2000, 2100, 3), 128, np.uint8))  # 4.2 MP, compresses to a few KB
    assert_error(client.post("/v1/predict", files={"file": ("flat.png", flat, "image/png")}), 413, "4.2 megapixels")


@pytest.mark.parametrize("body, ctype, words", [
    (b"hello", "text/plain", ["text/plain"]),
    (b"GIF89a" + b"\0" * 64, "image/gif", ["image/gif"]),
    (b"GIF89a" + b"\0" * 64, "application/octet-stream", ["GIF"]),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", ["svg"]),
])
def test_unsupported_media_type_is_415(client, body, ctype, words):
    assert_error(client.post("/v1/predict", content=body, headers={"Content-Type": ctype}), 415, *words)


def test_unsupported_part_type_in_multipart_is_415(client):
    r = client.post("/v1/predict", files={"file": ("notes.txt", b"just text", "text/plain")})
    assert_error(r, 415, "text/plain")


@pytest.mark.parametrize("make", ["jpeg_garbage", "truncated_png", "random"])
def test_corrupt_image_is_422(client, scene_png, make):
    rng = np.random.default_rng(1)
    body = {"jpeg_garbage": b"\xff\xd8\xff\xe0" + rng.bytes(3000),
            "truncated_png": scene_png[: len(scene_png) // 2],
            "random": rng.bytes(3000)}[make]
    assert_error(client.post("/v1/predict", content=body, headers={"Content-Type": "application/octet-stream"}),
                 422, "image")


def test_no_file_is_400(client):
    assert_error(client.post("/v1/predict"), 400, "no file")
    assert_error(client.post("/v1/predict", data={"note": "no file here"},
                             files={"other": ("a.png", b"x", "image/png")}), 400, "'file'")
    assert_error(client.post("/v1/predict", files={"file": ("empty.png", b"", "image/png")}), 400, "empty")


def test_bad_query_parameter_is_422_json(client, scene_png):
    r = client.post("/v1/predict?annotate=true&format=gif", content=scene_png, headers={"Content-Type": "image/png"})
    assert_error(r, 422, "format")


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/v2/nothing"), 404)
    assert_error(client.get("/v1/predict"), 405)


def test_unexpected_failure_is_a_bare_500(app, client, scene_png, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(app.state.service, "predict_image", boom)
    quiet = TestClient(app, raise_server_exceptions=False)  # lifespan already ran in `client`
    r = quiet.post("/v1/predict", content=scene_png, headers={"Content-Type": "image/png"})
    assert_error(r, 500, "internal server error")
    assert "secret" not in r.text and "passwd" not in r.text


# --- /v1/predict/batch -------------------------------------------------------------------

def test_batch_gives_per_image_results_and_errors(client, scene_png):
    files = [("files", ("good.png", scene_png, "image/png")),
             ("files", ("broken.jpg", b"\xff\xd8\xff\xe0garbage", "image/jpeg")),
             ("files", ("anim.gif", b"GIF89a" + b"\0" * 32, "image/gif")),
             ("files", ("big.bin", b"\xff\xd8\xff" + b"\0" * 1_100_000, "application/octet-stream"))]
    r = client.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text
    data = r.json()
    BatchResponse.model_validate(data)
    assert (data["count"], data["failed"]) == (4, 3)
    assert [x["filename"] for x in data["results"]] == ["good.png", "broken.jpg", "anim.gif", "big.bin"]
    assert [x["status"] for x in data["results"]] == [200, 422, 415, 413]
    assert len(data["results"][0]["faces"]) == 2
    assert all(x["error"] for x in data["results"][1:])
    single = client.post("/v1/predict", content=scene_png, headers={"Content-Type": "image/png"}).json()
    assert data["results"][0]["faces"] == single["faces"]


def test_batch_request_errors(client, scene_png):
    too_many = [("files", (f"{i}.png", scene_png, "image/png")) for i in range(5)]
    assert_error(client.post("/v1/predict/batch", files=too_many), 413, "at most 4")
    assert_error(client.post("/v1/predict/batch", data={"x": "1"}, files={"other": ("a", b"1", "image/png")}),
                 400, "'files'")
    assert_error(client.post("/v1/predict/batch", content=scene_png, headers={"Content-Type": "image/png"}),
                 415, "multipart")
    huge = [("files", (f"{i}.bin", b"\0" * 900_000, "image/png")) for i in range(4)]  # 3.6 MB > 3 MB
    assert_error(client.post("/v1/predict/batch", files=huge), 413, "batch")


# --- /v1/video --------------------------------------------------------------------------

def _serve_temp_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("fervid-serve-*")}


def test_video_json_and_csv(client, clip, recognizer):
    before = _serve_temp_dirs()
    r = client.post("/v1/video", files={"file": ("clip.avi", clip, "video/x-msvideo")})
    assert r.status_code == 200, r.text
    data = r.json()
    VideoResponse.model_validate(data)
    assert (data["frames"], data["analysed"], data["width"], data["height"]) == (12, 12, 320, 240)
    assert data["fps"] == pytest.approx(10.0) and data["duration"] == pytest.approx(1.2)
    assert [f["frame"] for f in data["results"]] == list(range(12))
    found = [f for f in data["results"] if f["faces"]]
    assert len(found) >= 10
    assert {face["id"] for f in found for face in f["faces"]} == {1}  # one face, tracked as one
    assert set(found[0]["faces"][0]["smoothed"]["probabilities"]) == set(recognizer.classes)

    r = client.post("/v1/video?format=csv&every=3", content=clip, headers={"Content-Type": "video/x-msvideo"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    from fervid.recognition.video import csv_header

    assert lines[0].split(",") == csv_header(recognizer.classes)
    frames = {int(line.split(",")[0]) for line in lines[1:]}
    assert frames and frames <= {0, 3, 6, 9}
    assert _serve_temp_dirs() == before  # the temporary copy is gone


def test_video_limits_and_errors(client, clip, tmp_path):
    before = _serve_temp_dirs()
    long_clip = make_clip(tmp_path / "long.avi", frames=40, fps=10.0).read_bytes()  # 4 s > 3 s
    assert len(long_clip) < 2_000_000
    assert_error(client.post("/v1/video", files={"file": ("long.avi", long_clip, "video/x-msvideo")}),
                 422, "4.0 s", "limit")
    assert_error(client.post("/v1/video", content=b"\0" * 2_100_000, headers={"Content-Type": "video/mp4"}),
                 413, "2 MB")
    r = client.post("/v1/video", files={"file": ("notavideo.mp4", b"this is not a video" * 50, "video/mp4")})
    body = assert_error(r, 422, "notavideo.mp4")
    assert "fervid-serve-" not in body["error"]  # no server paths in messages
    assert_error(client.post("/v1/video", content=clip, headers={"Content-Type": "text/plain"}), 415)
    assert_error(client.post("/v1/video"), 400, "no file")
    assert_error(client.post("/v1/video?every=0", content=clip, headers={"Content-Type": "video/x-msvideo"}),
                 422, "every")
    assert_error(client.post("/v1/video?smoothing=1.5", content=clip, headers={"Content-Type": "video/x-msvideo"}),
                 422, "smoothing")
    assert _serve_temp_dirs() == before


# --- model, health, docs, page -------------------------------------------------------------

def test_model_and_health(client, recognizer):
    assert client.get("/healthz").json() == {"status": "ok"}
    data = client.get("/v1/model").json()
    ModelResponse.model_validate(data)
    assert data["classes"] == recognizer.classes
    assert data["arch"] == recognizer.meta["arch"] == "vgg_tiny"
    assert data["input_size"] == 48
    assert data["accuracy"] == recognizer.meta["metrics"]["val_acc"]
    assert data["limits"]["max_upload_mb"] == 1.0
    assert all(c.startswith("#") and len(c) == 7 for c in data["colors"].values())


def test_openapi_documents_every_endpoint_with_examples(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in ("/v1/predict", "/v1/predict/batch", "/v1/video", "/v1/model", "/healthz"):
        assert path in paths
    body = paths["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/jpeg", "image/png"} <= set(body)
    assert "files" in paths["/v1/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"413", "415", "422"} <= set(paths["/v1/predict"]["post"]["responses"])
    assert spec["components"]["schemas"]["PredictResponse"]["examples"]
    assert client.get("/docs").status_code == 200


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in r.text and 'id="file"' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    js = client.get("/static/app.js")
    assert js.status_code == 200 and "/v1/predict" in js.text and "getUserMedia" in js.text
    assert client.get("/static/style.css").status_code == 200


# --- concurrency, memory-only uploads, configuration --------------------------------------

def test_inference_runs_off_the_event_loop_and_in_parallel(app, client, scene_png, monkeypatch):
    service = app.state.service
    real = service.predict_image
    active, peak, lock = [0], [0], threading.Lock()
    release = threading.Event()

    def slow(recognizer, *args):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            release.wait(10)
            return real(recognizer, *args)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(service, "predict_image", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        client.post("/v1/predict", content=scene_png, headers={"Content-Type": "image/png"})))
        for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while active[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peak[0] == 2  # both requests are inside inference at once
    assert client.get("/healthz").status_code == 200  # and the event loop still answers
    release.set()
    for t in threads:
        t.join(10)
    assert [r.status_code for r in results] == [200, 200]
    assert results[0].json()["faces"] == results[1].json()["faces"]


def test_concurrent_requests_agree_with_sequential_ones(client):
    images = [encode(paste_faces([fer_face(e, i)], [150 + 10 * i], seed=i)[0]) for i, e in
              enumerate(["happy", "sad", "fear", "angry", "neutral", "surprise"])]
    post = lambda b: client.post("/v1/predict", content=b, headers={"Content-Type": "image/png"}).json()["faces"]  # noqa: E731
    sequential = [post(b) for b in images]
    concurrent: list = [None] * len(images)
    threads = [threading.Thread(target=lambda i=i: concurrent.__setitem__(i, post(images[i]))) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert concurrent == sequential


def test_multipart_uploads_never_spill_to_disk(monkeypatch):
    import asyncio

    from starlette.datastructures import Headers

    from fervid.serve.uploads import parse_multipart

    def no_disk(self):
        raise AssertionError("an upload was spooled to disk")

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", no_disk)
    payload = os.urandom(3_000_000)  # well above Starlette's 1 MB default spool size
    boundary = "fervidtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    headers = Headers({"content-type": f"multipart/form-data; boundary={boundary}"})
    items = asyncio.run(parse_multipart(headers, body, max_files=1))
    assert items[0][0] == "file" and items[0][1].data == payload


def test_app_from_env(tiny_onnx, monkeypatch):
    from fervid.errors import FervidError

    monkeypatch.setenv(ENV_CONFIG, json.dumps({"model": str(tiny_onnx), "max_upload_mb": 2, "concurrency": 1}))
    with TestClient(app_from_env()) as c:
        assert c.get("/v1/model").json()["limits"]["max_upload_mb"] == 2
    monkeypatch.setenv(ENV_CONFIG, json.dumps({"model": str(tiny_onnx), "max_uplod_mb": 2}))
    with pytest.raises(FervidError, match="max_uplod_mb"):
        app_from_env()


def test_bad_settings_and_bad_model_are_one_line_errors(tmp_path):
    from fervid.errors import FervidError, ModelFileError

    with pytest.raises(FervidError, match="max_upload_mb"):
        create_app(None, max_upload_mb=0)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="bad.onnx"):
        with TestClient(create_app(bad)):
            pass


# --- the command --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_errors_are_one_line(tiny_onnx, tmp_path, capsys):
    from fervid.cli import main

    assert main(["serve", "--model", str(tmp_path / "missing.onnx"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fervid serve: error:") and "missing.onnx" in err and "\n" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", str(tiny_onnx), "--port", str(port)]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_onnx), "--workers", "0"]) == 2


@pytest.mark.slow
def test_cli_serves_with_several_workers(tiny_onnx, scene_png):
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fervid", "serve", "--model", str(tiny_onnx), "--port", str(port),
                             "--workers", "2", "--threads", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # generous: a busy CI box can take a minute per process start
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        r = httpx.post(f"{url}/v1/predict", content=scene_png, headers={"Content-Type": "image/png"}, timeout=120)
        assert r.status_code == 200 and len(r.json()["faces"]) == 2
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "Traceback" not in out, out


def test_model_reports_the_accuracy_of_the_served_file():
    """The shipped model.onnx is int8: its own PublicTest figure (sidecar ``onnx.metrics``) is what
    /v1/model reports, not the fp32 training run's figure embedded in the ONNX metadata."""
    from fervid.recognition.recognize import ASSETS

    sidecar = json.loads((ASSETS / "model.json").read_text())
    served = sidecar["onnx"]["metrics"]["val_acc"]
    with TestClient(create_app(None, concurrency=1, prior="uniform")) as c:
        data = c.get("/v1/model").json()
    assert data["accuracy"] == served and served != sidecar["metrics"]["val_acc"]
    assert data["metrics"]["val_acc"] == sidecar["metrics"]["val_acc"]  # the run's figure stays visible
    assert data["prior"] == "uniform"
