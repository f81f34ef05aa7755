"""Issue #26: special files, self-links, huge sparse files, unwritable outputs and full disks.

Inputs come from ``scripts/make_corpus.py``'s ``special`` cases. Every run that could hang
on a FIFO or read ``/dev/zero`` without end goes to a subprocess with a timeout, so a
regression fails this test instead of stalling the suite; those runs also report their
peak RSS, which must stay far below the 2 GB a sparse file would cost if read whole.
Full-disk tests mount a small tmpfs (root only) and are skipped where that is not allowed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.cli import main

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ONNX = ROOT / "fervid" / "assets" / "model.onnx"
TEST_FER = ROOT / "tests" / "data" / "fer"
TRAIN = ["--train-split", "train", "--val-split", "test", "--model", "vgg_tiny", "--batch-size", "8",
         "--threads", "1", "--device", "cpu", "--no-progress"]
if "make_corpus" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "scripts" / "make_corpus.py")
    sys.modules["make_corpus"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["make_corpus"])
make_corpus = sys.modules["make_corpus"]
# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's RSS at fork into the child's
# ru_maxrss across exec, so under a large pytest process it would report pytest's size.
RUNNER = ("import sys\nfrom fervid.cli import main\nrc = main(sys.argv[1:])\n"
          "hwm = [ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')]\n"
          "print('MAXRSS_KB', hwm[0] if hwm else 'nan', file=sys.stderr)\nsys.exit(rc)")


@pytest.fixture(scope="module")
def special(tmp_path_factory) -> dict:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    return {c.name: c for c in make_corpus.special_cases(tmp_path_factory.mktemp("special"))}


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FERVID_CACHE", str(tmp_path_factory.mktemp("cache")))


def fervid(argv: list, cwd: Path, timeout: float = 240) -> tuple[int, str, str, float]:
    """``fervid ARGV`` in a subprocess: exit code, stdout, stderr (without the RSS line), peak RSS in MB."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), "FERVID_CACHE": str(cwd / "cache")}
    try:
        proc = subprocess.run([sys.executable, "-c", RUNNER, *map(str, argv)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fervid {' '.join(map(str, argv))} hung (no exit within {timeout:g} s)")
    rss = [ln for ln in proc.stderr.splitlines() if ln.startswith("MAXRSS_KB ")]
    err = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("MAXRSS_KB "))
    return proc.returncode, proc.stdout, err, float(rss[0].split()[1]) / 1024 if rss else float("nan")


def cli(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error_line(cmd: str, err: str, *words: str) -> str:
    """The single ``fervid CMD: error:`` line of ``err``, checked to hold ``words``; no traceback."""
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith(f"fervid {cmd}: error: ")]
    assert len(errors) == 1, err
    for w in words:
        assert str(w) in errors[0], (w, errors[0])
    return errors[0]


# --- inputs ----------------------------------------------------------------------------------------

def test_predict_refuses_special_files_skips_them_in_folders_and_reads_no_more_than_a_header(special, tmp_path):
    """Items 1, 2, 3 and 7 (link loop): one process over every special input; it must end,
    say one line per bad path, process the good photos (the self-linked folder once) and
    stay small."""
    refused = [c for c in special.values() if c.extra["entry"] == "input" and c.expect == "error"
               and c.path.suffix != ".csv"]
    folders = [special["folder_with_fifo"], special["self_links"]]
    pattern = f"{special['self_links'].path}/**/*.jpg"  # glob's ** followed the links too
    code, out, err, rss = fervid(["predict", *[c.path for c in refused + folders], pattern, "-o", tmp_path / "out",
                                  "--format", "jsonl", "--threads", "1", "--model", SHIPPED_ONNX], tmp_path)
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("fervid predict: error: ")]
    for c in refused:
        mine = [ln for ln in lines if f"error: {c.path}: " in ln]
        assert len(mine) == 1 and c.problem in mine[0], (c.name, lines)
    pipe = special["folder_with_fifo"].path / "pipe.jpg"
    assert any(f"error: {pipe}: " in ln and "FIFO" in ln and "skipped" in ln for ln in lines), lines
    rows = [__import__("json").loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    for folder in folders:
        photo = [r for r in rows if r["file"] == str(folder.path / "photo.jpg")]
        assert photo and all(r["status"] == "ok" for r in photo), (folder.name, rows)
    assert not [r for r in rows if "/s1/" in r["file"] or "/s2/" in r["file"]]  # the self-links are not entered
    assert code == 2
    assert f"{len(refused) + 1} failed" in out.strip().splitlines()[-1], out
    assert rss < 600, f"peak RSS {rss:.0f} MB: a file was read whole"


@pytest.mark.parametrize("name", ["fifo.csv", "/dev/zero"])
def test_evaluate_refuses_a_fifo_or_device_as_data(special, tmp_path, name):
    """Item 1: evaluate --data on a FIFO blocked forever, on /dev/zero it read without end."""
    pytest.importorskip("sklearn")
    if name not in special:
        pytest.skip(f"{name} is not available here")
    c = special[name]
    code, _, err, rss = fervid(["evaluate", "--model", SHIPPED_ONNX, "--data", c.path, "--split", "all",
                                "--out-dir", tmp_path / "eval"], tmp_path, timeout=180)
    one_error_line("evaluate", err, c.path, c.problem)
    assert code == 2 and rss < 600


def test_video_and_python_api_refuse_special_files(special, capsys, tmp_path):
    from fervid.errors import BadInputError
    from fervid.images import read_image

    for name in ("fifo.jpg", "/dev/zero", "link_loop.jpg"):
        if name not in special:
            continue
        c = special[name]
        code, _, err = cli(["video", c.path, "-o", tmp_path / "v.avi", "--no-timeline", "--quiet",
                            "--model", SHIPPED_ONNX], capsys)
        one_error_line("video", err, c.path, c.problem)
        assert code == 2
        with pytest.raises(BadInputError, match=c.problem):
            read_image(c.path)
    with pytest.raises(BadInputError, match="no image header"):
        read_image(special["zeros_100mb.jpg"].path)


# --- outputs that cannot be written ---------------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 40-frame 320x240 MJPG clip of the shipped photo (about 200 KB written back as MP4)."""
    photo = cv2.resize(cv2.imread(str(ROOT / "fervid" / "assets" / "sample.jpg")), (320, 240))
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(40):
        w.write(np.roll(photo, 3 * i, axis=1))
    w.release()
    return path


def test_outputs_under_a_regular_file_are_one_line(special, clip, capsys):
    """Item 5: -o somefile/out in predict, video and evaluate --out-dir."""
    case = special["blocker/out"]
    blocker, target = case.extra["blocker"], case.path
    photo = special["self_links"].path / "photo.jpg"
    runs = [("predict", [photo, "-o", target, "--threads", "1", "--model", SHIPPED_ONNX]),
            ("video", [clip, "-o", target / "o.mp4", "--quiet", "--threads", "1", "--model", SHIPPED_ONNX]),
            ("video", [clip, "-o", blocker.parent / "o.avi", "--csv", target / "o.csv", "--quiet",
                       "--model", SHIPPED_ONNX])]
    if importlib.util.find_spec("sklearn"):
        runs.append(("evaluate", ["--model", SHIPPED_ONNX, "--data", TEST_FER, "--split", "test",
                                  "--out-dir", target]))
    for cmd, argv in runs:
        code, _, err = cli([cmd, *argv], capsys)
        one_error_line(cmd, err, target, f"{blocker} is a file, not a folder")
        assert code == 2, (cmd, err)
    assert blocker.is_file() and not list(blocker.parent.glob(".o.*"))


def test_training_outputs_under_a_regular_file_are_one_line(special, tiny_model, capsys):
    """Item 5: export -o, train --out and plot -o under a file."""
    case = special["blocker/out"]
    blocker, target = case.extra["blocker"], case.path
    runs = [("export", [tiny_model, "-o", target / "m.onnx"]),
            ("train", ["--data", TEST_FER, *TRAIN, "--epochs", "1", "--out", target]),
            ("train", ["--data", TEST_FER, *TRAIN, "--epochs", "1", "--out", blocker]),
            ("plot", [tiny_model.parent, "-o", target / "curves.png"])]
    for cmd, argv in runs:
        code, _, err = cli([cmd, *argv], capsys)
        one_error_line(cmd, err, "is a file, not a folder" if argv[-1] != blocker else "not a folder")
        assert code == 2, (cmd, err)


# --- full disks -------------------------------------------------------------------------------------

@pytest.fixture
def tiny_fs(tmp_path):
    """``mount(size_kb)`` -> a folder on a tmpfs of that size; skipped where mounting is not allowed."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = []

    def mount(size_kb: int) -> Path:
        if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("a small tmpfs needs root")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for m in mounted:
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def test_video_on_a_full_disk_publishes_nothing(tiny_fs, clip, capsys):
    """Item 4: the video (about 200 KB) cannot fit; nothing keeps a final name, one line, exit 2."""
    disk = tiny_fs(120)
    code, out, err = cli(["video", clip, "-o", disk / "o.mp4", "--quiet", "--threads", "1",
                          "--model", SHIPPED_ONNX], capsys)
    one_error_line("video", err, disk / "o", "no space left on device")
    assert code == 2
    assert sorted(p.name for p in disk.rglob("*")) == [], list(disk.rglob("*"))


def test_a_silently_failing_video_writer_is_caught(tmp_path, clip):
    """Item 4: a video missing frames (what a full disk leaves) is refused by the check before publishing."""
    from fervid.errors import OutputError
    from fervid.recognition.video_writer import count_frames, verify_video

    data = clip.read_bytes()
    torn = tmp_path / "torn.avi"
    torn.write_bytes(data[: len(data) // 2])
    assert count_frames(clip) == 40
    verify_video(clip, 40, clip)
    with pytest.raises(OutputError, match="holds .* of 40 frames"):
        verify_video(torn, 40, tmp_path / "o.avi")


def test_export_and_train_on_a_full_disk_are_one_line(tiny_fs, tiny_model, capsys):
    """Item 5: torch.save and the ONNX writer on a full disk: one line, exit 2, no torn file."""
    disk = tiny_fs(48)
    code, _, err = cli(["export", tiny_model, "-o", disk / "m.onnx"], capsys)
    one_error_line("export", err, disk / "m.onnx", "no space left on device")
    assert code == 2 and not list(disk.glob("*.onnx")) and not list(disk.glob(".m.*"))
    code, _, err = cli(["train", "--data", TEST_FER, *TRAIN, "--epochs", "1", "--out", disk / "run"], capsys)
    one_error_line("train", err, disk / "run", "no space left on device")
    assert code == 2
    left = [p.name for p in (disk / "run").iterdir()] if (disk / "run").exists() else []
    assert not [n for n in left if n.startswith(".")], left  # no temporaries
    for name in ("best.safetensors", "last.pt"):
        if name in left:  # whatever has its final name must be whole
            from fervid.training.checkpoint import load_model, load_training_state

            (load_model if name.endswith(".safetensors") else load_training_state)(disk / "run" / name)


# --- smaller items (7) -------------------------------------------------------------------------------

def test_a_one_pixel_video_is_processed(tmp_path, capsys):
    path = tmp_path / "one.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (1, 1))
    for _ in range(5):
        w.write(np.full((1, 1, 3), 100, np.uint8))
    w.release()
    code, _, err = cli(["video", path, "-o", tmp_path / "o.mp4", "--no-timeline", "--quiet",
                        "--model", SHIPPED_ONNX], capsys)
    assert code == 0, err
    from fervid.recognition.video_writer import count_frames

    assert count_frames(tmp_path / "o.mp4") == 5 and "padded" in err


def test_resume_finds_relative_data_from_another_folder(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from fervid.training import checkpoint as ckpt

    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    shutil.copytree(TEST_FER, first / "fer")
    monkeypatch.chdir(first)
    code, _, err = cli(["train", "--data", "fer", *TRAIN, "--epochs", "1", "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    state = ckpt.load_training_state(tmp_path / "run" / "last.pt")
    state["config"]["epochs"] = 2  # as if killed after epoch 1 of 2
    ckpt.save_training_state(tmp_path / "run" / "last.pt", state)
    monkeypatch.chdir(elsewhere)
    code, out, err = cli(["train", "--resume", tmp_path / "run", "--no-progress"], capsys)
    assert code == 0, err
    assert "epoch 2/2" in out
