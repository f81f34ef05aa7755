"""Batch augmentation on tensors: one affine warp, flips and random erasing for a whole batch.

Everything is drawn from an explicit ``torch.Generator`` so a resumed run replays the
same augmentations, and nothing loops over images in Python (the CPU is the GPU here).
Each knob is a strength that ``fervid tune --space augment`` can search.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment a normalised batch ``[N, 1, H, W]`` (fresh tensor; input untouched)."""
    n, _, h, w = x.shape
    # Affine part: rotation, isotropic scale, translation and the zoom of a random crop,
    # composed into one matrix so the face is resampled once.
    angle = _uniform(n, -cfg.rotate, cfg.rotate, g) * (math.pi / 180.0)
    zoom = _uniform(n, 1.0 - cfg.scale, 1.0 + cfg.scale, g)
    tx = _uniform(n, -cfg.shift, cfg.shift, g) * 2.0
    ty = _uniform(n, -cfg.shift, cfg.shift, g) * 2.0
    if cfg.crop > 0:
        side = _uniform(n, cfg.crop, 1.0, g)  # crop side fraction: sample a sub-window
        zoom = zoom / side
        tx = tx + _uniform(n, -1.0, 1.0, g) * (1.0 - side)
        ty = ty + _uniform(n, -1.0, 1.0, g) * (1.0 - side)
    flip = torch.rand(n, generator=g) < cfg.flip
    sx = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * sx, -sin, tx], 1), torch.stack([sin * sx, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.erase > 0:
        area = _uniform(n, 0.02, cfg.erase_area, g) * h * w
        aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g))
        eh = torch.sqrt(area * aspect).clamp(1, h).long()
        ew = torch.sqrt(area / aspect).clamp(1, w).long()
        y0 = (torch.rand(n, generator=g) * (h - eh + 1).float()).long()
        x0 = (torch.rand(n, generator=g) * (w - ew + 1).float()).long()
        on = torch.rand(n, generator=g) < cfg.erase
        ys = torch.arange(h).view(1, h, 1)
        xs = torch.arange(w).view(1, 1, w)
        mask = ((ys >= y0.view(-1, 1, 1)) & (ys < (y0 + eh).view(-1, 1, 1))
                & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + ew).view(-1, 1, 1)) & on.view(-1, 1, 1))
        noise = torch.randn(out.shape, generator=g)
        out = torch.where(mask.unsqueeze(1), noise, out)
    return out


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator):
    """Mixup: blend each face with a shuffled partner; returns inputs, both targets and weight.

    The Beta draw comes from ``g`` too (torch.distributions would use the global RNG),
    via a NumPy generator seeded from it."""
    lam = 1.0
    if alpha > 0:
        seed = int(torch.randint(0, 2**62, (1,), generator=g))
        lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=g)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam
