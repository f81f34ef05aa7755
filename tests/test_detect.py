"""YuNet through ONNX Runtime (fervid.recognition.detect) against OpenCV's own FaceDetectorYN, and detect_size."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.errors import BadInputError
from fervid.recognition.detect import DETECT_SIZE, YUNET_PATH, FaceDetector
from fervid.recognition.recognize import Recognizer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "fervid" / "assets" / "sample.jpg"


def scenes() -> list[np.ndarray]:
    """The sample photo as it is, shrunk, on a larger canvas (two copies), mirrored and in gray."""
    img = cv2.imread(str(SAMPLE))
    canvas = np.full((480, 800, 3), 70, np.uint8)
    face = cv2.resize(img[20:276, 100:356], (180, 180))
    canvas[40:220, 30:210] = face
    canvas[250:430, 500:680] = face[:, ::-1]
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    return [img, cv2.resize(img, (300, 300)), canvas, np.ascontiguousarray(img[:, ::-1]), gray,
            np.full((240, 320, 3), 128, np.uint8)]


def opencv_rows(image: np.ndarray, score: float) -> np.ndarray:
    det = cv2.FaceDetectorYN.create(str(YUNET_PATH), "", (image.shape[1], image.shape[0]), score, 0.3, 5000)
    _, faces = det.detect(image)
    return np.zeros((0, 15), np.float32) if faces is None else faces


@pytest.mark.parametrize("score", [0.6, 0.3])
def test_onnxruntime_yunet_matches_opencv(score):
    if not hasattr(cv2, "FaceDetectorYN"):
        pytest.skip("this OpenCV build has no FaceDetectorYN to compare with")
    det = FaceDetector(min_confidence=score, threads=1)
    found = 0
    for image in scenes():
        ours, theirs = det._run(image), opencv_rows(image, score)
        assert len(ours) == len(theirs)
        if len(ours):
            ours, theirs = ours[np.argsort(-ours[:, 14])], theirs[np.argsort(-theirs[:, 14])]
            np.testing.assert_allclose(ours, theirs, atol=0.01)  # pixels and score
            found += len(ours)
    assert found >= 5  # the scenes do have faces: the comparison is not of empty lists


def test_detect_size_shrinks_large_images_and_maps_boxes_back():
    img = cv2.imread(str(SAMPLE))
    big = cv2.resize(img, (1024, 1024))
    full = FaceDetector(detect_size=1024, threads=1).detect(big)
    small = FaceDetector(detect_size=320, threads=1).detect(big)
    assert len(full) == len(small) == 1
    # same face in the big image's coordinates, to within the coarser grid's error
    assert np.abs(np.subtract(full[0].box, small[0].box)).max() <= 0.06 * full[0].box[2]
    assert small[0].box[2] > 120  # in the big image's pixels (in the 320 px copy the face is ~56 wide)


def test_detect_size_is_validated_and_reaches_the_recognizer():
    with pytest.raises(BadInputError, match="at least 64"):
        FaceDetector(detect_size=32)
    rec = Recognizer(detect_size=320, threads=1)
    assert rec.detector.detect_size == 320
    assert [f.emotion for f in rec.predict(SAMPLE)]  # still finds the sample's face


def test_detect_size_flag_on_the_commands(tmp_path, capsys):
    from fervid.cli import build_parser, main
    parser = build_parser()
    for cmd in (["predict", "x.jpg"], ["video", "x.mp4"], ["webcam"], ["serve"]):
        if cmd[0] not in parser._subparsers._group_actions[0].choices:
            continue  # a command this checkout does not have
        assert parser.parse_args(cmd + ["--detect-size", "320"]).detect_size == 320
    assert main(["predict", str(SAMPLE), "--detect-size", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--detect-size must be at least 64" in err[0]
    out = tmp_path / "out"
    assert main(["predict", str(SAMPLE), "--detect-size", "320", "-o", str(out), "-q", "--threads", "1"]) == 0
    assert "1 face in 1 image" in capsys.readouterr().err  # -q: the summary goes to stderr


def test_serve_config_carries_detect_size():
    serve = pytest.importorskip("fervid.serve.app")
    rec = serve.load_recognizer(serve.ServeConfig(detect_size=320))
    assert rec.detector.detect_size == 320
    assert serve.load_recognizer(serve.ServeConfig()).detector.detect_size == DETECT_SIZE
