"""The browser page, driven for real: headless Chromium (the system one) with Playwright.

A uvicorn server with the tiny model runs in a thread on a free loopback port. The page
must show what the API answers: as many face cards as faces, their labels, a bar per
class, and boxes drawn on the canvas in each class's colour. Webcam mode runs on
Chromium's fake camera fed with a video of pasted faces. Skips only where no browser
can be launched.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest import paste_faces  # noqa: E402
from fervid.serve.app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT / "tests" / "data" / "fer" / "test"
SAMPLE = ROOT / "fervid" / "assets" / "sample.jpg"
CHROMIUM = os.environ.get("FERVID_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000
if not Path(CHROMIUM).exists():  # checked here: fixtures would train the tiny model first
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def fer_face(emotion: str) -> np.ndarray:
    return cv2.imread(str(sorted((FER / emotion).glob("*.jpg"))[0]), cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory) -> Path:
    frame, _ = paste_faces([fer_face("happy"), fer_face("surprise")], [160, 180])
    path = tmp_path_factory.mktemp("page") / "two_faces.png"
    cv2.imwrite(str(path), frame)
    return path


@pytest.fixture(scope="module")
def server(tiny_onnx):
    """Base URL of a real uvicorn server (in a thread) serving the tiny model."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(tiny_onnx, concurrency=2), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)


def launch(playwright, extra_args: list[str] = ()):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS + list(extra_args))
    except sync_api.Error as e:
        pytest.skip(f"Chromium cannot be launched here: {str(e).splitlines()[0]}")


@pytest.fixture(scope="module")
def playwright():
    """Playwright, once a Chromium was found and launched (else skip, before any server starts)."""
    with sync_api.sync_playwright() as p:
        launch(p).close()
        yield p


def api_faces(server: str, path: Path) -> list[dict]:
    r = httpx.post(f"{server}/v1/predict", files={"file": (path.name, path.read_bytes())}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["faces"]


def canvas_pixel(page, selector: str, x: float, y: float) -> list[int]:
    return page.evaluate("([sel, x, y]) => Array.from(document.querySelector(sel).getContext('2d')"
                         ".getImageData(x, y, 1, 1).data.slice(0, 3))", [selector, x, y])


def hex_rgb(value: str) -> list[int]:
    return [int(value[i:i + 2], 16) for i in (1, 3, 5)]


def check_result(page, expected: list[dict], colors: dict[str, str], size: tuple[int, int]) -> None:
    """The page shows exactly the API's answer: cards, labels, bars, boxes in class colours."""
    status = page.inner_text("#status")
    n = len(expected)
    assert f"{n} face{'' if n == 1 else 's'} found in {size[0]}x{size[1]}" in status and "inference" in status
    cards = page.locator("#faces .face")
    assert cards.count() == n
    for i, face in enumerate(expected):
        card = cards.nth(i)
        assert card.get_attribute("data-emotion") == face["emotion"]
        assert card.locator("h3").inner_text().startswith(f"Face {i + 1}: {face['emotion']} ")
        bars = card.locator(".bar")
        assert bars.count() == len(face["probabilities"])
        assert bars.first.get_attribute("data-emotion") == face["emotion"]  # highest first
        width = bars.first.locator(".fill").evaluate("el => el.style.width")
        assert float(width.rstrip("%")) == pytest.approx(100 * face["confidence"], abs=0.06)
        # the box's left edge, half-way down, is drawn in the class colour
        x, y, w, h = face["box"]
        assert canvas_pixel(page, "#canvas", x, y + h // 2) == hex_rgb(colors[face["emotion"]])
    assert page.evaluate("[document.querySelector('#canvas').width, document.querySelector('#canvas').height]") \
        == list(size)


def test_upload_shows_faces_labels_bars_and_boxes(playwright, server, scene_file, tmp_path):
    colors = httpx.get(f"{server}/v1/model").json()["colors"]
    browser = launch(playwright)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(server + "/", timeout=TIMEOUT_MS)
        sync_api.expect(page.locator("#model-info")).to_contain_text("vgg_tiny", timeout=TIMEOUT_MS)

        expected = api_faces(server, scene_file)
        assert len(expected) == 2
        page.set_input_files("#file", str(scene_file))
        page.wait_for_selector("#status[data-state=done]", timeout=TIMEOUT_MS)
        check_result(page, expected, colors, (640, 480))
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        shot = os.environ.get("FERVID_SCREENSHOT")  # to look at it: FERVID_SCREENSHOT=/tmp/page.png
        if shot:
            page.screenshot(path=shot, full_page=True)

        assert not errors, errors
        # a bad file shows the server's one-line error, and no stale results
        bad = tmp_path / "notes.txt"
        bad.write_text("not an image")
        page.set_input_files("#file", str(bad))
        page.wait_for_selector("#status[data-state=error]", timeout=TIMEOUT_MS)
        assert "unsupported media type" in page.inner_text("#status")
        assert page.locator("#faces .face").count() == 0
        assert [e for e in errors if "415" not in e] == []  # the failed upload logs its 415, nothing else

        # the photo shipped with fervid (a real face, JPEG)
        if SAMPLE.is_file():
            expected = api_faces(server, SAMPLE)
            assert expected, "the bundled sample photo should show a face"
            page.set_input_files("#file", str(SAMPLE))
            page.wait_for_selector("#status[data-state=done]", timeout=TIMEOUT_MS)
            image = cv2.imread(str(SAMPLE))
            check_result(page, expected, colors, (image.shape[1], image.shape[0]))
            page.screenshot(path=str(tmp_path / "sample.png"), full_page=True)
        assert [e for e in errors if "415" not in e] == []
    finally:
        browser.close()


def write_y4m(path: Path, frame: np.ndarray, frames: int = 10) -> Path:
    """A raw Y4M video (Chromium's fake-camera input) repeating ``frame``."""
    h, w = frame.shape[:2]
    yuv = cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fh.write(b"FRAME\n" + yuv)
    return path


def test_webcam_mode_sends_frames_and_draws_live_labels(playwright, server, tmp_path):
    frame, _ = paste_faces([fer_face("happy"), fer_face("surprise")], [160, 180])
    fake = write_y4m(tmp_path / "camera.y4m", frame)
    browser = launch(playwright, ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                  f"--use-file-for-fake-video-capture={fake}"])
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["camera"], origin=server)
        page = context.new_page()
        page.goto(server + "/", timeout=TIMEOUT_MS)
        page.click("#mode-webcam")
        page.click("#cam-start")
        sync_api.expect(page.locator("#faces .face")).to_have_count(2, timeout=TIMEOUT_MS)
        assert page.inner_text("#status").startswith("Live: 2 faces found")
        assert page.locator("#cam-stop").is_enabled()
        # labels are drawn on the overlay: some pixels of it are no longer transparent
        drawn = page.evaluate("(() => { const c = document.querySelector('#cam-overlay');"
                              " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                              " let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0; return n; })()")
        assert drawn > 1000
        # the overlay sits exactly on the video, so boxes land on the faces
        rects = page.evaluate("['#cam-video', '#cam-overlay'].map(s => { const r = document.querySelector(s)"
                              ".getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; })")
        assert rects[0] == pytest.approx(rects[1], abs=1) and rects[0][2] > 100
        page.screenshot(path=str(tmp_path / "webcam.png"), full_page=True)
        page.click("#cam-stop")
        sync_api.expect(page.locator("#status")).to_have_text("Camera off.")
    finally:
        browser.close()
