"""Where and how tensors run: the device, the autocast precision, the network input, and inference.

Shared by training (:mod:`fervid.training.engine`), evaluation and the interpretation views.
:func:`to_input` is the tensor form of :func:`fervid.preprocess.normalize` (the same arithmetic,
on the device), and :func:`predict_logits` takes its TTA views from :data:`fervid.probabilities.TTA_SHIFTS`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError
from ..preprocess import MEAN, STD
from ..probabilities import TTA_SHIFTS


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise BadInputError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda asked for, but no CUDA GPU is available")
    return dev


def _cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: without them CPU bf16 is emulated, slower and no better than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    cap = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else ""
    return "AMX" in cap.upper()


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """bf16 where the hardware runs it natively (AVX-512 BF16/AMX CPUs, Ampere+ GPUs), else fp32.

    fp16 is never picked: without a gradient scaler it underflows, and fp32 on an old GPU is safe.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and _cpu_has_native_bf16() else None


def to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [N, H, W] equalized faces -> normalised float [N, 1, H, W] on ``device``."""
    x = images.to(device, non_blocking=True).unsqueeze(1).float().div_(255.0)
    return x.sub_(MEAN).div_(STD)


@torch.no_grad()
def predict_logits(model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                   device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                   tta: bool = False) -> torch.Tensor:
    """Logits for equalized uint8 faces; with ``tta``, averaged softmax over flips and shifted crops
    (returned as log-probabilities so argmax and softmax still work)."""
    device = torch.device(device)
    model.eval()
    imgs = torch.as_tensor(images)
    outs = []
    for i in range(0, len(imgs), batch_size):
        x = to_input(imgs[i:i + batch_size], device)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if not tta:
                outs.append(model(x).float().cpu())
                continue
            views = [x, x.flip(-1)]
            for dy, dx in TTA_SHIFTS:
                views.append(torch.roll(x, shifts=(dy, dx), dims=(-2, -1)))
            probs = torch.stack([F.softmax(model(v).float(), -1) for v in views]).mean(0)
            outs.append(probs.clamp_min(1e-8).log().cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def accuracy(logits: torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Fraction correct, counted in integers (a float32 mean is off in the 8th digit)."""
    n = len(labels)
    return int((logits.argmax(1) == torch.as_tensor(labels)).sum()) / n if n else 0.0
