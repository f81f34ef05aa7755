"""Recognition settings are declared and checked once (RecognizerSettings): every command, the
service and the Python API refuse a bad value with the same one line."""
from __future__ import annotations

from pathlib import Path

import pytest

from fervid.cli import main
from fervid.errors import BadInputError
from fervid.recognition.settings import DETECT_SIZE, RecognizerSettings

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "fervid" / "assets" / "sample.jpg")

#: Every command that recognises faces, with what it needs besides the flag under test.
COMMANDS = {
    "predict": ["predict", SAMPLE],
    "video": ["video", "clip.mp4"],
    "webcam": ["webcam"],
    "serve": ["serve"],
    "visualize maps": ["visualize", "maps", SAMPLE, "-o", "maps.png"],
    "visualize gradcam": ["visualize", "gradcam", SAMPLE],
}
BAD = [(["--min-confidence", "1.5"], "--min-confidence must be a number in [0, 1], got 1.5"),
       (["--min-face", "-3"], "--min-face must be a whole number of pixels >= 0, got -3"),
       (["--detect-size", "32"], "--detect-size must be at least 64 pixels, got 32")]


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("flag,message", BAD, ids=[b[0][0] for b in BAD])
def test_a_bad_setting_is_the_same_one_line_in_every_command(command, flag, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(COMMANDS[command] + flag)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert err == [f"fervid {command.split()[0]}: error: {message}"]


def test_the_service_and_the_api_check_the_same_way():
    with pytest.raises(BadInputError, match=r"--min-confidence must be a number in \[0, 1\], got 1.5"):
        RecognizerSettings(min_confidence=1.5)
    serve = pytest.importorskip("fervid.serve.app")
    with pytest.raises(BadInputError, match=r"--min-confidence must be a number in \[0, 1\], got 1.5"):
        serve.ServeConfig(min_confidence=1.5)
    from fervid import Recognizer

    with pytest.raises(BadInputError, match="--threads must be a whole number >= 1, got 0"):
        Recognizer(threads=0)


def test_settings_normalise_and_default():
    s = RecognizerSettings(classes=" Happy, sad ,", prior="", min_face=30.0)
    assert s.classes == ("happy", "sad") and s.prior == "fer2013" and s.min_face == 30 and s.detect_size == DETECT_SIZE
    assert RecognizerSettings(classes="").classes is None
    assert s.replace(detect_size=320).detect_size == 320
    for bad in (dict(min_confidence=float("nan")), dict(min_confidence=True), dict(pad=1.0), dict(detect_size=300.5)):
        with pytest.raises(BadInputError):
            RecognizerSettings(**bad)
