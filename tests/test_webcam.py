"""The webcam loop with a fake camera and a fake window, and its one-line errors."""
from __future__ import annotations


import cv2
import numpy as np
import pytest

import fervid.recognition.camera as webcam
from fervid.cli import main
from fervid.errors import BadInputError, FervidError

from test_video import make_clip

N = 20


class FakeCapture:
    """Frames from a list, like ``cv2.VideoCapture.read``; records that it was released."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = list(frames)
        self.released = False
        self.reads = 0

    def read(self):
        self.reads += 1
        if not self.frames:
            return False, None
        return True, self.frames.pop(0).copy()  # a camera hands out a fresh buffer per frame

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released = True


class FakeDisplay:
    """Keeps copies of what was shown; presses ``key`` when showing frame number ``press_at``."""

    def __init__(self, press_at: int | None = None, key: str = "q"):
        self.shown: list[np.ndarray] = []
        self.press_at, self.key = press_at, key
        self.closed = False

    def show(self, frame):
        self.shown.append(frame.copy())
        return ord(self.key) if len(self.shown) == self.press_at else -1

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[np.ndarray]:
    path = tmp_path_factory.mktemp("cam") / "cam.avi"
    make_clip(path, n_faces=2, frames=N, fourcc="MJPG")
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    assert len(out) == N
    return out


@pytest.fixture(scope="module")
def recognizer(tiny_onnx):
    from fervid.recognition.recognize import Recognizer

    return Recognizer(tiny_onnx, threads=1)


def test_q_quits_and_ids_stay_stable(recognizer, frames):
    cap, disp = FakeCapture(frames), FakeDisplay(press_at=12)
    seen = []
    summary = webcam.run_webcam(recognizer, cap, disp, on_frame=seen.append)
    assert summary.frames == 12 and summary.quit_by_key and len(disp.shown) == 12
    assert cap.reads == 12  # stopped reading as soon as q was pressed
    assert disp.closed and cap.released
    left = {min(r.faces, key=lambda f: f.box[0]).track_id for r in seen}
    right = {max(r.faces, key=lambda f: f.box[0]).track_id for r in seen}
    assert all(len(r.faces) == 2 for r in seen)
    assert len(left) == 1 and len(right) == 1 and left != right
    assert summary.tracks == 2
    # frames were annotated (boxes + FPS text) before they were shown
    for raw, shown in zip(frames, disp.shown):
        assert np.abs(raw.astype(int) - shown.astype(int)).max() > 100
    assert "quit" in summary.line()


def test_esc_also_quits_and_end_of_source_stops(recognizer, frames):
    s = webcam.run_webcam(recognizer, FakeCapture(frames), FakeDisplay(press_at=3, key="\x1b"))
    assert s.frames == 3 and s.quit_by_key
    s = webcam.run_webcam(recognizer, FakeCapture(frames[:5]), FakeDisplay(), every=2)
    assert s.frames == 5 and s.analysed == 3 and not s.quit_by_key


def test_fps_counter_is_drawn(recognizer, frames):
    blank = [np.full_like(frames[0], 128) for _ in range(3)]  # no faces: only the FPS text changes pixels
    disp = FakeDisplay()
    webcam.run_webcam(recognizer, FakeCapture(blank), disp)
    corner = disp.shown[-1][:40, :160].astype(int)
    assert np.abs(corner - 128).max() > 100
    assert np.array_equal(disp.shown[-1][200:, :], blank[0][200:, :])


def test_camera_without_frames_is_a_clear_error(recognizer):
    disp = FakeDisplay()
    cap = FakeCapture([])
    with pytest.raises(BadInputError, match="camera 7: opened but gave no frame"):
        webcam.run_webcam(recognizer, cap, disp, name="camera 7")
    assert disp.closed and cap.released


def test_missing_camera_is_a_clear_error():
    with pytest.raises(BadInputError, match=r"camera 97: cannot be opened"):
        webcam.open_camera(97)


def test_cli_missing_camera_exit_2(tiny_onnx, monkeypatch, capfd):
    monkeypatch.setattr(webcam, "WindowDisplay", lambda *a, **k: FakeDisplay())
    rc = main(["webcam", "--camera", "97", "--model", str(tiny_onnx), "--threads", "1"])
    err = capfd.readouterr().err
    assert rc == 2
    assert [ln for ln in err.splitlines() if ln.strip()] == [err.strip()]
    assert err.startswith("fervid webcam: error: camera 97: cannot be opened")


def test_cli_without_display_says_so(tiny_onnx, monkeypatch, capfd):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    rc = main(["webcam", "--model", str(tiny_onnx)])
    err = capfd.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert "no display" in err and "fervid video" in err


@pytest.mark.skipif("NONE" not in cv2.getBuildInformation().split("GUI:")[1].splitlines()[0],
                    reason="this OpenCV build has a GUI; opening a window on a fake display could hang")
def test_headless_opencv_is_detected(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":99")
    with pytest.raises(FervidError, match="no GUI support.*opencv-python"):
        webcam.WindowDisplay()


def test_predict_video_on_a_live_source(recognizer, frames):
    results = list(recognizer.predict_video(FakeCapture(frames[:4])))
    assert [r.index for r in results] == [0, 1, 2, 3]
    times = [r.time for r in results]
    assert times[0] >= 0 and times == sorted(times)  # wall-clock seconds since the first frame
    with pytest.raises(BadInputError, match="camera 97"):
        next(iter(recognizer.predict_video(97)))
