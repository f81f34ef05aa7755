"""``fervid predict --ray`` and ``fervid video --ray`` on a local Ray (2 CPUs), against the
single-process commands on the same inputs, and a worker killed mid-run.

One Ray instance serves the whole module (starting Ray costs seconds). ``RAY_ADDRESS`` in the
environment points the tests at a Ray already running instead (``ray start --head``).
"""
from __future__ import annotations

import csv
import io
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from fervid.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "fervid" / "assets" / "sample.jpg"
ACTOR_TITLE = "MapBatches(RecognizeBatch)"


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(include_dashboard=False)
        else:
            try:
                ray.init(address="local", num_cpus=2, include_dashboard=False,
                         object_store_memory=200 * 1024 * 1024)
            except Exception as e:  # noqa: BLE001
                # Ray's raylet gives its agents a fixed 15 s to start (ray-project/ray#65983); on a machine
                # too busy for that, Ray cannot start at all, which says nothing about fervid's code.
                ray.shutdown()
                pytest.skip(f"a local Ray could not start here: {str(e).splitlines()[0]}")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture()
def photos(tmp_path, paste, fer_faces):
    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    frame, _ = paste([fer_faces[0][i] for i in (0, 13, 27)], [160, 140, 120], canvas=(400, 600))
    cv2.imwrite(str(d / "group.png"), frame)
    cv2.imwrite(str(d / "astronaut.jpg"), cv2.imread(str(SAMPLE)))
    empty, _ = paste([], [], canvas=(240, 320))
    cv2.imwrite(str(d / "sub" / "wall.jpg"), empty)
    (d / "sub" / "text.jpg").write_text("this is text, not a JPEG\n")
    (d / "sub" / "zero.jpg").write_bytes(b"")
    return d


def _csv_rows(texts: list[str]) -> tuple[list[str], list[tuple]]:
    header, rows = None, []
    for text in texts:
        reader = csv.reader(io.StringIO(text))
        h = next(reader)
        assert header is None or h == header
        header = h
        rows += [tuple(r) for r in reader]
    return header, sorted(rows)


def test_predict_ray_rows_equal_single_process(local_ray, photos, tmp_path, capsys):
    missing = str(tmp_path / "missing.jpg")
    single, shards = tmp_path / "single", tmp_path / "ray"
    assert main(["predict", str(photos), missing, "-o", str(single), "--no-annotate", "--threads", "1", "-q"]) == 2
    assert main(["predict", "--ray", str(photos), missing, "-o", str(shards), "--workers", "2",
                 "--batch-size", "2", "-q"]) == 2
    err = capsys.readouterr().err
    assert "missing.jpg: no such file or folder" in err and "text.jpg" in err
    one = _csv_rows([(single / "predictions.csv").read_text()])
    many = _csv_rows([p.read_text() for p in sorted((shards / "csv").glob("part-*.csv"))])
    assert one == many and len(one[1]) == 3 + 1 + 1 + 3  # 3 faces, astronaut, wall, 3 errors

    from fervid.recognition.scaleout import read_table

    table = read_table(shards)
    assert table.num_rows == len(many[1])
    assert sorted(table.column("file").to_pylist()) == sorted(r[0] for r in many[1])
    ok = [r for r in table.to_pylist() if r["status"] == "ok"]
    assert all(len(r["landmarks"]) == 10 and r["emotion"] for r in ok)

    # a second run refuses to mix its shards with the first's
    assert main(["predict", str(photos), "-o", str(shards), "-q", "--ray"]) == 2


def test_recognize_dataset_takes_a_users_dataset_of_bytes(local_ray, photos, tmp_path):
    from fervid.recognition.scaleout import recognize_dataset

    ds = ray.data.read_binary_files(str(photos / "astronaut.jpg"), include_paths=True)
    rows = recognize_dataset(ds, workers=1, batch_size=4).take_all()
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["file"].endswith("astronaut.jpg")
    assert rows[0]["emotion"] in [c[2:] for c in rows[0] if c.startswith("p_")]


def test_video_ray_outputs_equal_single_process(local_ray, tmp_path, capsys):
    from test_video import make_clip

    a, b, bad = tmp_path / "a.mp4", tmp_path / "b.mp4", tmp_path / "bad.mp4"
    make_clip(a, frames=8)
    make_clip(b, n_faces=1, frames=6)
    bad.write_text("not a video")
    single = tmp_path / "single"
    for clip in (a, b):
        assert main(["video", str(clip), "-o", str(single / f"{clip.stem}.fervid.mp4"), "--threads", "1",
                     "--quiet"]) == 0
    out = tmp_path / "ray"
    assert main(["video", "--ray", str(a), str(b), str(bad), "--out-dir", str(out), "--quiet"]) == 2
    assert "bad.mp4" in capsys.readouterr().err
    for clip in (a, b):
        name = f"{clip.stem}.fervid"
        assert (out / f"{name}.csv").read_bytes() == (single / f"{name}.csv").read_bytes()
        assert sorted(p.name for p in (out / f"{name}_timelines").iterdir()) == \
            sorted(p.name for p in (single / f"{name}_timelines").iterdir())
        assert cv2.VideoCapture(str(out / f"{name}.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == \
            cv2.VideoCapture(str(single / f"{name}.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)
    assert not list(out.glob("bad*"))


def _actor_pids() -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and ACTOR_TITLE in cmd:
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor's process in /proc")
def test_a_killed_worker_loses_and_duplicates_nothing(local_ray, tmp_path, paste, fer_faces):
    from fervid.recognition.scaleout import predict

    d = tmp_path / "many"
    d.mkdir()
    n = 48
    for i in range(n):
        frame, _ = paste([fer_faces[0][i % 30]], [120], canvas=(200, 260), seed=i)
        cv2.imwrite(str(d / f"img{i:03d}.jpg"), frame)
    out = tmp_path / "out"
    result: dict = {}

    def run():
        try:
            result["summary"] = predict([str(d)], out, workers=2, batch_size=2, progress=False)
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    killed, first_seen = None, None
    deadline = time.monotonic() + 300
    while t.is_alive() and time.monotonic() < deadline and killed is None:
        pids = _actor_pids()
        busy = []
        for p in pids:
            try:
                if ").submit" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"):
                    busy.append(p)
            except OSError:
                pass
        first_seen = first_seen or (time.monotonic() if pids else None)
        victim = busy[0] if busy else (pids[0] if pids and time.monotonic() - first_seen > 3 else None)
        if victim:
            os.kill(victim, signal.SIGKILL)  # an actor mid-run: Ray restarts it and retries its batches
            killed = victim
        time.sleep(0.05)
    assert killed is not None, "no actor was seen working before the run ended"
    t.join(600)
    assert "error" not in result, result.get("error")
    assert not Path(f"/proc/{killed}").exists()  # it did die; Ray carried on with a new actor
    rows = [r for p in sorted((out / "csv").glob("part-*.csv")) for r in csv.DictReader(p.open())]
    files = [r["file"] for r in rows]
    assert sorted(set(files)) == sorted(str(p) for p in d.glob("*.jpg"))  # every input...
    keys = [(r["file"], r["face"]) for r in rows]
    assert len(keys) == len(set(keys))  # ...exactly once
    assert result["summary"].images == n and result["summary"].rows == len(rows)
