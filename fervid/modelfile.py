"""What a fervid model file is, without PyTorch: its format, its metadata, where a run keeps it.

A fervid model is a ``.safetensors`` file (weights, for PyTorch) or an exported ``.onnx``
(for ONNX Runtime) that carries a JSON entry ``fervid`` naming the architecture, class names,
input size, normalisation and how it was trained. This module is the one place that knows:

* the format name and version, and the metadata key (in safetensors' header and in ONNX's
  ``metadata_props``);
* which file of a training run folder stands for it (:func:`resolve`);
* what metadata is valid (:func:`check_meta`: one rule for every command);
* how to read the metadata of a ``.safetensors`` file from its header alone.

Building a network from a file is :func:`fervid.models.loading.load_model` (PyTorch);
opening one for inference is :func:`fervid.recognition.recognize.open_model` (ONNX Runtime).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import BadInputError, ModelFileError
from .files import stat_input
from .preprocess import FACE_SIZE, MEAN, STD

FORMAT = "fervid-model"
FORMAT_VERSION = 1
#: Key of the metadata in a safetensors header and in an ONNX graph's ``metadata_props``.
META_KEY = "fervid"

#: The files that stand for a training run folder, in order of preference: PyTorch weights
#: (what training writes) and, for recognition, an export beside them first.
TORCH_FILES = ("best.safetensors", "model.safetensors", "last.safetensors")
RUN_FILES = ("model.onnx", "best.onnx") + TORCH_FILES

#: Where the shipped models live, inside the package.
ASSETS = Path(__file__).resolve().parent / "assets"
#: The models shipped in the package, by the name ``--model NAME`` / ``Recognizer(NAME)`` takes:
#: (the ONNX graph recognition runs, the weights PyTorch loads, what it is). ``fer2013`` is the default.
SHIPPED_MODELS: dict[str, tuple[str, str, str]] = {
    "fer2013": ("model.onnx", "model.safetensors", "FER-2013's labels, 7 classes (the default)"),
    "ferplus": ("ferplus.onnx", "ferplus.safetensors", "FER+ vote distributions, 8 classes with contempt"),
}


def shipped_path(name: str, torch_only: bool = False) -> Path | None:
    """The file of the shipped model called ``name`` (None: no such name, or a file or folder of that
    name exists here, which wins); ModelFileError when the name is known but its file is missing."""
    if name not in SHIPPED_MODELS or Path(name).exists():
        return None
    onnx, weights, _ = SHIPPED_MODELS[name]
    p = ASSETS / (weights if torch_only else onnx)
    if not p.is_file():
        raise ModelFileError(f"shipped model {name!r}: {p} is not installed with this fervid")
    return p


def make_meta(arch: str, classes: list[str] | tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The metadata of a new model: its architecture, classes and the input it expects."""
    meta: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION, "arch": arch, "classes": list(classes),
        "input_size": FACE_SIZE, "mean": MEAN, "std": STD, "preprocess": "gray,equalizeHist,resize",
    }
    meta.update(extra)
    return meta


def portable_reference(model: str | os.PathLike | None) -> str | None:
    """``model`` as another process with another working directory (a service worker, a Ray
    actor) must be told it: a path made absolute, a shipped model's name left a name."""
    if model is None:
        return None
    return str(model) if shipped_path(str(model)) is not None else os.path.abspath(model)


def split_model_list(spec: str) -> list[str]:
    """``a.safetensors,b.onnx`` -> its paths (an ensemble, or teachers); one path is a one-member list."""
    return [p.strip() for p in str(spec).split(",") if p.strip()]


def resolve(path: str | os.PathLike, torch_only: bool = False) -> Path:
    """The model file ``path`` names: the file itself, or the one that stands for a run folder.

    ``torch_only`` looks in a folder for PyTorch weights only (training, evaluation of the
    network itself); otherwise an export is preferred, as recognition runs it without PyTorch.
    A path that is no regular file (a FIFO, a device) is refused without being opened. A shipped
    model's name (``fer2013``, ``ferplus``: :data:`SHIPPED_MODELS`) stands for its file in the package.
    """
    named = shipped_path(str(path), torch_only)
    if named is not None:
        return named
    p = Path(path).expanduser()
    if p.is_dir():
        for name in TORCH_FILES if torch_only else RUN_FILES:
            if (p / name).is_file():
                return p / name
        if torch_only:
            raise ModelFileError(f"{p}: folder holds no best.safetensors (is it a fervid training run?)")
        raise ModelFileError(f"{p}: folder holds no model (best.safetensors or model.onnx)")
    if not p.is_file():
        if p.exists() or p.is_symlink():  # a FIFO, a device, a link loop: say which, never open it
            try:
                stat_input(p, "a model file")
            except BadInputError as e:
                raise ModelFileError(str(e)) from None
        raise ModelFileError(f"{p}: no such model file")
    return p


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_meta(meta: Any, where: str | os.PathLike, need_arch: bool = False) -> dict[str, Any]:
    """``meta`` if it is valid fervid metadata, else a one-line ModelFileError naming ``where``.

    Checked explicitly, not with assert (``python -O`` would strip it): the format, a list of
    distinct class names, a format version this fervid reads, positive input size and
    normalisation and, to rebuild the network (``need_arch``), the architecture's name.
    """
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{where}: not a fervid model (no fervid metadata)")
    classes, version = meta.get("classes"), meta.get("version", 0)
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)):
        raise ModelFileError(f"{where}: not a fervid model (its metadata has no valid class list)")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{where}: not a fervid model (format version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{where}: model format v{version} is newer than this fervid reads")
    for key in ("mean", "std", "input_size"):
        if not _positive_number(meta.get(key, 1)):
            raise ModelFileError(f"{where}: not a fervid model (metadata {key} {meta.get(key)!r})")
    if need_arch and not isinstance(meta.get("arch"), str):
        raise ModelFileError(f"{where}: not a fervid model (its metadata names no architecture)")
    return meta


def is_safetensors(head: bytes) -> bool:
    """Whether bytes start like a safetensors file: a little-endian length, then a JSON object."""
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= 100_000_000 and head[8:9] == b"{"


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's size (a file cut short
    is refused here, before any weight is read)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if not 2 <= n <= 100_000_000:
                raise ValueError
            header = json.loads(fh.read(n))
            size = os.fstat(fh.fileno()).st_size
    except (OSError, ValueError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: not a fervid model (not a safetensors file)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a fervid model (not a safetensors file)")
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2 and isinstance(v["data_offsets"][1], int)]
    if len(ends) != len(header) - ("__metadata__" in header) or 8 + n + max(ends, default=0) > size:
        raise ModelFileError(f"{path}: weights cannot be read (truncated or damaged file)")
    return header


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a fervid ``.safetensors`` model (or run folder), without loading weights."""
    p = resolve(path, torch_only=True)
    header = safetensors_header(p)
    try:
        meta = json.loads((header.get("__metadata__") or {})[META_KEY])
    except (KeyError, TypeError, ValueError):
        meta = None
    return check_meta(meta, p, need_arch=True)
