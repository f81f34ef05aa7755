"""FER+ (Barsoum et al. 2016) as Microsoft ships it: ten annotators' votes for every FER-2013 face.

FER-2013's own labels are noisy (FER+'s majority agrees with them on about 62% of
PublicTest), so FER+ relabelled every face and added contempt. Users have it one of two ways:

- the folders Microsoft's ``generate_training_data.py`` writes: ``FER2013Train/``,
  ``FER2013Valid/``, ``FER2013Test/`` (Training, PublicTest, PrivateTest), each holding
  ``fer<row>.png`` faces and a header-less ``label.csv``:
  ``name,box,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF``;
- ``fer2013new.csv`` (``Usage,Image name`` and the same ten counts, one row per
  ``fer2013.csv`` row, an empty name for a dropped face) beside the ``fer2013.csv`` that
  holds the pixels.

Both decode to the same records (raw face, equalized face, the ten counts, the original
FER-2013 label where known, split), cached through :mod:`fervid.data`'s cache, so the 32k
faces load in well under a second after the first time. The target is chosen at load time
(``labels``), so one cache serves every protocol:

- ``majority``: FER+'s majority protocol: single votes dropped, the face kept only if one
  class then holds more than half of the votes and it is an emotion (not unknown or NF);
- ``soft``: FER+'s label distribution ("crossentropy" mode of Microsoft's reader: single
  votes dropped, the top classes up to three covering 3/4 of the votes, faces where they
  cover half or less dropped), trained on with cross-entropy against it;
- ``fer2013``: the original FER-2013 label, where it is known (``fer2013_labels.csv`` beside
  the folders, or ``fer2013.csv``'s ``emotion`` column);
- ``mix``: both at once, for a FER-2013 model that has heard the ten annotators: the target is
  ``(1 - w)`` times the original label plus ``w`` (``vote_weight``) times the vote distribution
  (the original label alone where FER+ dropped the face), so the cross-entropy is the weighted
  sum of the two losses. Validated on the original labels, like a FER-2013 model.
"""
from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import fer2013 as fdata
from .classes import ALL_CLASSES, FER_CLASSES
from .errors import BadInputError
from .fer2013 import USAGES, RawFer, cache_paths, load_records, save_records
from .preprocess import FACE_SIZE, equalize_batch

#: The ten count columns, in FER+'s order; the first eight are emotions.
VOTE_COLUMNS: tuple[str, ...] = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear",
                                 "contempt", "unknown", "nf")
#: fervid's label (index into ALL_CLASSES) of each of FER+'s eight emotion columns.
TO_FERVID = np.array([ALL_CLASSES.index(c) for c in
                      ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")])
#: FER+ folders and the FER-2013 split each holds.
FOLDERS: dict[str, str] = {"FER2013Train": "Training", "FER2013Valid": "PublicTest", "FER2013Test": "PrivateTest"}
LABEL_MODES: tuple[str, ...] = ("auto", "fer2013", "majority", "soft", "mix")
#: Label modes that read FER+ votes (and so need a FER+ source).
VOTE_MODES: tuple[str, ...] = ("majority", "soft", "mix")
#: FER+ had ten annotators a face; Microsoft's own file has one face with nine votes, so fewer pass.
MAX_VOTES = 10
VOTES_CSV = "fer2013new.csv"
PIXELS_CSV = "fer2013.csv"
#: Optional join of every PNG to its original FER-2013 label (``ferplus_name,...,fer2013_emotion,sure``).
LABELS_FILE = "fer2013_labels.csv"
_CACHE_KIND = "ferplus-v1"
_NO_LABEL = 255  # original label unknown, as stored in the cache
_DTYPE = np.dtype([("raw", np.uint8, (FACE_SIZE, FACE_SIZE)), ("eq", np.uint8, (FACE_SIZE, FACE_SIZE)),
                   ("votes", np.uint8, (len(VOTE_COLUMNS),)), ("fer", np.uint8), ("usage", np.uint8)])


@dataclass
class RawPlus(RawFer):
    """Every face of a FER+ source; ``labels`` are the original FER-2013 labels (-1 unknown)."""

    votes: np.ndarray | None = None  # uint8 [N, 10], FER+'s column order


# --- what a source is ---------------------------------------------------------------------------

def _is_votes_csv(path: Path) -> bool:
    if path.name.lower() == VOTES_CSV:
        return True
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as fh:
            head = fh.readline(4096).lower()
    except OSError:
        return False
    return "image name" in head and "contempt" in head


def ferplus_source(source: str | os.PathLike, labels: str = "auto") -> Path | None:
    """The FER+ folder or ``fer2013new.csv`` that ``source`` stands for, or None for FER-2013 alone.

    ``fer2013.csv`` stands for the ``fer2013new.csv`` beside it only when FER+ labels are
    asked for, so FER-2013 users with both files keep reading what they always read.
    """
    src = Path(source).expanduser()
    if src.is_dir():
        if (src / "label.csv").is_file() or any((src / name).is_dir() for name in FOLDERS):
            return src
        return None
    if src.is_file():
        if _is_votes_csv(src):
            return src
        if labels in VOTE_MODES and (src.parent / VOTES_CSV).is_file():
            return src.parent / VOTES_CSV
    return None


def label_mode(source: str | os.PathLike, labels: str = "auto") -> str:
    """``labels`` resolved for ``source``: ``auto`` is the FER+ majority on FER+, ``fer2013`` otherwise."""
    labels = (labels or "auto").strip().lower()
    if labels not in LABEL_MODES:
        raise BadInputError(f"unknown labels {labels!r} (use {', '.join(LABEL_MODES)})")
    if not Path(source).expanduser().exists():
        if labels in VOTE_MODES:
            raise BadInputError(f"{source}: no such file or folder")
        return "fer2013"  # reading it says what is missing; a caller that brings its own faces never reads it
    if ferplus_source(source, labels) is None:
        if labels in VOTE_MODES:
            raise BadInputError(f"{source}: --labels {labels} needs FER+ votes (the FER2013Train/... folders, "
                                f"or {VOTES_CSV} beside {PIXELS_CSV})")
        return "fer2013"
    return "majority" if labels == "auto" else labels


def scoring_labels(mode: str) -> str:
    """The labels a model trained with ``mode`` is validated on: FER+'s literature scores the
    majority label, also for models trained on the distribution; a ``mix`` model is a FER-2013
    model and is scored on the original labels."""
    return {"soft": "majority", "mix": "fer2013"}.get(mode, mode)


# --- reading ------------------------------------------------------------------------------------

def _votes(cells: list[str], where: str) -> list[int]:
    try:
        votes = [int(c) for c in cells]
    except ValueError:
        raise BadInputError(f"{where}: vote counts must be whole numbers, got {','.join(cells)}") from None
    if min(votes) < 0 or not 0 < sum(votes) <= MAX_VOTES:
        raise BadInputError(f"{where}: vote counts add up to {sum(votes)}, expected 1-{MAX_VOTES} "
                            f"(FER+ had {MAX_VOTES} annotators a face)")
    return votes


def _rows(path: Path):
    """(line number, row) of every non-blank CSV row; unreadable files are one-line errors."""
    try:
        fh = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise BadInputError(f"{path}: cannot open ({e.strerror})") from None
    with fh:
        reader = csv.reader(fh)
        try:
            for row in reader:
                if row and any(c.strip() for c in row):
                    yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as e:
            raise BadInputError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None


def _read_label_csv(path: Path, present: set[str]) -> tuple[list[str], list[list[int]]]:
    """Image names and vote counts of one FER+ folder's ``label.csv``; every image must exist."""
    names: list[str] = []
    votes: list[list[int]] = []
    seen: set[str] = set()
    for line, row in _rows(path):
        where = f"{path}:{line}"
        if len(row) != 2 + len(VOTE_COLUMNS):
            raise BadInputError(f"{where}: expected {2 + len(VOTE_COLUMNS)} columns (name, box and "
                                f"{len(VOTE_COLUMNS)} vote counts), found {len(row)}")
        name = row[0].strip()
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise BadInputError(f"{where}: bad image name {row[0]!r}")
        if name in seen:
            raise BadInputError(f"{where}: {name} is listed twice")
        counts = _votes(row[2:], where)
        if name not in present:
            raise BadInputError(f"{where}: {name}: no such image in {path.parent}")
        seen.add(name)
        names.append(name)
        votes.append(counts)
    if not names:
        raise BadInputError(f"{path}: no faces listed")
    return names, votes


def _with_header(path: Path):
    """The rows of a CSV with a header line, and that header in lower case; an empty file is an error."""
    rows = _rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise BadInputError(f"{path}: empty file") from None
    return rows, [h.strip().lower() for h in header]


def _read_fer_labels(path: Path) -> dict[str, int]:
    """``FER2013Train/fer0000000.png`` -> original FER-2013 label, for faces whose label is sure."""
    rows, header = _with_header(path)
    if "ferplus_name" not in header or "fer2013_emotion" not in header:
        raise BadInputError(f"{path}: expected columns ferplus_name and fer2013_emotion")
    i_name, i_emo = header.index("ferplus_name"), header.index("fer2013_emotion")
    i_sure = header.index("sure") if "sure" in header else None
    out: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise BadInputError(f"{path}:{line}: expected {len(header)} columns, found {len(row)}")
        emotion = row[i_emo].strip().lower()
        if emotion not in FER_CLASSES:
            raise BadInputError(f"{path}:{line}: unknown emotion {row[i_emo]!r} (expected one of {', '.join(FER_CLASSES)})")
        # sure=0: pixel-identical duplicates carry different original labels; which is this face's is unknown.
        if i_sure is None or row[i_sure].strip() != "0":
            out[row[i_name].strip()] = FER_CLASSES.index(emotion)
    return out


def _folders(root: Path) -> list[tuple[str, Path]]:
    """(split, folder) of the FER+ folders under ``root`` (or ``root`` itself when it is one)."""
    if (root / "label.csv").is_file():
        return [(FOLDERS.get(root.name, "Unknown"), root)]
    found = []
    for name, usage in FOLDERS.items():
        if (root / name).is_dir():
            if not (root / name / "label.csv").is_file():
                raise BadInputError(f"{root / name}: FER+ folder without its label.csv")
            found.append((usage, root / name))
    return found


def _labels_file(root: Path) -> Path:
    return (root.parent if (root / "label.csv").is_file() else root) / LABELS_FILE


def _read_folders(root: Path, files: list[tuple[str, int, int]]) -> RawPlus:
    present = {rel for rel, _, _ in files}
    labels_file = _labels_file(root)
    known = _read_fer_labels(labels_file) if labels_file.is_file() else {}
    paths: list[str] = []
    votes: list[list[int]] = []
    usage: list[int] = []
    fer: list[int] = []
    for split, folder in _folders(root):
        rel = "" if folder == root else folder.name + "/"
        names, counts = _read_label_csv(folder / "label.csv", {p[len(rel):] for p in present if p.startswith(rel)})
        paths += [str(folder / n) for n in names]
        votes += counts
        usage += [USAGES.index(split)] * len(names)
        fer += [known.get(f"{folder.name}/{n}", -1) for n in names]
    n = len(paths)
    return RawPlus(fdata.decode_images(paths), np.asarray(fer, np.int64), np.asarray(usage, np.int8),
                   np.full(n, fdata.GROUPS.index("none"), np.int8), str(root), votes=np.asarray(votes, np.uint8))


def _read_votes_csv(path: Path) -> RawPlus:
    """``fer2013new.csv`` joined row by row to the ``fer2013.csv`` beside it."""
    pixels_path = path.parent / PIXELS_CSV
    if not pixels_path.is_file():
        raise BadInputError(f"{path}: FER+ votes need the faces of {PIXELS_CSV} beside them ({pixels_path} not found)")
    base = fdata._read_csv(pixels_path)
    rows, header = _with_header(path)
    missing = [c for c in ("usage", "image name", *VOTE_COLUMNS) if c not in header]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)} "
                            f"(expected Usage,Image name,{','.join(VOTE_COLUMNS[:-1])},NF)")
    i_use, i_name = header.index("usage"), header.index("image name")
    i_votes = [header.index(c) for c in VOTE_COLUMNS]
    keep: list[int] = []
    votes: list[list[int]] = []
    n_rows = 0
    for line, row in rows:
        i, n_rows = n_rows, n_rows + 1
        where = f"{path}:{line}"
        if len(row) != len(header):
            raise BadInputError(f"{where}: expected {len(header)} columns, found {len(row)}")
        if i >= len(base.labels):
            continue  # counted, reported below
        if row[i_use].strip().lower() != USAGES[base.usage[i]].lower():
            raise BadInputError(f"{where}: Usage {row[i_use]!r}, but face {i + 1} of {pixels_path} "
                                f"is {USAGES[base.usage[i]]} (files from different releases?)")
        if not row[i_name].strip():
            continue  # a face FER+ dropped (all annotators: not a face)
        votes.append(_votes([row[j] for j in i_votes], where))
        keep.append(i)
    if n_rows != len(base.labels):
        raise BadInputError(f"{path}: {n_rows} rows, but {pixels_path} has {len(base.labels)} faces "
                            f"(FER+ has one row per face)")
    if not keep:
        raise BadInputError(f"{path}: no faces (every image name is empty)")
    idx = np.asarray(keep)
    return RawPlus(base.images[idx], base.labels[idx], base.usage[idx], base.group[idx], str(path),
                   votes=np.asarray(votes, np.uint8))


def read_ferplus(source: Path, use_cache: bool = True) -> RawPlus:
    """Decode a FER+ source (folders or ``fer2013new.csv``), through the cache when its key still matches."""
    if source.is_dir():
        files = fdata._folder_files(source)
        key: list = list(files)
        extra = _labels_file(source)
        if extra.parent != source and extra.is_file():  # one FER+ folder: the join file sits above it
            key.append((str(extra), extra.stat().st_size, extra.stat().st_mtime_ns))
    else:
        files = []
        key = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in (source, source.parent / PIXELS_CSV)
               if p.is_file()]
    cache, stale_glob = cache_paths(source, key, _CACHE_KIND)
    if use_cache and cache.exists():
        rec = load_records(cache, _DTYPE)
        if rec is not None:
            try:
                fer, usage, votes = (np.asarray(rec[k]) for k in ("fer", "usage", "votes"))
            except (OSError, ValueError):
                fer = None
            if fer is not None and usage.max() < len(USAGES) and votes.sum(1).max() <= MAX_VOTES:
                return RawPlus(rec["raw"], np.where(fer == _NO_LABEL, -1, fer.astype(np.int64)),
                               usage.astype(np.int8), np.full(len(fer), fdata.GROUPS.index("none"), np.int8),
                               str(source), equalized=rec["eq"], votes=votes)
    raw = _read_folders(source, files) if source.is_dir() else _read_votes_csv(source)
    raw.equalized = equalize_batch(raw.images)
    if use_cache:
        rec = np.empty(len(raw.labels), dtype=_DTYPE)
        rec["raw"], rec["eq"], rec["votes"], rec["usage"] = raw.images, raw.equalized, raw.votes, raw.usage
        rec["fer"] = np.where(raw.labels < 0, _NO_LABEL, raw.labels)
        save_records(cache, stale_glob, rec)
    return raw


# --- targets ------------------------------------------------------------------------------------

def majority_labels(votes: np.ndarray) -> np.ndarray:
    """FER+'s majority label of each face (fervid numbering), -1 where the protocol drops it."""
    v = votes.astype(np.int64)
    v = np.where(v <= 1, 0, v)  # a single vote is an outlier
    top, peak, total = v.argmax(1), v.max(1), v.sum(1)
    keep = (2 * peak > total) & (top < len(TO_FERVID))  # a majority, and for an emotion
    out = np.full(len(v), -1, np.int64)
    out[keep] = TO_FERVID[top[keep]]
    return out


def _distribution(counts: np.ndarray) -> np.ndarray | None:
    """One face's target in Microsoft's ``crossentropy`` mode (FERPlus ``ferplus.py``, ``_process_data``),
    ported line for line so that "soft" means what FER+'s paper trained on; None = dropped."""
    raw = [float(c) for c in counts]
    raw = [0.0 if c < 1.0 + sys.float_info.epsilon else c for c in raw]
    total = sum(raw)
    emotion = [0.0] * len(raw)
    part, count, valid = 0.0, 0, True
    while part < 0.75 * total and count < 3 and valid:
        peak = max(raw)
        for i in range(len(raw)):
            if raw[i] == peak:
                emotion[i], raw[i] = peak, 0.0
                part += emotion[i]
                count += 1
                if i >= 8:  # unknown or not-a-face as many votes as the peak
                    valid = False
                    if sum(emotion) > peak:  # emotions were ahead of it: keep those
                        emotion[i] = 0.0
                        count -= 1
                    break
    if sum(emotion) <= 0.5 * total or count > 3:
        return None
    out = np.asarray(emotion) / sum(emotion)
    return out if out.argmax() < len(TO_FERVID) else None


def soft_targets(votes: np.ndarray) -> np.ndarray:
    """FER+'s label distribution of each face over fervid's eight classes; a zero row = dropped.

    Faces share few distinct vote patterns (a few thousand among 32k), so each pattern is worked
    out once.
    """
    patterns, inverse = np.unique(votes, axis=0, return_inverse=True)
    table = np.zeros((len(patterns), len(ALL_CLASSES)), np.float64)
    for k, row in enumerate(patterns):
        d = _distribution(row)
        if d is not None:
            emotions = d[:len(TO_FERVID)]
            table[k, TO_FERVID] = emotions / emotions.sum()
    return table[np.asarray(inverse).reshape(-1)]
