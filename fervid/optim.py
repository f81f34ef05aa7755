"""The optimizer and learning-rate schedule of a run, kept apart from the loop that steps them.

Parameters fall into two groups. Weights (convolutions, linear layers) get weight decay;
biases and norm shifts (1-d parameters) do not, since decay would only pull them towards
zero without regularising anything, and they may step faster (``bias_lr_scale``): the
CIFAR speedruns found that norm shifts want a much larger step than the weights beside
them. Frozen parameters (a whitening layer, fixed BatchNorm scales) are left out.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig

SCHEDULES = ("cosine", "onecycle", "constant", "triangle")


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The run's optimizer over the trainable parameters, in a decay and a no-decay group.

    Each group's ``lr_scale`` is read by :func:`set_lr`, so the schedule sets one base rate.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": cfg.bias_lr_scale}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Give every group the base rate ``lr`` times its own scale."""
    for group in opt.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def lr_factor(progress: float, schedule: str, warmup: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1] of training; warmup is a fraction too.

    ``triangle`` rises linearly over the warm-up and falls linearly to zero at the end: the
    shape of the short CIFAR speedrun schedules, which spend no steps at a tiny rate.
    """
    if schedule == "onecycle":
        warmup = max(warmup, 0.3)
    if warmup > 0 and progress < warmup:
        return (progress + 1e-8) / warmup
    if schedule == "constant":
        return 1.0
    rest = min(1.0, (progress - warmup) / max(1e-8, 1.0 - warmup))
    if schedule == "triangle":
        return max(0.0, 1.0 - rest)
    return 0.5 * (1.0 + math.cos(math.pi * rest))
