"""The one place a PyTorch network is built from a model file.

Every command that needs the network itself (training's ``--init`` and ``--teacher``,
evaluation, export, ``visualize``, cross-validation, ``carry``) comes here; the file's format
and metadata rules are :mod:`fervid.modelfile`'s.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .. import modelfile
from ..errors import BadInputError, ModelFileError
from .registry import create_model, list_models


def build_model(meta: dict[str, Any], where: str | os.PathLike = "model") -> nn.Module:
    """The (untrained) network ``meta`` describes, or a one-line ModelFileError."""
    try:
        return create_model(meta["arch"], num_classes=len(meta["classes"]), **(meta.get("arch_kwargs") or {}))
    except BadInputError:  # an architecture this fervid does not have (newer, or a plug-in)
        raise ModelFileError(f"{where}: unknown architecture {meta['arch']!r} "
                             f"(this fervid has {', '.join(list_models())})") from None
    except TypeError:
        raise ModelFileError(f"{where}: arch_kwargs {meta.get('arch_kwargs')!r} do not fit {meta['arch']!r}") from None


def load_weights(model: nn.Module, state: dict[str, Any], meta: dict[str, Any], where: str | os.PathLike) -> nn.Module:
    """``state`` put into ``model`` exactly (every tensor, every shape), or a one-line error."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise ModelFileError(f"{where}: weights do not match architecture {meta['arch']!r} "
                             f"with {len(meta['classes'])} classes") from None
    return model


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a ``.safetensors`` file (or run folder) describes, in eval mode, with its metadata."""
    model, meta, _ = load_model_file(path)
    return model, meta


def load_model_file(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any], Path]:
    """:func:`load_model`, plus the file a run folder resolved to. An exported ``.onnx``
    is refused with a line saying what to give instead."""
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if p.suffix.lower() in (".onnx", ".json") and p.is_file():
        raise ModelFileError(f"{p}: an exported ONNX model keeps no PyTorch weights; give the "
                             ".safetensors model it was exported from (or its training run folder)")
    p = modelfile.resolve(p, torch_only=True)
    meta = modelfile.read_meta(p)
    model = build_model(meta, p)
    try:
        state = load_file(str(p))
    except Exception:  # header fine but the tensor data damaged
        raise ModelFileError(f"{p}: weights cannot be read (truncated or damaged file)") from None
    load_weights(model, state, meta, p)
    model.eval()
    return model, meta, p
