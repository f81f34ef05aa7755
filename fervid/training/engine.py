"""The training loop, in the plain style of nanoGPT: a dataclass config and one loop.

:func:`train` reads as its steps: resume (a run's saved state), build (data, model, optimizer,
weight averages), then per epoch train (:mod:`fervid.training.step`), validate and save.
Determinism is per epoch: the shuffle, the augmentations and dropout of epoch ``e`` are
seeded from ``(seed, e)`` alone. A run killed anywhere therefore resumes from its last
epoch checkpoint and ends with the same weights as a run that was never interrupted.
Data-parallel training under ``torchrun`` shards each epoch's permutation by rank.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..classes import ClassSet
from ..data import FaceSet, class_set_for, load_faces
from ..errors import BadInputError, ModelFileError
from ..ferplus import scoring_labels
from ..files import write_text_atomic
from ..models import count_flops, count_params, create_model, init_whitening, train_whitening
from . import checkpoint as ckpt
from .augment import AugmentConfig, alternate_flips  # noqa: F401  (AugmentConfig: re-exported)
from .config import TrainConfig
from .distill import load_teachers
from .optim import lr_factor, make_optimizer  # noqa: F401  (lr_factor: re-exported)
from .ranks import dist_info, log, sync_buffers, validate
from .runtime import autocast_dtype, pick_device, predict_logits, to_input  # noqa: F401  (re-exported)
from .step import TrainingDivergedError, prepare_batch, train_step  # noqa: F401  (TrainingDivergedError: re-exported)
from .weight_averaging import make_ema, make_swa, refresh_bn

#: Keys of a metrics line that measure the machine, not the run (two identical runs differ in them).
TIMING_KEYS = ("seconds", "elapsed", "images_per_s")
#: Training faces whose 3x3 patches set a whitening layer (~15M patches: the covariance is settled).
WHITEN_FACES = 8000
RUN_FILES = ("last.pt", "best.safetensors", "metrics.jsonl")
#: What a resumable last.pt must hold (``ema``, ``swa`` and ``history`` may be absent or None).
RESUME_KEYS = ("config", "epoch", "best_acc", "best_epoch", "stale", "step", "model", "optimizer")


def _restore_metrics(out: Path, saved: dict[str, Any]) -> None:
    """Make metrics.jsonl hold exactly the epochs in the checkpoint (a kill can fall between writes)."""
    history = saved.get("history")
    path = out / "metrics.jsonl"
    if history is None:  # checkpoints from before the history was kept: trust the file up to the epoch
        lines = path.read_text().splitlines() if path.exists() else []
        history = [json.loads(x) for x in lines if x.strip()]
        history = [m for m in history if m.get("epoch", 0) <= saved["epoch"] + 1]
    write_text_atomic(path, "".join(json.dumps(m) + "\n" for m in history))


def _reached(cfg: TrainConfig, metrics: dict[str, Any]) -> bool:
    """Whether an epoch met the run's ``stop_at`` target (val accuracy, and train accuracy if set)."""
    return bool(cfg.stop_at and metrics["val_acc"] >= cfg.stop_at
                and (not cfg.stop_at_train or metrics["train_acc"] >= cfg.stop_at_train))


@dataclass
class _Progress:
    """Where a run stands: what a resume restores and each epoch updates."""

    start_epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1
    stale: int = 0
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _resume(cfg: TrainConfig, out: Path, state_path: Path, resume: bool
            ) -> tuple[TrainConfig, dict[str, Any] | None, _Progress]:
    """The config and state to start from: the run's ``last.pt`` with ``resume``, else a fresh
    start in a folder that must not already hold a run."""
    if not resume:  # every rank checks, so none is left waiting for a rank 0 that refused to start
        held = [name for name in RUN_FILES if (out / name).exists()]
        if held:
            raise BadInputError(f"{out}: already holds a run ({', '.join(held)}); "
                                f"use --resume to continue it, or another --out")
        return cfg, None, _Progress()
    if not state_path.exists():
        raise BadInputError(f"{out}: nothing to resume (no last.pt)")
    saved = ckpt.load_training_state(state_path)
    missing = [k for k in RESUME_KEYS if k not in saved] if isinstance(saved, dict) else list(RESUME_KEYS)
    if missing or not isinstance(saved["config"], dict):
        raise ModelFileError(f"{state_path}: incomplete training checkpoint (no {', '.join(missing) or 'config'})")
    try:
        settings = {"threads": cfg.threads} if cfg.threads else {}  # speed only: see cli.train
        cfg = TrainConfig.from_dict({**saved["config"], "out": str(out), **settings})  # the folder may have moved
    except BadInputError as e:
        raise ModelFileError(f"{state_path}: saved config cannot be used: {e}") from None
    return cfg, saved, _Progress(saved["epoch"] + 1, saved["best_acc"], saved["best_epoch"], saved["stale"],
                                 saved["step"])


def _device(cfg: TrainConfig, world: int) -> tuple[torch.device, torch.dtype | None]:
    """The device (one GPU per rank under DDP, whose process group starts here) and autocast dtype."""
    if world > 1:
        import torch.distributed as dist

        cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    return device, autocast_dtype(device, cfg.precision)


def _data(cfg: TrainConfig, train_set: FaceSet | None, val_set: FaceSet | None
          ) -> tuple[ClassSet, FaceSet, FaceSet]:
    """The class set, the training faces (a seeded subset with ``limit``) and the validation faces."""
    class_set = class_set_for(cfg.data, cfg.classes, cfg.merge, cfg.labels)
    if train_set is None:
        train_set = load_faces(cfg.data, cfg.train_split, class_set, labels=cfg.labels,
                               vote_weight=cfg.vote_weight)
    if val_set is None:  # validated on hard labels (soft-trained FER+ models: the majority, as FER+ scores)
        val_set = load_faces(cfg.data, cfg.val_split, class_set, labels=scoring_labels(cfg.labels))
    if cfg.limit and cfg.limit < len(train_set):  # a seeded random subset: sources are sorted by class
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train_set))[:cfg.limit])
        train_set = train_set.subset(keep)
    return class_set, train_set, val_set


@dataclass
class _Net:
    """The model being trained and what trains beside it."""

    model: nn.Module
    net: nn.Module  # the model, or its DDP wrapper
    opt: torch.optim.Optimizer
    ema: Any
    swa: Any
    teachers: list[nn.Module]
    n_params: int
    mflops: float


def new_model(cfg: TrainConfig, n_classes: int) -> nn.Module:
    """The untrained network a run's config describes, as the engine trains it: the one place a
    config becomes a model, so ``carry`` rebuilds exactly the parameter set a run resumes into."""
    # Dropout changes no weight shape, so a saved model loads with its architecture's default.
    arch_kwargs = {"dropout": cfg.dropout} if cfg.dropout >= 0 else {}
    try:
        model = create_model(cfg.model, num_classes=n_classes, **arch_kwargs)
    except ValueError as e:  # e.g. a dropout the architecture scales past 1 (baseline doubles it)
        raise BadInputError(f"--dropout {cfg.dropout} does not fit {cfg.model}: {e}") from None
    if not cfg.whiten:  # trained, not frozen: re-initialised, and held by the optimizer
        train_whitening(model)
    return model


def _build(cfg: TrainConfig, classes: list[str], images: torch.Tensor, device: torch.device,
           saved: dict[str, Any] | None, state_path: Path, ddp: bool) -> _Net:
    """The model (from its seed, ``--init`` or whitened from the faces), teachers, optimizer and
    weight averages, with a resumed run's state loaded into them."""
    torch.manual_seed(cfg.seed)
    model = new_model(cfg, len(classes))
    if cfg.init and saved is None:
        init_model, init_meta = ckpt.load_model(cfg.init)
        if init_meta["arch"] != cfg.model or list(init_meta["classes"]) != classes:
            raise BadInputError(f"{cfg.init}: a {init_meta['arch']} model of classes {','.join(init_meta['classes'])}"
                                f" cannot start a {cfg.model} run of classes {','.join(classes)}")
        model.load_state_dict(init_model.state_dict())
    elif saved is None and cfg.whiten:  # a patch-whitening layer is set from the training faces
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed))[:WHITEN_FACES]
        init_whitening(model, to_input(images[pick], torch.device("cpu")))
    # NHWC runs oneDNN's faster convolution kernels: 1.29x the NCHW step rate for vgg_s under bf16
    # on 2 cores (python -m bench.run --sections training); same maths, saved files unchanged.
    model = model.to(device, memory_format=torch.channels_last)
    teachers = load_teachers(cfg.teacher, classes, device) if cfg.teacher else []
    n_params, mflops = count_params(model), count_flops(model) / 1e6
    opt = make_optimizer(model, cfg)
    ema = make_ema(model, cfg.ema) if cfg.ema > 0 else None
    swa = make_swa(model) if cfg.swa_start else None
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            if ema is not None:
                ema.load_state_dict(saved["ema"])
            if swa is not None:
                swa.load_state_dict(saved["swa"])
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelFileError(f"{state_path}: saved state does not fit the {cfg.model} model and optimizer "
                                 "of its config (damaged, or from another run)") from None
    net: nn.Module = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return _Net(model, net, opt, ema, swa, teachers, n_params, mflops)


def _order(cfg: TrainConfig, epoch: int, n: int, labels: torch.Tensor, counts: torch.Tensor,
           g: torch.Generator, rank: int, world: int) -> torch.Tensor:
    """This rank's faces of an epoch, in order: a seeded shuffle (or a class-balanced draw), sharded."""
    if cfg.class_weighting == "sampler":
        w = (1.0 / counts.clamp_min(1))[labels]
        order = torch.multinomial(w, n, replacement=True, generator=g)
    else:
        order = torch.randperm(n, generator=g)
    return order[rank::world]


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          train_set: FaceSet | None = None, val_set: FaceSet | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` and write checkpoints, metrics and the best model to ``cfg.out``.

    ``on_epoch`` receives each epoch's metrics (``tune`` uses it to report and prune).
    Returns the final summary (best epoch, best val accuracy, paths). With ``resume``,
    only ``cfg.out`` is used: everything else comes from the run's ``last.pt``.
    """
    rank, world = dist_info()
    out = Path(cfg.out)
    state_path = out / "last.pt"
    cfg, saved, run = _resume(cfg, out, state_path, resume)
    cfg.validate()
    ddp = world > 1
    device, dtype = _device(cfg, world)
    per_rank = cfg.batch_size // world
    if per_rank < 1:
        raise BadInputError(f"batch size {cfg.batch_size} is smaller than the {world} processes sharing it")

    class_set, train_set, val_set = _data(cfg, train_set, val_set)
    classes = list(class_set.classes)
    images = torch.from_numpy(train_set.images)
    labels = torch.from_numpy(train_set.labels)
    # FER+ --labels soft: cross-entropy against each face's vote distribution (F.cross_entropy takes
    # probabilities as targets; label smoothing, class weights, mixup and CutMix mix them the same way).
    targets = None if train_set.targets is None else torch.from_numpy(train_set.targets)
    counts = torch.bincount(labels, minlength=len(classes)).float()
    m = _build(cfg, classes, images, device, saved, state_path, ddp)
    if saved is not None:
        run.history = list(saved.get("history") or [])
    weight = None
    if cfg.class_weighting == "loss":  # inverse-frequency, softened by a square root
        weight = (counts.sum() / (len(classes) * counts.clamp_min(1))).sqrt().to(device)

    n = len(labels)
    steps_per_epoch = max(1, (n // world) // per_rank)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        if saved is not None:
            _restore_metrics(out, saved)
    log(f"fervid train: {cfg.model} ({m.n_params / 1e6:.2f}M params, {m.mflops:.1f} MFLOPs/face) on {device}"
         f"{' x' + str(world) if ddp else ''}, {'bf16' if dtype == torch.bfloat16 else 'fp32'}; "
         f"{n} train faces ({cfg.train_split}), {len(val_set)} val ({cfg.val_split}); "
         f"classes {class_set.describe()}", rank)
    log("config: " + json.dumps(cfg.to_dict()), rank)
    if saved is not None:
        best = (f"best {run.best_acc:.4f} @ {run.best_epoch + 1}" if run.best_epoch >= 0
                else "best-model selection starts again")
        log(f"resuming after epoch {run.start_epoch} ({best})", rank)

    history = run.history
    stopped = bool(cfg.patience and run.stale >= cfg.patience)  # a resumed run that had already stopped early
    stopped = stopped or bool(history and _reached(cfg, history[-1]))
    flips = alternate_flips(n, cfg.seed) if cfg.augment.flip_mode == "alternate" else None
    elapsed = float(history[-1].get("elapsed", 0.0)) if history else 0.0
    for epoch in range(run.start_epoch, cfg.epochs):
        if stopped:
            break
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        # Ranks share the shuffle (then take disjoint shards) but not the augmentation draws,
        # which would otherwise repeat the same warps and erasures on every rank's batch.
        g_aug = g if world == 1 else torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * rank)
        torch.manual_seed(cfg.seed * 100_003 + epoch + 7)
        order = _order(cfg, epoch, n, labels, counts, g, rank, world)
        seen, loss_sum, correct, lr = _train_epoch(cfg, m, run, epoch, order, images, labels, targets, flips, g_aug,
                                                   per_rank, steps_per_epoch, device, dtype, weight,
                                                   progress and rank == 0)
        train_seconds = time.time() - t0
        if ddp:
            import torch.distributed as dist

            sync_buffers([m.model] + ([m.ema] if m.ema is not None else []))
            totals = torch.tensor([loss_sum, float(correct), float(seen)], dtype=torch.float64)
            dist.all_reduce(totals)
            loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        eval_model = _averaged(cfg, m, epoch, images, device, dtype)
        val_loss, val_acc = validate(eval_model, val_set, device, dtype, rank, world)
        improved = val_acc > run.best_acc
        if improved:
            run.best_acc, run.best_epoch, run.stale = val_acc, epoch, 0
        else:
            run.stale += 1
        size = cfg.train_size(epoch)
        metrics = {"epoch": epoch + 1, "train_loss": round(loss_sum / seen, 5), "train_acc": round(correct / seen, 5),
                   "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5), "lr": round(lr, 6),
                   "seconds": round(time.time() - t0, 1), "best_val_acc": round(run.best_acc, 5),
                   "elapsed": round(elapsed + time.time() - t0, 1),
                   "images_per_s": round(seen / max(train_seconds, 1e-9), 1),  # all ranks together
                   **({"size": size} if size else {})}
        elapsed = metrics["elapsed"]
        history.append(metrics)
        if rank == 0:
            _save_epoch(cfg, m, run, out, state_path, epoch, eval_model, improved, class_set, val_loss, val_acc, metrics)
        if on_epoch is not None:
            on_epoch(metrics)
        if cfg.patience and run.stale >= cfg.patience:  # same on every rank: val accuracy is all-reduced
            log(f"early stop: no better val accuracy for {cfg.patience} epochs", rank)
            stopped = True
        if _reached(cfg, metrics):
            log(f"target reached: val acc {val_acc:.4f} >= {cfg.stop_at} after {elapsed / 60:.1f} minutes", rank)
            stopped = True
    summary = {"best_val_acc": run.best_acc, "best_epoch": run.best_epoch + 1, "out": str(out),
               "model": str(out / "best.safetensors"), "epochs_run": len(history), "stopped_early": stopped,
               "minutes": round(elapsed / 60, 2),
               "target_reached": bool(history and _reached(cfg, history[-1]))}
    if ddp:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary


def _train_epoch(cfg: TrainConfig, m: _Net, run: _Progress, epoch: int, order: torch.Tensor, images: torch.Tensor,
                 labels: torch.Tensor, targets: torch.Tensor | None, flips: torch.Tensor | None,
                 g_aug: torch.Generator, per_rank: int, steps_per_epoch: int, device: torch.device,
                 dtype: torch.dtype | None, weight: torch.Tensor | None, progress: bool) -> tuple[int, float, int, float]:
    """One pass over this rank's ``order``: (faces seen, summed loss, correct answers, last lr)."""
    from tqdm import tqdm

    m.net.train()
    size = cfg.train_size(epoch)
    total_steps = steps_per_epoch * cfg.epochs
    seen, loss_sum, correct, lr = 0, 0.0, 0, 0.0
    bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not progress or not sys.stderr.isatty())
    for i in bar:
        idx = order[i * per_rank:(i + 1) * per_rank]
        y = labels[idx] if targets is None else targets[idx]
        flip = None if flips is None else flips[idx] ^ bool(epoch % 2)
        x, y, mixed = prepare_batch(images[idx], y, cfg, g_aug, flip, size, device)
        lr = cfg.lr * lr_factor(run.step / total_steps, cfg.schedule, cfg.warmup_epochs / cfg.epochs)
        loss, logits = train_step(m.net, m.opt, x, y, mixed, lr, cfg, dtype, weight, m.teachers,
                                  where=f"epoch {epoch + 1} step {i + 1}")
        if m.ema is not None:
            m.ema.update_parameters(m.model)
        run.step += 1
        seen += len(y)
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(1) == labels[idx].to(device)).sum())
        bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.4f}", refresh=False)
    bar.close()
    return seen, loss_sum, correct, lr


def _averaged(cfg: TrainConfig, m: _Net, epoch: int, images: torch.Tensor, device: torch.device,
              dtype: torch.dtype | None) -> nn.Module:
    """The model to validate and save after an epoch: the SWA average once it has started (this
    epoch's weights added, BatchNorm statistics re-measured), else the EMA, else the weights."""
    swa_on = m.swa is not None and epoch + 1 >= cfg.swa_start
    if swa_on:  # one equal-weight sample per epoch
        m.swa.update_parameters(m.model)
        # Seeded from (seed, epoch) alone, as on every rank: the statistics agree across ranks.
        refresh_bn(m.swa, images, torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 2_000_003),
                   to_input, device, dtype)
    return m.swa.module if swa_on else m.ema.module if m.ema is not None else m.model


def _save_epoch(cfg: TrainConfig, m: _Net, run: _Progress, out: Path, state_path: Path, epoch: int,
                eval_model: nn.Module, improved: bool, class_set: ClassSet, val_loss: float, val_acc: float,
                metrics: dict[str, Any]) -> None:
    """Rank 0's files after an epoch. Order matters for a kill: best model, then the state (which
    carries the metrics history, so a resume rewrites metrics.jsonl), then the metrics line."""
    meta = ckpt.make_meta(cfg.model, list(class_set.classes), params=m.n_params, mflops=round(m.mflops, 2),
                          trained={"data": cfg.data, "train_split": cfg.train_split, "val_split": cfg.val_split,
                                   "epoch": epoch + 1, "seed": cfg.seed, "class_set": class_set.describe()},
                          metrics={"val_acc": round(val_acc, 5), "val_split": cfg.val_split})
    if improved:
        ckpt.save_model(out / "best.safetensors", eval_model, meta)
    ckpt.save_training_state(state_path, {
        "config": cfg.to_dict(), "epoch": epoch, "best_acc": run.best_acc, "best_epoch": run.best_epoch,
        "stale": run.stale, "step": run.step, "model": m.model.state_dict(), "optimizer": m.opt.state_dict(),
        "ema": m.ema.state_dict() if m.ema is not None else None,
        "swa": m.swa.state_dict() if m.swa is not None else None, "history": run.history})
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(metrics) + "\n")
    log(f"epoch {epoch + 1}/{cfg.epochs}: loss {metrics['train_loss']:.3f} train acc {metrics['train_acc']:.4f} "
         f"| val loss {val_loss:.3f} val acc {val_acc:.4f} (best {run.best_acc:.4f} @ {run.best_epoch + 1}) "
         f"| {metrics['seconds']:.0f}s", 0)
