"""What ``--ray`` reads and writes besides recognition itself: the input listing (files,
folders, globs, text or Parquet lists, any filesystem pyarrow reaches) and the table's Arrow
schema, kept apart from :mod:`fervid.recognition.scaleout` so each file has one job."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import BadInputError
from .image_files import IMAGE_SUFFIXES, error_row, expand_inputs, probability_column

LIST_SUFFIXES = {".txt", ".lst", ".parquet"}


def _is_uri(text: str) -> bool:
    return "://" in text and not text.startswith("file://")


def _fs_and_path(uri: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(uri)


def read_path_list(spec: str) -> list[str]:
    """Image paths listed in a text file (one a line; blank lines and ``#`` comments skipped) or a
    Parquet file (its ``path`` column, else its first string column), local or any URI pyarrow reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if _is_uri(spec):
            filesystem, where = _fs_and_path(spec)
        else:
            filesystem, where = None, str(Path(spec.removeprefix("file://")).expanduser())
        if spec.lower().endswith(".parquet"):
            table = pq.read_table(where, filesystem=filesystem)
            names = [n for n, t in zip(table.column_names, table.schema.types) if pa.types.is_string(t)
                     or pa.types.is_large_string(t)]
            column = "path" if "path" in table.column_names else (names[0] if names else None)
            if column is None:
                raise BadInputError(f"{spec}: a Parquet list needs a 'path' column (or any string column)")
            return [p for p in table.column(column).to_pylist() if p]
        if filesystem is not None:
            with filesystem.open_input_stream(where) as fh:
                text = fh.read().decode("utf-8")
        else:
            text = Path(where).read_text(encoding="utf-8")
    except BadInputError:
        raise
    except (OSError, UnicodeDecodeError, pa.ArrowException) as e:
        raise BadInputError(f"{spec}: cannot read this list of images ({e})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _remote_folder(uri: str) -> list[str]:
    """Image files under a folder on a pyarrow filesystem (``s3://bucket/photos/``), sorted."""
    from pyarrow import fs

    filesystem, where = _fs_and_path(uri)
    infos = filesystem.get_file_info(fs.FileSelector(where, recursive=True))
    scheme = uri.split("://", 1)[0]
    return sorted(f"{scheme}://{i.path}" for i in infos
                  if i.type == fs.FileType.File and Path(i.path).suffix.lower() in IMAGE_SUFFIXES)


@dataclass
class InputList:
    """What ``--ray`` will recognise: unique paths (local or URIs) and the inputs that matched nothing."""

    paths: list[str] = field(default_factory=list)
    errors: list[BadInputError] = field(default_factory=list)


def list_images(inputs: Iterable[str], skip: str | os.PathLike | None = None) -> InputList:
    """Inputs as ``fervid predict`` takes them (files, folders, globs) plus lists of paths
    (``.txt``/``.lst``/``.parquet``) and URIs (``s3://bucket/photos/``, ``gs://b/x.jpg``).
    Local files, folders and globs go through :func:`fervid.batch.expand_inputs`."""
    out = InputList()
    seen: set[str] = set()

    def add(path: str) -> None:
        if path not in seen:
            seen.add(path)
            out.paths.append(path)

    local: list[str] = []
    for arg in inputs:
        if Path(arg).suffix.lower() in LIST_SUFFIXES and (_is_uri(arg) or Path(arg).is_file()):
            for p in read_path_list(arg):
                if _is_uri(p):
                    add(p)
                else:
                    local.append(p)
        elif _is_uri(arg):
            from pyarrow import fs

            try:
                filesystem, where = _fs_and_path(arg)
                kind = filesystem.get_file_info(where).type
            except (OSError, ValueError) as e:
                out.errors.append(BadInputError(f"{arg}: cannot open ({e})"))
                continue
            if kind == fs.FileType.Directory:
                found = _remote_folder(arg)
                if not found:
                    out.errors.append(BadInputError(f"{arg}: no image files in this folder"))
                for p in found:
                    add(p)
            elif kind == fs.FileType.File:
                add(arg)
            else:
                out.errors.append(BadInputError(f"{arg}: no such file or folder"))
        else:
            local.append(arg)
    if local:
        expanded = expand_inputs(local, skip=skip)
        for item in expanded.files:
            add(str(item.path))
        out.errors.extend(expanded.errors)
    return out


# --- the table -------------------------------------------------------------------------------

def table_schema(classes: list[str]):
    """Parquet columns of the table: ``fervid predict``'s CSV columns, typed (landmarks as 10 floats)."""
    import pyarrow as pa

    return pa.schema([("file", pa.string()), ("face", pa.int32()), ("status", pa.string()),
                      ("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()), ("h", pa.int32()),
                      ("score", pa.float64()), ("landmarks", pa.list_(pa.float64())), ("emotion", pa.string()),
                      ("confidence", pa.float64())]
                     + [(probability_column(c), pa.float64()) for c in classes] + [("error", pa.string())])


def rows_to_table(rows: list[dict[str, Any]], classes: list[str]):
    """Rows of :func:`fervid.batch.face_rows` / :func:`~fervid.batch.error_row` as a typed Arrow table."""
    import pyarrow as pa

    ok = [r["status"] == "ok" for r in rows]
    cols: dict[str, list] = {"file": [r["file"] for r in rows], "face": [r.get("face") for r in rows],
                             "status": [r["status"] for r in rows]}
    for i, k in enumerate("xywh"):
        cols[k] = [int(r["box"][i]) if good else None for r, good in zip(rows, ok)]
    cols["score"] = [float(r["score"]) if good else None for r, good in zip(rows, ok)]
    cols["landmarks"] = [[float(v) for pt in r["landmarks"] for v in pt] if good else None
                         for r, good in zip(rows, ok)]
    cols["emotion"] = [r.get("emotion") for r in rows]
    cols["confidence"] = [float(r["confidence"]) if good else None for r, good in zip(rows, ok)]
    for c in classes:
        cols[probability_column(c)] = [float(r["probabilities"][c]) if good else None for r, good in zip(rows, ok)]
    cols["error"] = [r.get("error") for r in rows]
    return pa.table(cols, schema=table_schema(classes))


def table_to_rows(table, classes: list[str]) -> Iterable[dict[str, Any]]:
    """The inverse of :func:`rows_to_table`: rows :class:`fervid.batch.TableWriter` writes."""
    for r in table.to_pylist():
        if r["status"] == "ok":
            lm = r["landmarks"] or []
            yield {"file": r["file"], "face": r["face"], "status": "ok", "box": [r[k] for k in "xywh"],
                   "score": r["score"], "landmarks": [lm[i:i + 2] for i in range(0, len(lm), 2)],
                   "emotion": r["emotion"], "confidence": r["confidence"],
                   "probabilities": {c: r[probability_column(c)] for c in classes}}
        elif r["status"] == "error":
            yield error_row(r["file"], r["error"])
        else:
            yield {"file": r["file"], "face": None, "status": r["status"]}


# --- the actor ---------------------------------------------------------------------------------
