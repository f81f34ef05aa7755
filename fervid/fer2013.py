"""FER-2013 as Kaggle ships it: ``fer2013.csv`` or the ``train/<emotion>/*.jpg`` folder layout.

Both readers produce the same thing: every face decoded to 48x48 uint8, its label in
the CSV's numbering, the official split it came from (``Usage`` column or file-name
prefix) and the folder it was found in. Decoding 30k JPEGs takes seconds, so the
decoded arrays are cached, keyed by the source's sizes and mtimes: raw and equalized
faces side by side in one uncompressed ``.npy`` that is memory-mapped on the next load
(the faces are JPEG noise, so compression saved ~8% of the space and cost a second of
decompression and equalization on every load). Faces are histogram-equalized on the
way out (see :mod:`fervid.preprocess`) because the public Training copy is already
equalized and every other source is raw.

This is the reader; :mod:`fervid.data` gives the faces of a split, from here or from
:mod:`fervid.ferplus`.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import os
import re
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .classes import FER_CLASSES
from .errors import BadInputError
from .files import HEAD_BYTES, open_input, special_kind, stat_input
from .images import looks_truncated
from .opencv_log import quiet_opencv
from .preprocess import FACE_SIZE, equalize_batch

#: Official splits in the CSV's ``Usage`` column; index is the stored code.
USAGES: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest", "Unknown")
#: Folder a face was found in (Kaggle layout), used when a file has no split prefix.
GROUPS: tuple[str, ...] = ("train", "test", "none")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_", re.IGNORECASE)
_CACHE_VERSION = 2
#: One record per face in the cache file; a structured dtype keeps it one memory-mappable array.
_CACHE_DTYPE = np.dtype([("raw", np.uint8, (FACE_SIZE, FACE_SIZE)), ("eq", np.uint8, (FACE_SIZE, FACE_SIZE)),
                         ("label", np.uint8), ("usage", np.uint8), ("group", np.uint8)])


@dataclass
class RawFer:
    """Every face of a source, undecided about splits and classes.

    From the cache, ``images`` and ``equalized`` are read-only memory maps: index them
    (which copies) rather than writing into them.
    """

    images: np.ndarray  # uint8 [N, 48, 48], as stored (not equalized)
    labels: np.ndarray  # int64 [N], FER numbering
    usage: np.ndarray  # int8 [N], index into USAGES
    group: np.ndarray  # int8 [N], index into GROUPS
    source: str = ""
    #: The same faces equalized, when the cache already holds them (else ``load_faces`` equalizes).
    equalized: np.ndarray | None = None


@dataclass
class FaceSet:
    """Equalized faces with labels indexed into ``classes``: what training and evaluation eat.

    ``targets`` (FER+ ``--labels soft``) holds each face's label distribution over
    ``classes``; ``labels`` is then its most voted class, for accuracy and class counts.
    """

    images: np.ndarray  # uint8 [N, 48, 48], equalized
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    name: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    targets: np.ndarray | None = None  # float32 [N, len(classes)], rows summing to 1; None = hard labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray, name: str | None = None) -> "FaceSet":
        """The faces at ``idx`` (soft targets and counts follow them)."""
        labels = self.labels[idx]
        return FaceSet(self.images[idx], labels, self.classes, self.name if name is None else name,
                       {c: int((labels == i).sum()) for i, c in enumerate(self.classes)},
                       None if self.targets is None else self.targets[idx])


def _cache_dir() -> Path:
    root = os.environ.get("FERVID_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fervid")
    return Path(root)


def _folder_files(root: Path) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under ``root``; cheap enough to key the cache.

    Relative paths are cut by string slicing: ``os.path.relpath`` on 32k files cost more
    than the stat calls themselves.
    """
    out: list[tuple[str, int, int]] = []
    stack = [str(root)]
    seen: set[tuple[int, int]] = set()  # (device, inode): a linked-back folder is entered once
    while stack:
        d = stack.pop()
        cut = len(str(root)) + 1
        dst = os.stat(d)
        if (dst.st_dev, dst.st_ino) in seen:
            continue
        seen.add((dst.st_dev, dst.st_ino))
        with os.scandir(d) as it:
            for e in it:
                if e.name.startswith("."):
                    continue
                try:
                    st = e.stat()  # follows links
                except OSError as err:
                    raise BadInputError(f"{e.path}: {'symbolic link loop' if err.errno == errno.ELOOP else 'broken symbolic link'}") from None
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
                elif stat.S_ISREG(st.st_mode):
                    out.append((e.path[cut:], st.st_size, st.st_mtime_ns))
                else:  # reading a FIFO would block, a device never end
                    raise BadInputError(f"{e.path}: is {special_kind(st.st_mode)}, not an image file")
    out.sort()
    return out


def _decode(path: str) -> np.ndarray | None:
    """The face in ``path`` as 48x48 gray, or None for a file that is not a whole image
    (a truncated JPEG would otherwise decode to a face with a grey lower half)."""

    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    if not data.size or looks_truncated(data.tobytes()):
        return None
    try:
        img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    except cv2.error:
        return None
    if img is None or img.size == 0:
        return None
    if img.shape != (FACE_SIZE, FACE_SIZE):
        img = cv2.resize(img, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    return img


def decode_images(paths: list[str]) -> np.ndarray:
    """Every image in ``paths`` as 48x48 gray, decoded on a few threads; a bad file is a one-line error."""
    with quiet_opencv(), ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        images = list(pool.map(_decode, paths, chunksize=256))  # bad files: our one line, not OpenCV's log
    for p, img in zip(paths, images):
        if img is None:
            raise BadInputError(f"{p}: cannot read this image (corrupt or not an image)")
    return np.stack(images)


def _read_folder(root: Path, files: list[tuple[str, int, int]]) -> RawFer:
    paths, labels, usage, group = [], [], [], []
    for rel, _size, _mtime in files:
        parts = Path(rel).parts
        if Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if len(parts) == 3:
            grp, emotion = parts[0].lower(), parts[1].lower()
            grp_code = GROUPS.index(grp) if grp in ("train", "test") else GROUPS.index("none")
        elif len(parts) == 2:
            emotion, grp_code = parts[0].lower(), GROUPS.index("none")
        else:
            raise BadInputError(f"{root / rel}: expected <split>/<emotion>/<image> or <emotion>/<image>")
        if emotion not in FER_CLASSES:
            raise BadInputError(
                f"{root / Path(rel).parent}: unknown emotion folder {parts[-2]!r} "
                f"(expected one of {', '.join(FER_CLASSES)})")
        m = _PREFIX.match(parts[-1])
        if m:
            use = next(i for i, u in enumerate(USAGES) if u.lower() == m.group(1).lower())
        else:
            use = USAGES.index("Unknown")
        paths.append(str(root / rel))
        labels.append(FER_CLASSES.index(emotion))
        usage.append(use)
        group.append(grp_code)
    if not paths:
        raise BadInputError(f"{root}: no images found (expected <split>/<emotion>/<image> files)")
    return RawFer(decode_images(paths), np.asarray(labels, np.int64), np.asarray(usage, np.int8),
                  np.asarray(group, np.int8), str(root))


def _read_csv(path: Path) -> RawFer:
    npix = FACE_SIZE * FACE_SIZE
    images, labels, usage = [], [], []
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 20))
    with open_input(path, "a fer2013.csv file") as (raw, st):  # a 2 GB file of zeros is one endless "line"
        head = raw.read(HEAD_BYTES)
    if head.count(b"\x00") * 4 > len(head):
        raise BadInputError(f"{path}: binary data (NUL bytes), not a CSV file (fer2013.csv is UTF-8 text)")
    if st.st_size > HEAD_BYTES and b"\n" not in head and b"\r" not in head:
        raise BadInputError(f"{path}: no line break in its first {HEAD_BYTES // 1024} KB: not a CSV file")
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # -sig: Excel writes a BOM
    except OSError as e:
        raise BadInputError(f"{path}: cannot open ({e.strerror})") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise BadInputError(f"{path}: empty file") from None
        except (csv.Error, UnicodeDecodeError) as e:
            raise BadInputError(f"{path}: not a CSV file ({e})") from None
        missing = [c for c in ("emotion", "pixels") if c not in header]
        if missing:
            raise BadInputError(f"{path}: missing column(s) {', '.join(missing)} "
                                f"(expected emotion,pixels,Usage)")
        ie, ip = header.index("emotion"), header.index("pixels")
        iu = header.index("usage") if "usage" in header else None
        usage_codes = {u.lower(): i for i, u in enumerate(USAGES[:3])}
        try:
            for row in reader:
                line = reader.line_num
                if not row or not any(cell.strip() for cell in row):
                    continue
                if len(row) < len(header):
                    raise BadInputError(f"{path}:{line}: expected {len(header)} columns, found {len(row)}")
                try:
                    label = int(row[ie])
                except ValueError:
                    raise BadInputError(f"{path}:{line}: emotion {row[ie]!r} is not a number 0-6") from None
                if not 0 <= label < len(FER_CLASSES):
                    raise BadInputError(f"{path}:{line}: unknown emotion label {label} (expected 0-6)")
                try:
                    px = np.array(row[ip].split(), dtype=np.int32)
                except ValueError:
                    raise BadInputError(f"{path}:{line}: non-numeric pixel value") from None
                if px.size != npix:
                    raise BadInputError(f"{path}:{line}: {px.size} pixels, expected {npix} (48x48)")
                if px.min() < 0 or px.max() > 255:
                    raise BadInputError(f"{path}:{line}: pixel value outside 0-255")
                if iu is None:
                    use = USAGES.index("Unknown")
                else:
                    use = usage_codes.get(row[iu].strip().lower(), -1)
                    if use < 0:
                        raise BadInputError(f"{path}:{line}: unknown Usage {row[iu]!r} "
                                            f"(expected Training, PublicTest or PrivateTest)")
                images.append(px.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE))
                labels.append(label)
                usage.append(use)
        except (csv.Error, UnicodeDecodeError) as e:
            raise BadInputError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    if not images:
        raise BadInputError(f"{path}: no data rows")
    n = len(images)
    return RawFer(np.stack(images), np.asarray(labels, np.int64), np.asarray(usage, np.int8),
                  np.full(n, GROUPS.index("none"), np.int8), str(path))


def cache_paths(src: Path, key_items: list, kind: str = f"fer-v{_CACHE_VERSION}") -> tuple[Path, str]:
    """The cache file for this source state, and the glob of older states of the same source.

    ``kind`` names the record layout and its version (each reader has its own), so a
    layout change never reads another's file.
    """
    where = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:16]
    state = hashlib.sha1(repr((kind, key_items)).encode()).hexdigest()[:16]
    return _cache_dir() / f"{kind}-{where}-{state}.npy", f"{kind}-{where}-*.npy"


def _cache_paths(src: Path, key_items: list) -> tuple[Path, str]:
    return cache_paths(src, key_items)


def load_records(cache: Path, dtype: np.dtype) -> np.ndarray | None:
    """A cache file's records, memory-mapped, or None when missing, damaged or of another layout."""
    try:
        rec = np.load(cache, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):  # damaged or truncated: rebuilt, never trusted
        return None
    if rec.dtype != dtype or rec.ndim != 1 or len(rec) == 0:
        return None
    return rec


def _load_cache(cache: Path, src: Path) -> RawFer | None:
    """The cached faces, memory-mapped, or None when the file is missing or damaged."""
    rec = load_records(cache, _CACHE_DTYPE)
    if rec is None:
        return None
    try:
        labels, usage, group = (np.asarray(rec[k]) for k in ("label", "usage", "group"))
    except (OSError, ValueError):
        return None
    if labels.max() >= len(FER_CLASSES) or usage.max() >= len(USAGES) or group.max() >= len(GROUPS):
        return None
    return RawFer(rec["raw"], labels.astype(np.int64), usage.astype(np.int8), group.astype(np.int8),
                  str(src), equalized=rec["eq"])


def save_records(cache: Path, stale_glob: str, rec: np.ndarray) -> None:
    """Write ``rec`` atomically to ``cache`` and remove the same source's older cache files."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.stem}.{os.getpid()}.tmp.npy")
        try:
            np.save(tmp, rec)
            os.replace(tmp, cache)
        finally:
            tmp.unlink(missing_ok=True)
        for old in cache.parent.glob(stale_glob):  # the same source before it changed
            if old != cache:
                old.unlink(missing_ok=True)
        for old in cache.parent.glob("fer-" + "[0-9a-f]" * 20 + ".npz"):  # version 1 caches, never read again
            old.unlink(missing_ok=True)
    except OSError as e:  # a read-only cache dir costs speed, not correctness
        print(f"fervid: could not write cache {cache}: {e}", file=sys.stderr)


def _write_cache(cache: Path, stale_glob: str, raw: RawFer, equalized: np.ndarray) -> None:
    rec = np.empty(len(raw.labels), dtype=_CACHE_DTYPE)
    rec["raw"], rec["eq"] = raw.images, equalized
    rec["label"], rec["usage"], rec["group"] = raw.labels, raw.usage, raw.group
    save_records(cache, stale_glob, rec)


def read_source(source: str | os.PathLike, use_cache: bool = True) -> RawFer:
    """Decode a FER-2013 CSV or folder, through the cache when its key still matches."""
    src = Path(source).expanduser()
    if not src.exists() and not src.is_symlink():  # a link loop: stat_input says so below
        raise BadInputError(f"{src}: no such file or folder")
    if src.is_dir():
        files = _folder_files(src)
        key_items: list = files
    else:
        st = stat_input(src, "a fer2013.csv file")  # a FIFO or /dev/zero would hang the reader
        files = []
        key_items = [(src.name, st.st_size, st.st_mtime_ns)]
    cache, stale_glob = _cache_paths(src, key_items)
    if use_cache and cache.exists():
        cached = _load_cache(cache, src)
        if cached is not None:
            return cached
    raw = _read_folder(src, files) if src.is_dir() else _read_csv(src)
    if use_cache:
        raw.equalized = equalize_batch(raw.images)
        _write_cache(cache, stale_glob, raw, raw.equalized)
    return raw


def split_mask(raw: RawFer, split: str) -> np.ndarray:
    """Boolean mask of the faces in ``split``.

    ``split`` is a comma list of official names (Training, PublicTest, PrivateTest), the
    groups ``train`` (= Training) and ``test`` (= PublicTest + PrivateTest), or ``all``.
    A face's official split is its CSV ``Usage`` or file-name prefix; a file without a
    prefix falls back to the folder it is in (``train/`` counts as Training, ``test/`` as
    test, which it cannot split into PublicTest and PrivateTest).
    """
    mask = np.zeros(len(raw.labels), dtype=bool)
    unknown = raw.usage == USAGES.index("Unknown")
    in_train = (raw.usage == USAGES.index("Training")) | (unknown & (raw.group == GROUPS.index("train")))
    in_test = np.isin(raw.usage, (USAGES.index("PublicTest"), USAGES.index("PrivateTest"))) \
        | (unknown & (raw.group == GROUPS.index("test")))
    parts = [p.strip().lower() for p in split.split(",") if p.strip()]
    if not parts:
        raise BadInputError("empty split: use Training, PublicTest, PrivateTest, train, test or all")
    for p in parts:
        if p == "all":
            mask[:] = True
        elif p in ("training", "train"):
            mask |= in_train
        elif p in ("publictest", "privatetest"):
            mask |= raw.usage == [u.lower() for u in USAGES].index(p)
        elif p == "test":
            mask |= in_test
        else:
            raise BadInputError(f"unknown split {p!r}: use Training, PublicTest, PrivateTest, "
                                f"train, test or all (comma-separated to combine)")
    return mask


def splits_found(raw: RawFer) -> list[str]:
    """Names of the splits a source holds, for error messages."""
    found = [USAGES[u] for u in np.unique(raw.usage) if USAGES[u] != "Unknown"]
    unknown = raw.usage == USAGES.index("Unknown")
    for g in np.unique(raw.group[unknown]):
        found.append(f"{GROUPS[g]}/ folder without prefix" if GROUPS[g] != "none" else "unlabelled (no prefix)")
    return found
