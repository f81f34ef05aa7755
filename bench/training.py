"""Training speed: images per second of fervid's training step, fp32 against bf16 autocast,
in the NCHW layout and in the NHWC (channels-last) layout the engine trains in.

The step is the one ``fervid.training.engine.train`` runs (augmentation on the CPU, forward under
autocast, label-smoothed cross-entropy, backward, SGD with Nesterov momentum), on real
Training faces when they are there. Seconds per epoch are the 28,709 Training faces over
that rate: the evaluation after each epoch and data loading at start are not in it.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from common import FER_DATA, TRAIN_FACES, log, rate


def train_faces(n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        from fervid.data import load_faces

        fs = load_faces(FER_DATA, "Training")
        idx = np.random.default_rng(0).permutation(len(fs))[:n]
        return fs.images[idx], fs.labels[idx]
    except Exception:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n)


def step_fn(arch: str, precision: str, images: np.ndarray, labels: np.ndarray, batch: int, layout: str = "nhwc"):
    import torch
    import torch.nn.functional as F

    from fervid.training.augment import augment
    from fervid.training.config import AugmentConfig
    from fervid.training.engine import to_input
    from fervid.models import create_model

    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    model = create_model(arch, 7).to(memory_format=fmt).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    cfg, gen = AugmentConfig(), torch.Generator().manual_seed(0)
    imgs, ys = torch.as_tensor(images), torch.as_tensor(labels)
    dtype = torch.bfloat16 if precision == "bf16" else None
    state = {"i": 0}

    def step() -> None:
        i = state["i"] % max(1, len(imgs) // batch)
        state["i"] += 1
        x = augment(to_input(imgs[i * batch:(i + 1) * batch], torch.device("cpu")), cfg, gen).contiguous(memory_format=fmt)
        y = ys[i * batch:(i + 1) * batch]
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run(archs: list[str], threads: int, seconds: float, windows: int, batch: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    images, labels = train_faces(batch * 4)
    rows = []
    for arch in archs:
        for precision in ("fp32", "bf16"):
            for layout in ("nchw", "nhwc"):
                ips = rate(step_fn(arch, precision, images, labels, batch, layout), batch, seconds, windows)
                rows.append({"arch": arch, "precision": precision, "layout": layout, "batch": batch,
                             "images_per_s": round(ips, 1), "seconds_per_epoch": round(TRAIN_FACES / ips, 1)})
        r = {(x["precision"], x["layout"]): x["images_per_s"] for x in rows[-4:]}
        log(f"train {arch}: fp32 {r['fp32', 'nchw']:.0f}/{r['fp32', 'nhwc']:.0f} img/s, bf16 {r['bf16', 'nchw']:.0f}/"
            f"{r['bf16', 'nhwc']:.0f} img/s (NCHW/NHWC); engine (bf16 NHWC) {r['bf16', 'nhwc'] / r['fp32', 'nchw']:.2f}x "
            "fp32 NCHW")
    return {"batch": batch, "rows": rows, "seconds": round(time.perf_counter() - t0, 1)}
