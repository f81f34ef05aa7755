"""Writing what training produces: models with their metadata, and the resumable state.

A fervid model is one ``.safetensors`` file: the weights, plus a JSON header entry
``fervid`` naming the architecture, class names, input size, normalisation and how it
was trained (:mod:`fervid.modelfile` says what is valid; :func:`fervid.models.loading.load_model`
reads it back, refusing a file that lacks the entry or whose weights do not fit).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelFileError
from ..files import atomic_path
from ..modelfile import FORMAT, FORMAT_VERSION, META_KEY, make_meta, read_meta  # noqa: F401  (re-exported)
from ..models.loading import build_model, load_model, load_weights  # noqa: F401  (load_model: re-exported)


def save_model(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write weights + metadata atomically to ``path`` (``.safetensors``)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    with atomic_path(path, durable=True) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(meta)})
    return path


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


def validated_weights(state: dict[str, Any]) -> dict[str, Any]:
    """The weights the engine validated at the epoch a training state was saved: the SWA average
    once it has started (``swa_start``), else the EMA when the run keeps one, else the raw weights.
    What ``best.safetensors`` holds whenever that epoch improved on the best."""
    swa_start = int((state.get("config") or {}).get("swa_start") or 0)
    if state.get("swa") and swa_start and int(state["epoch"]) + 1 >= swa_start:
        averaged = state["swa"]
    elif state.get("ema"):
        averaged = state["ema"]
    else:
        return state["model"]
    # torch's AveragedModel: the averaged weights (and BatchNorm statistics) sit under "module."
    return {k[len("module."):]: v for k, v in averaged.items() if k.startswith("module.")}


def model_from_state(state: dict[str, Any], classes: list[str] | tuple[str, ...]) -> nn.Module:
    """The network a training state ends with, as the engine validates it (eval mode)."""
    meta = make_meta(state["config"]["model"], classes)
    model = build_model(meta, "training state")
    return load_weights(model, validated_weights(state), meta, "training state").eval()
