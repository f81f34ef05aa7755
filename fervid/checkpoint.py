"""Saving and loading models with the metadata that makes them usable on their own.

A fervid model is one ``.safetensors`` file: the weights, plus a JSON header entry
``fervid`` naming the architecture, class names, input size, normalisation and how it
was trained. Nothing else is needed to rebuild it, evaluate it or export it, and a file
that lacks the entry (or whose weights do not fit the architecture it names) is refused
with a one-line error rather than producing nonsense predictions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import BadInputError, ModelFileError
from .io import atomic_path
from .models import create_model, list_models
from .preprocess import FACE_SIZE, MEAN, STD

FORMAT = "fervid-model"
FORMAT_VERSION = 1


def make_meta(arch: str, classes: list[str] | tuple[str, ...], **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": FORMAT, "version": FORMAT_VERSION, "arch": arch, "classes": list(classes),
        "input_size": FACE_SIZE, "mean": MEAN, "std": STD, "preprocess": "gray,equalizeHist,resize",
    }
    meta.update(extra)
    return meta


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights + metadata atomically to ``path`` (``.safetensors``)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path, durable=True) as tmp:
        save_file(state, str(tmp), metadata={"fervid": json.dumps(meta)})
    return path


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A model file, or a training run folder (its ``best.safetensors``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("best.safetensors", "model.safetensors", "last.safetensors"):
            if (p / name).exists():
                return p / name
        raise ModelFileError(f"{p}: folder holds no best.safetensors (is it a fervid training run?)")
    if not p.exists():
        raise ModelFileError(f"{p}: no such model file")
    return p


def _has_safetensors_header(path: Path) -> bool:
    """Whether the file starts like a safetensors file: a length, then that many bytes of JSON."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return False
            n = int.from_bytes(head, "little")
            if not 2 <= n <= 100_000_000:
                return False
            json.loads(fh.read(n))
    except (OSError, ValueError):
        return False
    return True


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of a fervid ``.safetensors`` model, without loading the weights."""
    from safetensors import safe_open

    p = resolve_model_path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
    except Exception:
        if _has_safetensors_header(p):  # a whole header, then less data than it describes
            raise ModelFileError(f"{p}: weights cannot be read (truncated or damaged file)") from None
        raise ModelFileError(f"{p}: not a fervid model (not a safetensors file)") from None
    try:
        meta = json.loads(header["fervid"])
    except (KeyError, ValueError):
        meta = None
    # Checked explicitly, not with assert: ``python -O`` would strip the check.
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT and isinstance(meta.get("arch"), str)
            and isinstance(meta.get("classes"), list) and meta["classes"]
            and all(isinstance(c, str) for c in meta["classes"])):
        raise ModelFileError(f"{p}: not a fervid model (no fervid metadata in the file)")
    version = meta.get("version", 0)
    if not isinstance(version, int):
        raise ModelFileError(f"{p}: not a fervid model (format version {version!r})")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{p}: model format v{meta['version']} is newer than this fervid reads")
    return meta


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a ``.safetensors`` file describes, in eval mode, with its metadata."""
    from safetensors.torch import load_file

    p = resolve_model_path(path)
    meta = read_meta(p)
    try:
        model = create_model(meta["arch"], num_classes=len(meta["classes"]), **(meta.get("arch_kwargs") or {}))
    except BadInputError:  # an architecture this fervid does not have (newer, or a plug-in)
        raise ModelFileError(f"{p}: unknown architecture {meta['arch']!r} "
                             f"(this fervid has {', '.join(list_models())})") from None
    except TypeError:
        raise ModelFileError(f"{p}: arch_kwargs {meta.get('arch_kwargs')!r} do not fit {meta['arch']!r}") from None
    try:
        state = load_file(str(p))
    except Exception:  # header fine but the tensor data truncated or damaged
        raise ModelFileError(f"{p}: weights cannot be read (truncated or damaged file)") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ModelFileError(f"{p}: weights do not match architecture {meta['arch']!r} "
                             f"with {len(meta['classes'])} classes") from None
    model.eval()
    return model, meta


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Full resumable state (model, optimizer, EMA, RNG, epoch) via torch.save, atomically."""
    with atomic_path(path, durable=True) as tmp:
        torch.save(state, tmp)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """The state saved by :func:`save_training_state`; plain containers and tensors only,
    so ``weights_only`` loading works and a doctored file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelFileError(f"{path}: cannot read training checkpoint ({type(e).__name__})") from None
