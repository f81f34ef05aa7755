"""Writes are atomic and never overwrite silently.

A process is SIGKILLed while it writes (a model through ``save_model``, a training state,
a CSV through ``atomic_path``, ``fervid video``'s outputs): the good file that was there
stays byte-for-byte, and what the kill leaves behind is a hidden ``.NAME.*.tmp.EXT`` that no
fervid reader takes for an output. Then every CLI command that writes files is run twice:
without ``--overwrite`` the second run is refused in one line and touches nothing
(``fervid train`` has no --overwrite: it refuses a folder that holds a run, see test_train_cli).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid.cli import main
from fervid.errors import BadInputError
from fervid.files import atomic_path
from fervid.modelfile import resolve

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ONNX = ROOT / "fervid" / "assets" / "model.onnx"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def temps(folder: Path, name: str) -> list[Path]:
    stem, suffix = Path(name).stem, Path(name).suffix
    return sorted(folder.glob(f".{stem}.*.tmp{suffix}"))


def kill_while_writing(script: str, folder: Path, name: str, min_bytes: int = 1, after: Path | None = None,
                       timeout: float = 120) -> list[Path]:
    """Run ``script``; SIGKILL it once a temporary file for ``name`` holds ``min_bytes``
    (and, if given, once ``after`` exists). Returns the temporary files left behind: their
    existence proves the kill came between the start of a write and its rename.
    """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            ready = after is None or after.exists()
            if ready and any(t.stat().st_size >= min_bytes for t in temps(folder, name) if t.exists()):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.001)
        out = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, f"the writer ended before it was killed:\n{out}"
    left = temps(folder, name)
    assert left, "killed with no temporary file: not mid-write"
    return left


def test_atomic_path_refuses_a_name_taken_while_it_wrote(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(BadInputError, match="out.csv: already exists"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("mine")
            target.write_text("another process got here first")
    assert target.read_text() == "another process got here first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_sigkill_mid_csv_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    target.write_text("file,emotion\ngood.jpg,happy\n")
    script = f"""
        from fervid.files import atomic_path
        with atomic_path({str(target)!r}) as tmp, open(tmp, "w") as fh:
            for i in range(10_000_000):
                fh.write(f"row{{i}}.jpg,neutral\\n")
                if i % 1000 == 0:
                    fh.flush()
        """
    left = kill_while_writing(script, tmp_path, target.name, min_bytes=100_000)
    assert target.read_text() == "file,emotion\ngood.jpg,happy\n"
    assert all(p.name.startswith(".") for p in left)


@pytest.mark.parametrize("what", ["model", "state"])
def test_sigkill_mid_checkpoint_keeps_the_old_one(tmp_path, what):
    """A model (safetensors) or a training state (torch.save) saved again and again, each time with
    every weight 1 higher, and killed in the middle of a save after the first one completed."""
    torch = pytest.importorskip("torch")
    from fervid.training import checkpoint as ckpt
    from fervid.models import create_model

    name = "best.safetensors" if what == "model" else "last.pt"
    target = tmp_path / name
    script = f"""
        import torch
        from fervid.training import checkpoint as ckpt
        from fervid.models import create_model
        torch.manual_seed(0)
        model = create_model("vgg_l", num_classes=7)  # 40 MB: a save takes a while
        meta = ckpt.make_meta("vgg_l", ["a", "b", "c", "d", "e", "f", "g"])
        while True:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
            if {what == "model"}:
                ckpt.save_model({str(target)!r}, model, meta)
            else:
                ckpt.save_training_state({str(target)!r}, {{"model": model.state_dict(), "epoch": 0}})
        """
    left = kill_while_writing(script, tmp_path, name, after=target)
    if what == "model":
        state = ckpt.load_model(target)[0].state_dict()  # loads: complete and valid
    else:
        state = ckpt.load_training_state(target)["model"]
    torch.manual_seed(0)
    init = create_model("vgg_l", num_classes=7).state_dict()
    saves = {round(float((state[k] - init[k]).flatten()[0])) for k in init if k.endswith("weight")}
    assert len(saves) == 1 and saves.pop() >= 1, "the file is not one whole save"
    for k in init:
        if k.endswith("weight"):
            assert torch.allclose(state[k] - init[k], (state[k] - init[k]).flatten()[0].expand_as(init[k])), k
    assert all(p.name.startswith(".") and ".tmp" in p.name for p in left)
    if what == "model":  # a run folder resolves to the real model, never to the leftover
        assert resolve(tmp_path, torch_only=True) == target


def _clip(path: Path, frames: int) -> Path:
    photo = cv2.resize(cv2.imread(str(ROOT / "fervid" / "assets" / "sample.jpg")), (320, 240))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(frames):
        w.write(np.roll(photo, i, axis=1))
    w.release()
    return path


def test_sigkill_mid_fervid_video_keeps_the_old_outputs(tmp_path):
    clip = _clip(tmp_path / "clip.avi", 400)
    out = tmp_path / "out"
    out.mkdir()
    video, table = out / "annotated.avi", out / "annotated.csv"
    assert main(["video", str(_clip(tmp_path / "short.avi", 3)), "-o", str(video), "--no-timeline", "--quiet",
                 "--model", str(SHIPPED_ONNX), "--threads", "1"]) == 0
    good = {p: p.read_bytes() for p in (video, table)}
    script = f"""
        import sys
        from fervid.cli import main
        sys.exit(main(["video", {str(clip)!r}, "-o", {str(video)!r}, "--no-timeline", "--quiet", "--overwrite",
                       "--model", {str(SHIPPED_ONNX)!r}, "--threads", "1"]))
        """
    left = kill_while_writing(script, out, video.name, min_bytes=200_000)
    assert {p: p.read_bytes() for p in (video, table)} == good, "the kill damaged the previous outputs"
    assert all(p.name.startswith(".") for p in out.iterdir() if p not in good)
    assert left and temps(out, table.name), "both outputs were being written when killed"
    # The leftovers are hidden and are not outputs: the next run without --overwrite still
    # refuses to replace the real ones.
    assert main(["video", str(clip), "-o", str(video), "--no-timeline", "--quiet", "--model", str(SHIPPED_ONNX)]) == 2


# --- no silent overwrite: every CLI command that writes files --------------------------------------

def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _writers(tmp_path: Path) -> dict[str, list[str]]:
    """argv of each file-writing command, all writing under tmp_path/out."""
    o = tmp_path / "out"
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), cv2.imread(str(ROOT / "fervid" / "assets" / "sample.jpg")))
    clip = _clip(tmp_path / "clip.avi", 4)
    fer = ROOT / "tests" / "data" / "fer"
    cmds = {
        "predict": ["predict", str(photo), "-o", str(o / "predict"), "--threads", "1"],
        "video": ["video", str(clip), "-o", str(o / "video" / "clip.avi"), "--quiet", "--threads", "1"],
        "evaluate": ["evaluate", "--model", str(SHIPPED_ONNX), "--data", str(fer), "--split", "test",
                     "--out-dir", str(o / "evaluate")],
    }
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.3, "val_loss": 1.1 / e,
                                           "val_acc": 0.3 + e / 100}) + "\n" for e in (1, 2, 3)))
    cmds["plot"] = ["plot", str(metrics), "-o", str(o / "plot" / "curves.png")]
    try:
        from fervid.training.checkpoint import make_meta, save_model  # needs PyTorch
        from fervid.models import create_model

        model = tmp_path / "tiny.safetensors"
        save_model(model, create_model("vgg_tiny", 7), make_meta("vgg_tiny", ["angry", "disgust", "fear", "happy",
                                                                             "sad", "surprise", "neutral"]))
        cmds["export"] = ["export", str(model), "-o", str(o / "export" / "tiny.onnx")]
    except ImportError:
        pass
    return cmds


def test_every_writing_command_refuses_to_overwrite(tmp_path, capsys):
    pytest.importorskip("sklearn")
    cmds = _writers(tmp_path)
    out = tmp_path / "out"
    for name, argv in cmds.items():
        assert main(argv) == 0, f"{name}: {capsys.readouterr().err}"
        capsys.readouterr()
        before = _snapshot(out)
        assert any(k.startswith(name) for k in before), f"{name} wrote nothing under {out}"
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, f"{name}: second run without --overwrite exited {code}"
        lines = [x for x in err.splitlines() if x.strip()]
        assert len(lines) == 1 and "already exists" in lines[0] and "--overwrite" in lines[0], (name, lines)
        assert _snapshot(out) == before, f"{name}: a refused run changed files"
        assert main(argv + ["--overwrite"]) == 0, name
        capsys.readouterr()
        after = _snapshot(out)
        assert after.keys() == before.keys()
        assert any(after[k][1] != before[k][1] for k in after if k.startswith(name)), f"{name}: nothing rewritten"

