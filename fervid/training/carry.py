"""Carry a long training run from one machine or sitting to the next in a file small enough to commit.

A run's ``last.pt`` resumes it exactly, but it holds the model, the optimizer's momentum and
the weight average, all in fp32: 47 MB for vgg_m, too big to keep in git each time a
sitting ends. A run that outlives its machine (a 150-epoch schedule on a CPU whose sessions
last three hours) needs only the model weights and where it stands in its schedule to go on.
``pack`` keeps just that, in fp16 (8 MB for vgg_m); ``unpack`` rebuilds a ``last.pt`` that
``fervid train --resume`` continues at the next epoch with the same config, learning-rate
schedule and seeded augmentation draws.

What the carry-over gives up, on purpose, and why it costs little:

* the momentum buffers start again at zero: SGD's momentum (0.9) refills in ~20 steps of
  the ~220 in an epoch;
* the weight average (EMA) starts again from the carried weights, with its usual warm-up, so
  after a few epochs it is again an average of the last ~1,000 steps;
* the weights lose their low bits to fp16 (relative 5e-4), below one SGD step's change;
* best-model selection starts again: the carried file holds no best model, so the first
  epoch after the carry-over is the new best and later epochs must beat it. Keep the old
  best yourself if it matters; in a long decaying schedule the best comes near the end.

An SWA run cannot be carried: its average is the model it will save.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..classes import FER_CLASSES, FERPLUS_CLASSES, ClassSet
from ..errors import BadInputError, ModelFileError
from ..files import atomic_path
from . import checkpoint as ckpt
from .config import TrainConfig
from .engine import RUN_FILES, new_model
from .optim import make_optimizer
from .weight_averaging import make_ema

FORMAT = "fervid-carry"
FORMAT_VERSION = 1
#: The parts of ``last.pt`` that travel in the header (the weights travel as tensors).
_CARRIED = ("config", "epoch", "step", "history")


def pack(run_dir: str | os.PathLike, dest: str | os.PathLike, overwrite: bool = False) -> dict[str, Any]:
    """Write ``run_dir``'s last checkpoint as a small resume file; returns what it holds."""
    from safetensors.torch import save_file

    state_path, dest = Path(run_dir) / "last.pt", Path(dest)
    if dest.exists() and not overwrite:
        raise BadInputError(f"{dest}: already exists (use --overwrite to replace it)")
    if not state_path.exists():
        raise BadInputError(f"{run_dir}: nothing to pack (no last.pt)")
    state = ckpt.load_training_state(state_path)
    if not isinstance(state, dict) or any(k not in state for k in _CARRIED + ("model",)):
        raise ModelFileError(f"{state_path}: incomplete training checkpoint")
    if state.get("swa") is not None:
        raise BadInputError(f"{run_dir}: an SWA run cannot be packed (its weight average is what it saves, "
                            f"and only last.pt carries it)")
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state["model"].items()}
    header = {"format": FORMAT, "version": FORMAT_VERSION, **{k: state[k] for k in _CARRIED}}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, overwrite=overwrite, durable=True) as tmp:
        save_file(tensors, str(tmp), metadata={FORMAT: json.dumps(header)})
    return {"epoch": state["epoch"] + 1, "epochs": state["config"].get("epochs"), "path": str(dest),
            "bytes": dest.stat().st_size}


def _read(src: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not src.is_file():
        raise BadInputError(f"{src}: no such file")
    try:
        with safe_open(str(src), framework="pt") as f:
            header = json.loads((f.metadata() or {})[FORMAT])
        tensors = load_file(str(src))
    except (KeyError, ValueError):
        raise ModelFileError(f"{src}: not a fervid carry file (no {FORMAT} header)") from None
    except Exception:
        raise ModelFileError(f"{src}: not a fervid carry file (not a readable safetensors file)") from None
    if not (isinstance(header, dict) and header.get("format") == FORMAT and all(k in header for k in _CARRIED)
            and isinstance(header["config"], dict) and isinstance(header["history"], list)
            and all(isinstance(header[k], int) and header[k] >= 0 for k in ("epoch", "step"))):
        raise ModelFileError(f"{src}: not a fervid carry file (incomplete header)")
    if not isinstance(header.get("version"), int) or header["version"] > FORMAT_VERSION:
        raise ModelFileError(f"{src}: carry format v{header.get('version')} is not one this fervid reads")
    return header, tensors


def unpack(src: str | os.PathLike, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Rebuild a resumable ``run_dir/last.pt`` from a file made by :func:`pack`."""
    header, tensors = _read(Path(src))
    out = Path(run_dir)
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held:
        raise BadInputError(f"{out}: already holds a run ({', '.join(held)}); unpack into an empty folder")
    try:
        cfg = TrainConfig.from_dict({**header["config"], "out": str(out)})
    except BadInputError as e:
        raise ModelFileError(f"{src}: carried config cannot be used: {e}") from None
    # "all" is 7 classes on FER-2013 and 8 on FER+, and the data may not be on this machine:
    # the class count is the one (of the two readings of the config) whose model the weights fit.
    model = None
    for universe in (FER_CLASSES, FERPLUS_CLASSES):
        try:
            n_classes = len(ClassSet.parse(cfg.classes, cfg.merge, universe).classes)
            candidate = new_model(cfg, n_classes)
        except (BadInputError, ValueError) as e:
            raise ModelFileError(f"{src}: carried config cannot be used: {e}") from None
        reference = candidate.state_dict()
        try:
            candidate.load_state_dict({k: v.to(reference[k].dtype) if k in reference else v
                                       for k, v in tensors.items()})
        except RuntimeError:
            continue
        model = candidate
        break
    if model is None:
        raise ModelFileError(f"{src}: carried weights do not fit the {cfg.model} model of its config")
    ema = make_ema(model, cfg.ema) if cfg.ema > 0 else None  # starts again from the carried weights
    history = list(header["history"])
    state = {"config": cfg.to_dict(), "epoch": header["epoch"], "step": header["step"],
             "best_acc": -1.0, "best_epoch": -1, "stale": 0,  # best-model selection starts again
             "model": model.state_dict(), "optimizer": make_optimizer(model, cfg).state_dict(),
             "ema": ema.state_dict() if ema is not None else None, "swa": None, "history": history}
    out.mkdir(parents=True, exist_ok=True)
    ckpt.save_training_state(out / "last.pt", state)  # the resume rewrites metrics.jsonl from its history
    return {"epoch": state["epoch"] + 1, "epochs": cfg.epochs, "out": str(out)}
