"""Recognition over many image files: which files, one results table, annotated copies.

Used by ``fervid predict``. Every input is accounted for in the table: a row per face, a
``no_face`` row for an image without one and an ``error`` row for a file that could not be
read, so a table's row count never silently disagrees with the input count.
"""
from __future__ import annotations

import csv
import errno
import glob
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import BadInputError
from ..files import special_kind, stat_input

#: Suffixes picked up when a folder is given; files named one by one are tried whatever their suffix.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".jp2"}
#: Suffixes OpenCV writes in colour; annotated copies of anything else are written as PNG.
WRITABLE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_MAGIC = set("*?[")


@dataclass
class InputFile:
    path: Path  # as the user can find it again
    name: str  # relative name for the annotated copy, unique within a batch


@dataclass
class Expanded:
    files: list[InputFile] = field(default_factory=list)
    errors: list[BadInputError] = field(default_factory=list)


def _walk(folder: Path, skip: Path | None, problems: list[BadInputError]) -> Iterator[Path]:
    """Image files under ``folder``, in sorted order, each folder visited once.

    Links are followed (a linked photo folder is meant to be read), but a folder already
    seen (same device and inode) is not entered again: ``ln -s . d/loop`` twice would
    otherwise make the walk exponential. Special files with an image suffix (a FIFO would
    block the reader forever) and broken or looping links become ``problems``.
    """
    seen: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        here = stack.pop()
        try:
            st = os.stat(here)
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            problems.append(BadInputError(f"{here}: cannot list this folder ({e.strerror or e})"))
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = here / entry.name
            image = Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
            try:
                est = entry.stat()  # follows links
            except OSError as e:
                if image:
                    why = "symbolic link loop" if e.errno == errno.ELOOP else "broken symbolic link"
                    problems.append(BadInputError(f"{path}: {why}, skipped"))
                continue
            if stat.S_ISDIR(est.st_mode):
                if (est.st_dev, est.st_ino) not in seen and (skip is None or path.resolve() != skip):
                    subdirs.append(path)
            elif stat.S_ISREG(est.st_mode):
                if image:
                    yield path
            elif image:
                problems.append(BadInputError(f"{path}: is {special_kind(est.st_mode) or 'not a regular file'}, "
                                              "not an image file, skipped"))
        stack.extend(reversed(subdirs))


def _glob(pattern: str) -> list[str]:
    """Matches of ``pattern``, sorted; ``**`` never enters linked folders.

    ``glob.glob(recursive=True)`` follows links under ``**``: two ``.`` self-links make it
    exponential. pathlib's ``**`` does not follow them (Python 3.11-3.12), so it serves there.
    """
    if "**" not in pattern:
        return sorted(glob.glob(pattern))
    anchor = Path(pattern).anchor
    rel = pattern[len(anchor):]
    base = Path(anchor) if anchor else Path(".")
    try:  # hidden names are skipped, as glob.glob does (and fervid's own temporaries are hidden)
        found = [str(p) if anchor else os.path.normpath(str(p)) for p in base.glob(rel)
                 if not any(x.startswith(".") and x not in (".", "..") for x in p.relative_to(base).parts)]
    except (ValueError, NotImplementedError):  # a pattern pathlib cannot take
        return []
    return sorted(found)


def expand_inputs(inputs: list[str], skip: str | os.PathLike | None = None) -> Expanded:
    """Files, folders (recursive, image suffixes only) and globs to a list of unique files.

    ``skip``: a folder never descended into (the output folder, so a second run over ``.``
    does not eat its own annotated images). Paths that match nothing become errors.
    """
    skip_path = Path(skip).resolve() if skip else None
    out = Expanded()
    seen: set[Path] = set()
    names: set[str] = set()

    def add(path: Path, name: str) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        base, suffix, k = name[: -len(Path(name).suffix) or None], Path(name).suffix, 1
        while name in names:
            k += 1
            name = f"{base}-{k}{suffix}"
        names.add(name)
        out.files.append(InputFile(path, name))

    for arg in inputs:
        p = Path(arg).expanduser()
        if p.is_dir():
            found = list(_walk(p, skip_path, out.errors))
            if not found:
                out.errors.append(BadInputError(f"{p}: no image files in this folder"))
            top = p.resolve().name or "root"
            for f in found:
                add(f, str(Path(top) / f.relative_to(p)))
        elif p.exists():
            add(p, p.name)
        elif _MAGIC & set(arg):
            matches = _glob(os.path.expanduser(arg))
            files = [Path(m) for m in matches if Path(m).is_file()
                     and (skip_path is None or skip_path not in Path(m).resolve().parents)]
            if not files:
                out.errors.append(BadInputError(f"{arg}: no files match this pattern"))
            for f in files:
                parts = [part for part in f.parts if part not in ("..", ".")] if not f.is_absolute() else []
                add(f, str(Path(*parts)) if parts else f.name)
        elif os.path.islink(p):
            try:
                stat_input(p)
            except BadInputError as err:  # a loop or a broken link, in its words
                out.errors.append(err)
        else:
            out.errors.append(BadInputError(f"{p}: no such file or folder"))
    return out


def annotated_path(out_dir: Path, item: InputFile) -> Path:
    p = out_dir / item.name
    return p if p.suffix.lower() in WRITABLE_SUFFIXES else p.with_name(p.name + ".png")


def face_rows(file: str, faces: list, classes: list[str]) -> list[dict[str, Any]]:
    """Table rows for one image: one per face, or a single ``no_face`` row."""
    if not faces:
        return [{"file": file, "face": None, "status": "no_face"}]
    return [{"file": file, "face": i, "status": "ok", "box": list(f.box), "score": f.score,
             "landmarks": [list(pt) for pt in f.landmarks], "emotion": f.emotion,
             "confidence": f.confidence, "probabilities": dict(f.probabilities)} for i, f in enumerate(faces)]


def probability_column(cls: str) -> str:
    """The CSV column of a class probability, ``p_<class>``, in every fervid table (predict, video,
    the service's CSV): prefixed so a class can never collide with a column such as ``score``."""
    return f"p_{cls}"


def row_probabilities(row: dict[str, str], classes: list[str]) -> dict[str, float]:
    """Class probabilities of one CSV row read with ``csv.DictReader``; also reads the bare
    ``<class>`` columns of video CSVs written before fervid named them ``p_<class>``."""
    out = {}
    for c in classes:
        value = row.get(probability_column(c), row.get(c))
        if value not in (None, ""):
            out[c] = float(value)
    return out


def error_row(file: str, message: str) -> dict[str, Any]:
    return {"file": file, "face": None, "status": "error", "error": message}


class TableWriter:
    """Streams rows to ``predictions.csv`` (flat columns) or ``predictions.jsonl`` (nested)."""

    def __init__(self, fh: IO[str], fmt: str, classes: list[str]):
        self.fh, self.fmt, self.classes = fh, fmt, classes
        self.count = 0
        if fmt == "csv":
            self.columns = (["file", "face", "status", "x", "y", "w", "h", "score", "landmarks", "emotion",
                             "confidence"] + [probability_column(c) for c in classes] + ["error"])
            self._csv = csv.DictWriter(fh, self.columns, extrasaction="ignore")
            self._csv.writeheader()
        elif fmt != "jsonl":
            raise BadInputError(f"unknown table format {fmt!r} (use csv or jsonl)")

    def write(self, row: dict[str, Any]) -> None:
        self.count += 1
        if self.fmt == "jsonl":
            full = {"file": row["file"], "face": row.get("face"), "status": row["status"], "box": row.get("box"),
                    "score": _round(row.get("score")), "landmarks": row.get("landmarks"),
                    "emotion": row.get("emotion"), "confidence": _round(row.get("confidence")),
                    "probabilities": {k: _round(v) for k, v in (row.get("probabilities") or {}).items()} or None,
                    "error": row.get("error")}
            self.fh.write(json.dumps(full) + "\n")
            return
        flat: dict[str, Any] = {"file": row["file"], "face": "" if row.get("face") is None else row["face"],
                                "status": row["status"], "error": row.get("error", "")}
        if row["status"] == "ok":
            flat.update(zip("xywh", row["box"]))
            flat["score"] = f"{row['score']:.4f}"
            flat["landmarks"] = " ".join(f"{v:.1f}" for pt in row["landmarks"] for v in pt)
            flat["emotion"], flat["confidence"] = row["emotion"], f"{row['confidence']:.5f}"
            for c, v in row["probabilities"].items():
                flat[probability_column(c)] = f"{v:.5f}"
        self._csv.writerow(flat)


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 6)


def describe(file: str, faces: list) -> str:
    """``file: 2 faces: happy 0.93, neutral 0.71`` / ``file: no face``."""
    if not faces:
        return f"{file}: no face"
    listing = ", ".join(f"{f.emotion} {f.confidence:.2f}" for f in faces)
    return f"{file}: {len(faces)} face{'s' if len(faces) != 1 else ''}: {listing}"
