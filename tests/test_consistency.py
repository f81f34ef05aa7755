"""One way of doing each thing across outputs: colours, table columns, where caches go."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def test_timeline_lines_use_the_box_colours(tmp_path):
    """A timeline's happy line is drawn in the BGR colour annotated boxes use for happy."""
    from fervid.recognition.draw import color_for
    from fervid.recognition.timeline import plot_timeline

    t = np.linspace(0, 5, 50)
    probs = np.tile([0.8, 0.2], (50, 1))  # apart, so neither line hides the other
    path = plot_timeline(t, probs, ["happy", "sad"], tmp_path / "t.png")
    img = cv2.imread(str(path)).astype(int)
    for emotion in ("happy", "sad"):
        near = np.abs(img - np.array(color_for(emotion))).sum(axis=2) <= 12
        assert near.sum() > 100, f"no line in the {emotion} box colour"


def test_predict_and_video_tables_name_probability_columns_alike():
    from fervid.recognition.image_files import TableWriter, row_probabilities
    from fervid.recognition.video import csv_header

    predict_cols = TableWriter(io.StringIO(), "csv", CLASSES).columns
    video_cols = csv_header(CLASSES)
    probs_p = [c for c in predict_cols if c.startswith("p_")]
    probs_v = [c for c in video_cols if c.startswith("p_")]
    assert probs_p == probs_v == [f"p_{c}" for c in CLASSES]
    shared = ["x", "y", "w", "h", "score", "emotion", "confidence"]
    assert all(c in predict_cols and c in video_cols for c in shared)
    # a video CSV written before the rename (bare class columns) still reads
    old = "frame,happy,sad\n3,0.25,0.75\n"
    row = next(csv.DictReader(io.StringIO(old)))
    assert row_probabilities(row, ["happy", "sad"]) == {"happy": 0.25, "sad": 0.75}
    new = next(csv.DictReader(io.StringIO("frame,p_happy,p_sad\n3,0.5,0.5\n")))
    assert row_probabilities(new, ["happy", "sad"]) == {"happy": 0.5, "sad": 0.5}


def test_tests_cache_outside_the_users_home():
    """tests/conftest.py points XDG_CACHE_HOME at a private folder; data.py's cache follows it."""
    from fervid.fer2013 import _cache_dir

    home_cache = Path(os.path.expanduser("~/.cache")).resolve()
    where = _cache_dir().resolve()
    assert home_cache not in where.parents and where.parent == Path(os.environ["XDG_CACHE_HOME"]).resolve()
