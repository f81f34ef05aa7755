"""One training step, as the engine runs it: a batch made ready on the CPU, then forward,
loss, backward and the optimizer step on the device.

:func:`fervid.training.engine.train` calls these for every batch, and ``bench/`` times the very
same functions, so a benchmark's images per second are the engine's. The order of the random
draws (augmentation and mixing from the epoch's generator, dropout from torch's global one) is
part of the contract: an interrupted run resumes bit-identical because it never changes.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FervidError
from .augment import augment, mix_batch
from .config import TrainConfig
from .distill import distill_loss, teacher_probs
from .optim import set_lr
from .runtime import to_input

CPU = torch.device("cpu")


class TrainingDivergedError(FervidError, FloatingPointError):
    """The loss became NaN or infinite: a user-fixable setting (usually the learning rate)."""


def prepare_batch(images: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, g_aug: torch.Generator,
                  flip: torch.Tensor | None, size: int | None, device: torch.device,
                  memory_format: torch.memory_format = torch.channels_last):
    """``(x, y, mixed)`` for uint8 faces ``images`` and their targets ``y``: augmented on the CPU
    (``g_aug`` is a CPU generator), resized for progressive resizing, mixed (mixup or CutMix;
    ``mixed`` is ``(ya, yb, lam)`` on the device, or None) and moved to ``device``. NHWC
    (channels-last) by default: oneDNN's convolutions run faster in it."""
    x = augment(to_input(images, CPU), cfg.augment, g_aug, flip)
    if size and size != x.shape[-1]:  # progressive resizing: early epochs on smaller faces
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mixed = mix_batch(x, y, cfg.mixup, cfg.cutmix, g_aug)
    if mixed is not None:
        x, ya, yb, lam = mixed
        mixed = (ya.to(device), yb.to(device), lam)
    return x.to(device, non_blocking=True).contiguous(memory_format=memory_format), y.to(device), mixed


def train_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, mixed: Any,
               lr: float, cfg: TrainConfig, dtype: torch.dtype | None, weight: torch.Tensor | None = None,
               teachers: list[nn.Module] | None = None, where: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step at learning rate ``lr``; returns (loss, logits).

    Cross-entropy with label smoothing (and class weights), against the mixed targets when the
    batch was mixed, blended with the teachers' distillation loss when there are teachers.
    A NaN or infinite loss raises :class:`TrainingDivergedError` naming ``where``.
    """
    set_lr(opt, lr)
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = net(x)
    if mixed is not None:
        ya, yb, lam = mixed
        loss = lam * F.cross_entropy(logits.float(), ya, weight=weight, label_smoothing=cfg.label_smoothing) \
            + (1 - lam) * F.cross_entropy(logits.float(), yb, weight=weight, label_smoothing=cfg.label_smoothing)
    else:
        loss = F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=cfg.label_smoothing)
    if teachers:
        kd = distill_loss(logits, teacher_probs(teachers, x, cfg.distill_temp, dtype), cfg.distill_temp)
        loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
    if not torch.isfinite(loss):
        raise TrainingDivergedError(f"loss became {loss.item()} at {where}; lower --lr (now {cfg.lr})")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss, logits
