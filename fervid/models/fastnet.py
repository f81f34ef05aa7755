"""FastNet: a net shaped for time-to-accuracy on a CPU, after the CIFAR-10 speedruns (airbench).

Where a VGG spends most of its FLOPs at 48x48, FastNet does almost nothing there: a frozen
3x3 patch-whitening convolution (its filters are the eigenvectors of the training faces'
3x3 patch covariance, set once from data by :func:`init_whitening`) feeds conv groups that
pool *before* their second convolution, so the wide layers run on 23x23 maps and smaller.
Every group is ``conv -> maxpool -> BN -> GELU -> conv -> BN -> GELU``; the second conv
starts as an identity (Dirac) so a fresh net passes its input through and trains at once
with a high learning rate. BatchNorm keeps a fixed scale of 1 and learns only its shift
(the speedruns' trick: fewer parameters to fight the learning rate). A global max-pool
and one linear layer, whose output is scaled down (``head_scale``), make the head.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .registry import register_model

#: Patch side of the whitening convolution; 2 * side * side filters (each eigenvector and its negative).
WHITEN_SIDE = 3


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, pool: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.norm1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = _norm(cout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # batch statistics are taken on the pooled map, 4x cheaper
            x = self.norm1(self.pool(self.conv1(x)))
        else:
            # Frozen BatchNorm with a positive scale is a per-channel increasing map, so it commutes
            # with max-pooling: normalising before the pool gives the same numbers and lets ONNX
            # fold the norm into conv1, which int8 quantization needs to keep agreeing with fp32.
            x = self.pool(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(self.act(x))))


def _norm(width: int) -> nn.BatchNorm2d:
    """BatchNorm with its scale fixed at 1 (still a parameter, so saved files keep one layout)."""
    bn = nn.BatchNorm2d(width, momentum=0.4, eps=1e-5)
    bn.weight.requires_grad_(False)
    return bn


class FastNet(nn.Module):
    def __init__(self, num_classes: int = 7, widths: Sequence[int] = (64, 192, 384),
                 head_scale: float = 1 / 8, dropout: float = 0.0):
        super().__init__()
        k = WHITEN_SIDE
        # Frozen: its weights come from the data (init_whitening), never from the gradient.
        self.whiten = nn.Conv2d(1, 2 * k * k, k, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.whiten.bias.requires_grad_(False)
        self.act = nn.GELU()
        groups, cin = [], 2 * k * k
        for w in widths:
            groups.append(ConvGroup(cin, w))
            cin = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.head_scale = head_scale
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, ConvGroup):
                for conv in (m.conv1, m.conv2):
                    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                # Identity (Dirac) start for the square conv: the first cin channels pass through.
                w = m.conv2.weight
                torch.nn.init.dirac_(w[:w.size(1)])
        self.whiten.weight.copy_(torch.randn_like(self.whiten.weight) * 0.3)  # placeholder until init_whitening
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.pool(self.groups(x)).flatten(1)
        return self.head(self.drop(x)) * self.head_scale


@torch.no_grad()
def whitening_weights(faces: torch.Tensor, eps: float = 5e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Filters and bias of a patch-whitening conv from normalised faces ``[N, 1, H, W]``.

    Each filter projects a 3x3 patch onto one eigenvector of the patches' covariance, scaled
    by ``1/sqrt(eigenvalue + eps)``, so the layer's outputs are decorrelated with unit
    variance; the negated copies let a following ReLU/GELU keep both signs. The bias
    centres the patches, so the whitened map is zero-mean over the training faces.
    """
    k = WHITEN_SIDE
    patches = faces.float().unfold(2, k, 1).unfold(3, k, 1).transpose(1, 3).reshape(-1, k * k)
    mean = patches.mean(0)
    centred = patches - mean
    cov = centred.T @ centred / len(centred)
    eigval, eigvec = torch.linalg.eigh(cov)
    filters = (eigvec.T / torch.sqrt(eigval + eps)[:, None]).flip(0)  # largest variance first
    filters = torch.cat([filters, -filters]).view(2 * k * k, 1, k, k)
    bias = -(filters.view(2 * k * k, -1) @ mean)
    return filters, bias


def init_whitening(model: nn.Module, faces: torch.Tensor) -> bool:
    """Set every FastNet whitening layer in ``model`` from ``faces`` (it stays frozen); False if none."""
    done = False
    for m in model.modules():
        if isinstance(m, FastNet):
            w, b = whitening_weights(faces)
            m.whiten.weight.data.copy_(w.to(m.whiten.weight))
            m.whiten.bias.data.copy_(b.to(m.whiten.bias))
            done = True
    return done


def train_whitening(model: nn.Module) -> bool:
    """Make every FastNet whitening layer an ordinary trained convolution (Kaiming start); False if none.

    The "whitening off" arm of an ablation: the same architecture and cost, learnt instead of set.
    """
    done = False
    for m in model.modules():
        if isinstance(m, FastNet):
            nn.init.kaiming_normal_(m.whiten.weight, nonlinearity="relu")
            m.whiten.weight.requires_grad_(True)
            m.whiten.bias.requires_grad_(True)
            done = True
    return done


@register_model
def fastnet_s(num_classes: int = 7, **kw) -> nn.Module:
    """FastNet, widths 64-128-256: frozen patch whitening, Dirac starts, conv-pool-conv groups; for fast CPU training."""
    return FastNet(num_classes, widths=(64, 128, 256), **kw)


@register_model
def fastnet_m(num_classes: int = 7, **kw) -> nn.Module:
    """FastNet, widths 64-128-384: the fast recipe's net (configs/fast.yaml), its width on the 11x11 and 5x5 maps."""
    return FastNet(num_classes, widths=(64, 128, 384), **kw)


@register_model
def fastnet_l(num_classes: int = 7, **kw) -> nn.Module:
    """FastNet, widths 96-256-512: the widest speedrun net, for longer budgets and GPUs."""
    return FastNet(num_classes, widths=(96, 256, 512), **kw)
