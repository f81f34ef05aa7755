"""FER-2013 readers: both layouts, official splits, class sets, the cache and bad input.

Small CSVs and folders are generated from the committed faces in tests/data/fer, so every
expected count or pixel comes from the files themselves, not from hard-coded numbers.
"""
from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fervid import fer2013 as fdata
from fervid.data import FER_CLASSES, ClassSet, load_faces, read_source
from fervid.errors import BadInputError
from fervid.preprocess import equalize

ROOT = Path(__file__).resolve().parents[1]
TEST_FER = ROOT / "tests" / "data" / "fer"
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own empty cache, so no test sees another's (or the user's) files."""
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FERVID_CACHE", str(d))
    return d


def committed_faces(group: str) -> list[tuple[Path, str]]:
    """(file, emotion) of the committed faces of ``group`` (train/test), in the reader's order."""
    files = sorted((TEST_FER / group).glob("*/*.jpg"), key=lambda p: str(p.relative_to(TEST_FER)))
    return [(p, p.parent.name) for p in files]


def write_csv(path: Path, rows: list[tuple[object, object, object]], header=("emotion", "pixels", "Usage"),
              encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        w = csv.writer(fh)
        if header:
            w.writerow(header)
        w.writerows(rows)
    return path


def face_rows(usage_of_test: tuple[str, ...] = ("PublicTest", "PrivateTest")) -> list[tuple[int, str, str]]:
    """fer2013.csv rows for the committed faces: train -> Training, test faces alternate between
    the given test usages."""
    rows = []
    for p, emo in committed_faces("train"):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        rows.append((FER_CLASSES.index(emo), " ".join(map(str, img.ravel())), "Training"))
    for i, (p, emo) in enumerate(committed_faces("test")):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        rows.append((FER_CLASSES.index(emo), " ".join(map(str, img.ravel())), usage_of_test[i % len(usage_of_test)]))
    return rows


@pytest.fixture
def fer_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "fer2013.csv", face_rows())


# --- folder layout ------------------------------------------------------------------------------

def test_folder_layout_splits_counts_and_pixels():
    train, test = committed_faces("train"), committed_faces("test")
    fs = load_faces(TEST_FER, "train")
    assert len(fs) == len(train) and fs.classes == FER_CLASSES
    assert fs.images.dtype == np.uint8 and fs.images.shape == (len(train), 48, 48)
    assert fs.labels.dtype == np.int64
    assert fs.labels.tolist() == [FER_CLASSES.index(e) for _, e in train]
    assert fs.counts == {c: sum(e == c for _, e in train) for c in FER_CLASSES}
    # Every face comes out histogram-equalized, pixel for pixel.
    for i in (0, len(train) // 2, len(train) - 1):
        assert np.array_equal(fs.images[i], equalize(cv2.imread(str(train[i][0]), cv2.IMREAD_GRAYSCALE)))
    assert len(load_faces(TEST_FER, "test")) == len(test)
    assert len(load_faces(TEST_FER, "all")) == len(train) + len(test)
    # Official names read the file-name prefixes: Training_* / PublicTest_*.
    assert np.array_equal(load_faces(TEST_FER, "Training").images, fs.images)
    assert len(load_faces(TEST_FER, "PublicTest")) == len(test)
    both = load_faces(TEST_FER, "Training, PublicTest")
    assert len(both) == len(train) + len(test)


def _jpg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((48, 48), value, np.uint8)
    img[10:20, 10:30] = 255 - value  # not flat, so equalization has something to do
    assert cv2.imwrite(str(path), img)


def test_prefix_wins_and_folder_is_the_fallback(tmp_path):
    root = tmp_path / "fer"
    _jpg(root / "train" / "angry" / "a.jpg", 10)  # no prefix: the train folder says Training
    _jpg(root / "train" / "sad" / "PublicTest_1.jpg", 20)  # prefix wins over the folder
    _jpg(root / "test" / "happy" / "b.jpg", 30)  # no prefix: the test folder says test
    _jpg(root / "test" / "fear" / "PrivateTest_2.jpg", 40)
    _jpg(root / "test" / "neutral" / "Training_3.jpg", 50)

    def labels(split):
        return sorted(FER_CLASSES[i] for i in load_faces(root, split).labels)

    assert labels("Training") == labels("train") == ["angry", "neutral"]
    assert labels("test") == ["fear", "happy", "sad"]
    assert labels("PublicTest") == ["sad"]
    assert labels("PrivateTest") == ["fear"]
    assert labels("PublicTest,PrivateTest") == ["fear", "sad"]
    assert len(load_faces(root, "all")) == 5


def test_emotion_folders_without_split_level(tmp_path):
    root = tmp_path / "flat"
    _jpg(root / "happy" / "Training_1.jpg", 10)
    _jpg(root / "sad" / "PublicTest_2.jpg", 20)
    _jpg(root / "sad" / "mine.png", 30)  # unlabelled split: only in "all"
    (root / ".DS_Store").write_bytes(b"\0junk")  # hidden files and non-images are ignored
    (root / "notes.txt").write_text("not an image")
    assert load_faces(root, "Training").labels.tolist() == [FER_CLASSES.index("happy")]
    assert load_faces(root, "test").labels.tolist() == [FER_CLASSES.index("sad")]
    assert len(load_faces(root, "all")) == 3


# --- CSV ----------------------------------------------------------------------------------------

def test_csv_matches_folder_and_splits(fer_csv):
    folder_train = load_faces(TEST_FER, "train")
    csv_train = load_faces(fer_csv, "Training")
    assert np.array_equal(csv_train.images, folder_train.images)
    assert np.array_equal(csv_train.labels, folder_train.labels)
    assert np.array_equal(load_faces(fer_csv, "train").images, csv_train.images)
    n_test = len(committed_faces("test"))
    public, private = load_faces(fer_csv, "PublicTest"), load_faces(fer_csv, "PrivateTest")
    assert len(public) == (n_test + 1) // 2 and len(private) == n_test // 2
    # `test` on a CSV is PublicTest + PrivateTest, in file order.
    test = load_faces(fer_csv, "test")
    assert len(test) == n_test
    assert sorted(map(bytes, test.images)) == sorted(map(bytes, np.concatenate([public.images, private.images])))
    assert len(load_faces(fer_csv, "Training,PrivateTest")) == len(csv_train) + len(private)
    assert len(load_faces(fer_csv, "all")) == len(csv_train) + n_test
    raw = read_source(fer_csv)
    assert raw.images.shape == (len(csv_train) + n_test, 48, 48)


def test_csv_without_usage_and_with_bom(tmp_path):
    rows = [(r[0], r[1]) for r in face_rows()[:5]]
    path = write_csv(tmp_path / "plain.csv", rows, header=("emotion", "pixels"), encoding="utf-8-sig")
    fs = load_faces(path, "all")
    assert len(fs) == 5 and fs.labels.tolist() == [r[0] for r in rows]
    with pytest.raises(BadInputError, match="no faces"):
        load_faces(path, "Training")  # no Usage column: nothing is Training


# --- class sets ---------------------------------------------------------------------------------

def test_class_sets(fer_csv):
    full = load_faces(fer_csv, "all")
    per = full.counts
    assert tuple(ClassSet.parse("all").classes) == FER_CLASSES
    no_d = load_faces(fer_csv, "all", ClassSet.parse("no-disgust"))
    assert len(no_d.classes) == 6 and "disgust" not in no_d.classes
    assert len(no_d) == len(full) - per["disgust"] and set(no_d.labels.tolist()) == set(range(6))
    no_df = load_faces(fer_csv, "all", ClassSet.parse("no-disgust-fear"))
    assert no_df.classes == ("angry", "happy", "sad", "surprise", "neutral")
    assert len(no_df) == len(full) - per["disgust"] - per["fear"]
    custom = load_faces(fer_csv, "all", ClassSet.parse("sad, happy"))
    assert custom.classes == ("sad", "happy")
    assert custom.counts == {"sad": per["sad"], "happy": per["happy"]}
    # Labels index into the set, not FER numbering: the happy faces are the ones labelled 1.
    happy_full = full.images[full.labels == FER_CLASSES.index("happy")]
    assert np.array_equal(custom.images[custom.labels == 1], happy_full)
    merged = load_faces(fer_csv, "all", ClassSet.parse("no-disgust", "disgust:angry"))
    assert len(merged) == len(full)
    assert merged.counts["angry"] == per["angry"] + per["disgust"]
    assert "merged disgust->angry" in ClassSet.parse("no-disgust", "disgust:angry").describe()


@pytest.mark.parametrize("spec,merge", [("joy", None), ("happy,happy", None), ("", "disgust:angry"),
                                        ("no-disgust", "disgust:joy"), ("no-disgust", "disgust"),
                                        ("no-disgust", "happy:angry")])
def test_bad_class_sets(spec, merge):
    with pytest.raises(BadInputError):
        ClassSet.parse(spec, merge)


# --- cache --------------------------------------------------------------------------------------

def _spy(monkeypatch, name: str) -> list[int]:
    calls: list[int] = []
    real = getattr(fdata, name)

    def wrapped(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(fdata, name, wrapped)
    return calls


def test_cache_hit_and_invalidation_by_mtime_and_size(tmp_path, cache_dir, monkeypatch):
    root = tmp_path / "fer"
    shutil.copytree(TEST_FER, root)
    reads = _spy(monkeypatch, "_read_folder")
    first = load_faces(root, "all")
    assert reads == [1] and len(list(cache_dir.glob("*.npy"))) == 1
    again = load_faces(root, "all")
    assert reads == [1], "second load must come from the cache"
    assert np.array_equal(first.images, again.images) and np.array_equal(first.labels, again.labels)
    assert again.images.flags.writeable  # a private copy, not the read-only memory map

    one = next(root.glob("train/angry/*.jpg"))
    st = one.stat()
    os.utime(one, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touch
    load_faces(root, "all")
    assert reads == [1, 1], "a touched file must invalidate the cache"
    assert len(list(cache_dir.glob("*.npy"))) == 1, "the stale cache file is removed"

    _jpg(root / "train" / "happy" / "Training_new.jpg", 77)  # a new face
    assert len(load_faces(root, "all")) == len(first) + 1
    assert reads == [1, 1, 1]
    load_faces(root, "all", use_cache=False)
    assert reads == [1, 1, 1, 1]


def test_csv_cache_is_faster_and_follows_content(tmp_path, cache_dir):
    rows = face_rows() * 20  # ~1400 rows: parsing takes long enough to time
    path = write_csv(tmp_path / "big.csv", rows)
    # CPU time, not wall time: the test must hold on a busy machine too.
    t0 = time.process_time()
    first = load_faces(path, "all")
    t_first = time.process_time() - t0
    t0 = time.process_time()
    second = load_faces(path, "all")
    t_second = time.process_time() - t0
    assert np.array_equal(first.images, second.images)
    assert t_second < t_first / 3, (t_first, t_second)
    # Same size, new content: the mtime changes the key.
    rows2 = [(6 if r[0] == 3 else r[0], r[1], r[2]) for r in rows]  # happy (3) -> neutral (6)
    size = path.stat().st_size
    time.sleep(0.05)  # past the file system's timestamp granularity
    write_csv(path, rows2)
    assert path.stat().st_size == size
    third = load_faces(path, "all")
    assert third.counts["happy"] == 0 and third.counts["neutral"] == first.counts["neutral"] + first.counts["happy"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_cache_is_rebuilt(fer_csv, cache_dir, monkeypatch, damage):
    good = load_faces(fer_csv, "all")
    (cache,) = cache_dir.glob("*.npy")
    blob = cache.read_bytes()
    if damage == "truncate":
        cache.write_bytes(blob[: len(blob) // 2])
    elif damage == "garbage":
        cache.write_bytes(b"\x93NUMPY" + os.urandom(len(blob)))
    else:
        cache.write_bytes(b"")
    reads = _spy(monkeypatch, "_read_csv")
    rebuilt = load_faces(fer_csv, "all")
    assert reads == [1]
    assert np.array_equal(rebuilt.images, good.images) and np.array_equal(rebuilt.labels, good.labels)
    assert cache.stat().st_size == len(blob)  # rewritten whole
    load_faces(fer_csv, "all")
    assert reads == [1]


# --- bad input ----------------------------------------------------------------------------------

def _pixels(n: int = 48 * 48, value: str = "7") -> str:
    return " ".join([value] * n)


@pytest.mark.parametrize("rows,header,match", [
    ([(0, _pixels(), "Training"), (1, _pixels(2303), "Training")], None, r":3: 2303 pixels, expected 2304"),
    ([(0, _pixels(2303) + " x", "Training")], None, r":2: non-numeric pixel"),
    ([(0, _pixels(2303) + " 256", "Training")], None, r":2: pixel value outside 0-255"),
    ([(7, _pixels(), "Training")], None, r":2: unknown emotion label 7"),
    ([("happy", _pixels(), "Training")], None, r":2: emotion 'happy' is not a number"),
    ([(0, _pixels(), "Validation")], None, r":2: unknown Usage 'Validation'"),
    ([(0, _pixels())], None, r":2: expected 3 columns, found 2"),
    ([(0, "Training")], ("emotion", "Usage"), r"missing column\(s\) pixels"),
    ([], None, r"no data rows"),
])
def test_bad_csv_names_file_and_line(tmp_path, rows, header, match):
    path = write_csv(tmp_path / "bad.csv", rows, header=header or ("emotion", "pixels", "Usage"))
    with pytest.raises(BadInputError, match=match) as e:
        load_faces(path, "all")
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_not_a_csv(tmp_path):
    path = tmp_path / "fer.csv"
    path.write_bytes(b"\xff\xfe\x00binary\x00" * 10)
    with pytest.raises(BadInputError, match=str(path)):
        load_faces(path, "all")
    path.write_text("")
    with pytest.raises(BadInputError, match="empty file"):
        load_faces(path, "all")


def test_bad_folders(tmp_path):
    root = tmp_path / "fer"
    _jpg(root / "train" / "happy" / "Training_1.jpg", 10)
    _jpg(root / "train" / "joy" / "Training_2.jpg", 10)
    with pytest.raises(BadInputError, match=r"joy.*unknown emotion folder 'joy'"):
        load_faces(root, "all")
    shutil.rmtree(root / "train" / "joy")
    bad = root / "train" / "sad" / "Training_3.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is no jpeg")
    with pytest.raises(BadInputError, match=rf"{bad}: cannot read this image"):
        load_faces(root, "all")
    bad.unlink()
    with pytest.raises(BadInputError, match=r"split 'PublicTest' has no faces.*splits found: Training"):
        load_faces(root, "PublicTest")
    with pytest.raises(BadInputError, match=r"unknown split 'validation'"):
        load_faces(root, "validation")
    with pytest.raises(BadInputError, match="empty split"):
        load_faces(root, " , ")
    with pytest.raises(BadInputError, match="no such file or folder"):
        load_faces(tmp_path / "missing", "all")
    empty = tmp_path / "empty"
    (empty / "train" / "happy").mkdir(parents=True)
    with pytest.raises(BadInputError, match="no images found"):
        load_faces(empty, "all")
    deep = tmp_path / "deep"
    _jpg(deep / "a" / "train" / "happy" / "x.jpg", 10)
    with pytest.raises(BadInputError, match="expected <split>/<emotion>/<image>"):
        load_faces(deep, "all")


def test_class_set_without_faces_in_split(fer_csv):
    only_train = write_csv(fer_csv.parent / "t.csv", [r for r in face_rows() if r[2] == "Training"
                                                      and r[0] != FER_CLASSES.index("disgust")])
    with pytest.raises(BadInputError, match="has no faces of classes disgust"):
        load_faces(only_train, "Training", ClassSet.parse("disgust"))


# --- the full dataset, where this machine has it ------------------------------------------------

FULL_COUNTS = {  # /work/shared/README.md
    "Training": {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830,
                 "surprise": 3171},
    "PublicTest": {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "neutral": 607, "sad": 653,
                   "surprise": 415},
}


def test_full_dataset_counts_and_fast_second_load(monkeypatch):
    src = SHARED / "datasets" / "fer2013"
    if not src.is_dir():
        pytest.skip("../shared/datasets/fer2013 is not on this machine")
    # The user's cache: decoding 32k JPEGs once is slow, so a warm cache is kept between runs.
    if os.environ.get("FERVID_CACHE_FULL"):
        monkeypatch.setenv("FERVID_CACHE", os.environ["FERVID_CACHE_FULL"])
    else:
        monkeypatch.delenv("FERVID_CACHE")
    for split, expected in FULL_COUNTS.items():
        fs = load_faces(src, split)
        assert fs.counts == expected and len(fs) == sum(expected.values())
        assert fs.images.shape == (len(fs), 48, 48)
    cpu, wall = [], []
    for _ in range(3):
        t0, w0 = time.process_time(), time.perf_counter()
        fs = load_faces(src, "Training")
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    print(f"cached full load of Training: CPU {min(cpu):.3f}s, wall {min(wall):.3f}s (best of 3)")
    assert len(fs) == 28709
    # The work a load does (scan 32k file stats, map the cache, copy the split) is well under
    # a second; CPU time is asserted because wall time on a shared machine measures the others.
    assert min(cpu) < 0.5, cpu


def test_old_cache_format_is_cleaned_up(fer_csv, cache_dir):
    v1 = cache_dir / "fer-0123456789abcdef0123.npz"
    v1.write_bytes(b"old compressed cache")
    other = cache_dir / "notes.npz"
    other.write_bytes(b"not ours")
    load_faces(fer_csv, "all")
    assert not v1.exists() and other.exists()


# --- preprocessing (the existing helpers the readers and models rely on) ------------------------

def test_to_gray_and_equalize():
    from fervid.preprocess import equalize_batch, to_gray

    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    gray = to_gray(bgr)
    assert gray.shape == (20, 30) and np.array_equal(gray, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    bgra = np.dstack([bgr, np.full((20, 30), 255, np.uint8)])
    assert np.array_equal(to_gray(bgra), gray)
    assert to_gray(gray) is gray and np.array_equal(to_gray(gray[:, :, None]), gray)
    with pytest.raises(ValueError):
        to_gray(np.zeros((4, 4, 2), np.uint8))
    faces = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p, _ in committed_faces("test")[:5]])
    before = faces.copy()
    eq = equalize_batch(faces)
    assert np.array_equal(faces, before), "equalize_batch must not write into its input"
    assert all(np.array_equal(eq[i], equalize(faces[i])) for i in range(len(faces)))
    assert eq.min() == 0 and eq.max() == 255


def test_normalize_matches_the_constants_it_promises():
    from fervid.preprocess import MEAN, STD, normalize

    fs = load_faces(TEST_FER, "all")
    x = normalize(fs.images)
    assert x.shape == (len(fs), 1, 48, 48) and x.dtype == np.float32
    # Equalized faces are near-uniform on 0..255: normalised, each face is ~N(0, 1)-scaled.
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1.0) < 0.05
    assert np.allclose(x[0, 0], (fs.images[0] / 255.0 - MEAN) / STD, atol=1e-6)
