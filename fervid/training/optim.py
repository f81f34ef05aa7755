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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> "torch.optim.Optimizer | MuonWithSGD":
    """The run's optimizer over the trainable parameters, in a decay and a no-decay group.

    Each group's ``lr_scale`` is read by :func:`set_lr`, so the schedule sets one base rate.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
              {"params": no_decay, "weight_decay": 0.0, "lr_scale": cfg.bias_lr_scale}]
    if cfg.optimizer == "muon":
        return MuonWithSGD(groups, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _as_matrix(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A 4-d conv tensor as the ``[out, in*kh*kw]`` matrix Muon works on, sharing storage with
    ``like``'s layout (channels-last weights are ``[out, kh, kw, in]`` in memory)."""
    if like.is_contiguous():
        return t.reshape(t.size(0), -1)
    return t.permute(0, 2, 3, 1).reshape(t.size(0), -1)


class MuonWithSGD:
    """Muon (``torch.optim.Muon``) for convolution weights, Nesterov SGD for everything else.

    Muon orthogonalises each weight matrix's momentum (Newton-Schulz), which the CIFAR-10
    speedruns found reaches a given accuracy in fewer steps. PyTorch's Muon takes only 2-d
    parameters, so each conv weight is handed to it as a 2-d view of the same storage: Muon's
    in-place update is the conv's update. Linear layers (the head) stay with SGD, as Muon's
    authors advise. Quacks like one optimizer for the engine (param_groups, zero_grad, step,
    state_dict), so resume and ``fervid carry`` work unchanged.
    """

    def __init__(self, groups: list[dict], cfg: TrainConfig):
        convs = [p for g in groups for p in g["params"] if p.ndim == 4]
        conv_ids = {id(p) for p in convs}
        self._pairs = [(p, nn.Parameter(_as_matrix(p.data, p.data))) for p in convs]
        for p, q in self._pairs:
            if q.data_ptr() != p.data_ptr():
                raise ValueError("conv weight is neither contiguous nor channels-last: Muon cannot share it")
        rest = [{**g, "params": [p for p in g["params"] if id(p) not in conv_ids]} for g in groups]
        self.muon = torch.optim.Muon([q for _, q in self._pairs], lr=cfg.muon_lr, momentum=0.95, nesterov=True,
                                     weight_decay=cfg.weight_decay * cfg.lr / cfg.muon_lr)
        self.muon.param_groups[0]["lr_scale"] = cfg.muon_lr / cfg.lr
        self.sgd = torch.optim.SGD([g for g in rest if g["params"]], lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov)

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.sgd.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the convs' own gradients too: Muon holds only their views, so its zero_grad misses them."""
        for p, _ in self._pairs:
            p.grad = None
        self.muon.zero_grad(set_to_none=True)
        self.sgd.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for p, q in self._pairs:
            q.grad = None if p.grad is None else _as_matrix(p.grad, p.data)
        self.muon.step()
        self.sgd.step()

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "sgd": self.sgd.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.muon.load_state_dict(state["muon"])
        self.sgd.load_state_dict(state["sgd"])


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
