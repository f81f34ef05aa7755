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


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator,
            flip: torch.Tensor | None = None) -> torch.Tensor:
    """Augment a normalised batch ``[N, 1, H, W]`` (fresh tensor; input untouched).

    ``flip`` (bool ``[N]``) decides the mirror images instead of a draw: alternating flips
    (:func:`alternate_flips`) show each face both ways in every two epochs, where random
    draws leave some faces seen one way for several epochs running."""
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
    drawn = torch.rand(n, generator=g) < cfg.flip  # drawn even when given: later draws stay the same
    flip = drawn if flip is None else flip
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


def alternate_flips(n: int, seed: int) -> torch.Tensor:
    """Each of ``n`` faces' flip in even epochs (a seeded coin); odd epochs use the opposite."""
    return torch.rand(n, generator=torch.Generator().manual_seed(seed * 7919 + 17)) < 0.5


def _beta(alpha: float, g: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from ``g`` (torch.distributions would use the global RNG), via a
    NumPy generator seeded from it; 1.0 when alpha is 0."""
    if alpha <= 0:
        return 1.0
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator):
    """Mixup: blend each face with a shuffled partner; returns inputs, both targets and weight."""
    lam = _beta(alpha, g)
    perm = torch.randperm(x.shape[0], generator=g)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def cutmix(x: torch.Tensor, y: torch.Tensor, alpha: float, g: torch.Generator):
    """CutMix (Yun et al. 2019): paste one box of a shuffled partner into every face of the batch.

    Unlike mixup's blend, each pixel stays a real face's pixel, so a model must read the
    expression from what is left of the face (a mouth, the eyes). The box is clipped at the
    border, so the returned weight is the area actually kept, not the Beta draw."""
    n, _, h, w = x.shape
    lam = _beta(alpha, g)
    perm = torch.randperm(n, generator=g)
    cut = math.sqrt(1.0 - lam)
    bh, bw = int(h * cut), int(w * cut)
    cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
    y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
    out = x.clone()
    out[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
    return out, y, y[perm], 1.0 - (y1 - y0) * (x1 - x0) / (h * w)


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup_alpha: float, cutmix_alpha: float, g: torch.Generator):
    """Mixup or CutMix for one batch, or ``None`` when both are off. With both on, each batch
    takes one of the two with even odds (timm's switch), so a run sees both kinds of mixing."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    use_cut = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(torch.rand(1, generator=g) < 0.5))
    return cutmix(x, y, cutmix_alpha, g) if use_cut else mixup(x, y, mixup_alpha, g)
