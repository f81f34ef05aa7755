"""Training speed: images per second of fervid's training step, fp32 against bf16 autocast,
in the NCHW layout and in the NHWC (channels-last) layout the engine trains in.

The step is the engine's own (:func:`fervid.training.step.prepare_batch` and
:func:`~fervid.training.step.train_step`, what ``fervid.training.engine.train`` calls for every
batch: augmentation on the CPU, forward under autocast, label-smoothed cross-entropy, backward,
the default config's optimizer), on real Training faces when they are there. Seconds per epoch are the 28,709 Training faces over
that rate: the evaluation after each epoch and data loading at start are not in it.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..common import FER_DATA, TRAIN_FACES, log, rate


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
    """One call = one step of the engine's own training step (:mod:`fervid.training.step`):
    ``prepare_batch`` (augmentation on the CPU) then ``train_step`` (forward under autocast,
    label-smoothed cross-entropy, backward, the optimizer's step), with the default config's
    optimizer and augmentation. ``layout`` nchw times the same step without channels-last."""
    import torch

    from fervid.models import create_model
    from fervid.training.config import TrainConfig
    from fervid.training.optim import make_optimizer
    from fervid.training.step import prepare_batch, train_step

    torch.manual_seed(0)
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    cfg = TrainConfig(model=arch, batch_size=batch, mixup=0.0, cutmix=0.0)
    model = create_model(arch, 7).to(memory_format=fmt).train()
    opt = make_optimizer(model, cfg)
    gen, cpu = torch.Generator().manual_seed(0), torch.device("cpu")
    imgs, ys = torch.as_tensor(images), torch.as_tensor(labels)
    dtype = torch.bfloat16 if precision == "bf16" else None
    state = {"i": 0}

    def step() -> None:
        i = state["i"] % max(1, len(imgs) // batch)
        state["i"] += 1
        x, y, mixed = prepare_batch(imgs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch], cfg, gen,
                                    None, None, cpu, memory_format=fmt)
        train_step(model, opt, x, y, mixed, cfg.lr, cfg, dtype)

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
