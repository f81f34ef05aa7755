"""Training and evaluation loops, in the plain style of nanoGPT: a dataclass config and one loop.

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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint as ckpt
from .averaging import make_ema, make_swa, refresh_bn
from .augment import AugmentConfig, alternate_flips, augment, mix_batch  # noqa: F401  (AugmentConfig: re-exported)
from .config import TrainConfig
from .data import FaceSet, class_set_for, load_faces
from .distill import distill_loss, load_teachers, teacher_probs
from .errors import BadInputError, FervidError, ModelFileError
from .ferplus import scoring_labels
from .io import write_text_atomic
from .models import count_flops, count_params, create_model, init_whitening, train_whitening
from .optim import lr_factor, make_optimizer, set_lr  # noqa: F401  (lr_factor, make_optimizer: re-exported)
from .preprocess import MEAN, STD


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
            for dy, dx in ((-2, 0), (2, 0), (0, -2), (0, 2)):
                views.append(torch.roll(x, shifts=(dy, dx), dims=(-2, -1)))
            probs = torch.stack([F.softmax(model(v).float(), -1) for v in views]).mean(0)
            outs.append(probs.clamp_min(1e-8).log().cpu())
    return torch.cat(outs) if outs else torch.zeros(0)


def accuracy(logits: torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Fraction correct, counted in integers (a float32 mean is off in the 8th digit)."""
    n = len(labels)
    return int((logits.argmax(1) == torch.as_tensor(labels)).sum()) / n if n else 0.0


class TrainingDivergedError(FervidError, FloatingPointError):
    """The loss became NaN or infinite: a user-fixable setting (usually the learning rate)."""


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world


def _log(msg: str, rank: int) -> None:
    if rank == 0:
        print(msg, flush=True)


#: Keys of a metrics line that measure the machine, not the run (two identical runs differ in them).
TIMING_KEYS = ("seconds", "elapsed", "images_per_s")
#: Training faces whose 3x3 patches set a whitening layer (~15M patches: the covariance is settled).
WHITEN_FACES = 8000
RUN_FILES = ("last.pt", "best.safetensors", "metrics.jsonl")
#: What a resumable last.pt must hold (``ema``, ``swa`` and ``history`` may be absent or None).
RESUME_KEYS = ("config", "epoch", "best_acc", "best_epoch", "stale", "step", "model", "optimizer")


def _sync_buffers(modules: list[nn.Module]) -> None:
    """Give every rank rank 0's BatchNorm statistics (and EMA buffers).

    DDP broadcasts buffers at the start of each forward, so after the last step of an
    epoch each rank holds statistics updated by its own batch: evaluating without this
    gives each rank a different val accuracy, and early stopping could then stop one
    rank and leave the other waiting forever in the next all-reduce.
    """
    import torch.distributed as dist

    for m in modules:
        for b in m.buffers():
            dist.broadcast(b, 0)


def _evaluate(model: nn.Module, val_set: FaceSet, device: torch.device, dtype: torch.dtype | None,
              rank: int, world: int) -> tuple[float, float]:
    """(val loss, val accuracy); under DDP each rank scores a shard and the sums are all-reduced."""
    idx = np.arange(rank, len(val_set), world)
    logits = predict_logits(model, val_set.images if world == 1 else val_set.images[idx], device=device, dtype=dtype)
    target = torch.from_numpy(val_set.labels[idx])
    sums = torch.tensor([float(F.cross_entropy(logits, target, reduction="sum")) if len(idx) else 0.0,
                         float((logits.argmax(1) == target).sum()) if len(idx) else 0.0,
                         float(len(idx))], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(sums)
    return float(sums[0] / sums[2]), float(sums[1] / sums[2])


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


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          train_set: FaceSet | None = None, val_set: FaceSet | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` and write checkpoints, metrics and the best model to ``cfg.out``.

    ``on_epoch`` receives each epoch's metrics (``tune`` uses it to report and prune).
    Returns the final summary (best epoch, best val accuracy, paths). With ``resume``,
    only ``cfg.out`` is used: everything else comes from the run's ``last.pt``.
    """
    from tqdm import tqdm

    rank, world = _dist_info()
    out = Path(cfg.out)
    state_path = out / "last.pt"
    start_epoch, best_acc, best_epoch, stale, step = 0, -1.0, -1, 0, 0
    history: list[dict[str, Any]] = []
    saved: dict[str, Any] | None = None
    if resume:
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
        start_epoch, best_acc, best_epoch = saved["epoch"] + 1, saved["best_acc"], saved["best_epoch"]
        stale, step = saved["stale"], saved["step"]
    else:  # every rank checks, so none is left waiting for a rank 0 that refused to start
        held = [name for name in RUN_FILES if (out / name).exists()]
        if held:
            raise BadInputError(f"{out}: already holds a run ({', '.join(held)}); "
                                f"use --resume to continue it, or another --out")
    cfg.validate()

    ddp = world > 1
    if ddp:
        import torch.distributed as dist

        cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if cuda else "gloo")
    device = pick_device(cfg.device)
    if ddp and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dtype = autocast_dtype(device, cfg.precision)
    per_rank = cfg.batch_size // world
    if per_rank < 1:
        raise BadInputError(f"batch size {cfg.batch_size} is smaller than the {world} processes sharing it")

    class_set = class_set_for(cfg.data, cfg.classes, cfg.merge, cfg.labels)
    if train_set is None:
        train_set = load_faces(cfg.data, cfg.train_split, class_set, labels=cfg.labels,
                               vote_weight=cfg.vote_weight)
    if val_set is None:  # validated on hard labels (soft-trained FER+ models: the majority, as FER+ scores)
        val_set = load_faces(cfg.data, cfg.val_split, class_set, labels=scoring_labels(cfg.labels))
    if cfg.limit and cfg.limit < len(train_set):  # a seeded random subset: sources are sorted by class
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train_set))[:cfg.limit])
        train_set = train_set.subset(keep)
    classes = list(class_set.classes)
    images = torch.from_numpy(train_set.images)
    labels = torch.from_numpy(train_set.labels)
    # FER+ --labels soft: cross-entropy against each face's vote distribution (F.cross_entropy takes
    # probabilities as targets; label smoothing, class weights, mixup and CutMix mix them the same way).
    targets = None if train_set.targets is None else torch.from_numpy(train_set.targets)
    counts = torch.bincount(labels, minlength=len(classes)).float()

    torch.manual_seed(cfg.seed)
    # Dropout changes no weight shape, so a saved model loads with its architecture's default.
    arch_kwargs = {"dropout": cfg.dropout} if cfg.dropout >= 0 else {}
    try:
        model = create_model(cfg.model, num_classes=len(classes), **arch_kwargs)
    except ValueError as e:  # e.g. a dropout the architecture scales past 1 (baseline doubles it)
        raise BadInputError(f"--dropout {cfg.dropout} does not fit {cfg.model}: {e}") from None
    if not cfg.whiten:  # before any weights are loaded: this re-initialises the layer
        train_whitening(model)
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
    # on 2 cores (bench/run.py --sections training); same maths, saved files unchanged.
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
        history = list(saved.get("history") or [])
    net: nn.Module = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    weight = None
    if cfg.class_weighting == "loss":  # inverse-frequency, softened by a square root
        weight = (counts.sum() / (len(classes) * counts.clamp_min(1))).sqrt().to(device)

    n = len(labels)
    steps_per_epoch = max(1, (n // world) // per_rank)
    total_steps = steps_per_epoch * cfg.epochs
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        if saved is not None:
            _restore_metrics(out, saved)
    _log(f"fervid train: {cfg.model} ({n_params / 1e6:.2f}M params, {mflops:.1f} MFLOPs/face) on {device}"
         f"{' x' + str(world) if ddp else ''}, {'bf16' if dtype == torch.bfloat16 else 'fp32'}; "
         f"{n} train faces ({cfg.train_split}), {len(val_set)} val ({cfg.val_split}); "
         f"classes {class_set.describe()}", rank)
    _log("config: " + json.dumps(cfg.to_dict()), rank)
    if saved is not None:
        best = f"best {best_acc:.4f} @ {best_epoch + 1}" if best_epoch >= 0 else "best-model selection starts again"
        _log(f"resuming after epoch {start_epoch} ({best})", rank)

    stopped = bool(cfg.patience and stale >= cfg.patience)  # a resumed run that had already stopped early
    stopped = stopped or bool(history and _reached(cfg, history[-1]))
    flips = alternate_flips(n, cfg.seed) if cfg.augment.flip_mode == "alternate" else None
    elapsed = float(history[-1].get("elapsed", 0.0)) if history else 0.0
    cpu = torch.device("cpu")
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        t0 = time.time()
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        # Ranks share the shuffle (then take disjoint shards) but not the augmentation draws,
        # which would otherwise repeat the same warps and erasures on every rank's batch.
        g_aug = g if world == 1 else torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * rank)
        torch.manual_seed(cfg.seed * 100_003 + epoch + 7)
        if cfg.class_weighting == "sampler":
            w = (1.0 / counts.clamp_min(1))[labels]
            order = torch.multinomial(w, n, replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g)
        order = order[rank::world]
        net.train()
        size = cfg.train_size(epoch)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not progress or rank != 0 or not sys.stderr.isatty())
        for i in bar:
            idx = order[i * per_rank:(i + 1) * per_rank]
            y = labels[idx] if targets is None else targets[idx]
            flip = None if flips is None else flips[idx] ^ bool(epoch % 2)
            x = augment(to_input(images[idx], cpu), cfg.augment, g_aug, flip)  # on the CPU: g_aug is a CPU generator
            if size and size != x.shape[-1]:  # progressive resizing: early epochs on smaller faces
                x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            mixed = mix_batch(x, y, cfg.mixup, cfg.cutmix, g_aug)
            if mixed is not None:
                x, ya, yb, lam = mixed
                ya, yb = ya.to(device), yb.to(device)
            x, y = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last), y.to(device)
            lr = cfg.lr * lr_factor(step / total_steps, cfg.schedule, cfg.warmup_epochs / cfg.epochs)
            set_lr(opt, lr)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = net(x)
            if mixed is not None:
                loss = lam * F.cross_entropy(logits.float(), ya, weight=weight, label_smoothing=cfg.label_smoothing) \
                    + (1 - lam) * F.cross_entropy(logits.float(), yb, weight=weight, label_smoothing=cfg.label_smoothing)
            else:
                loss = F.cross_entropy(logits.float(), y, weight=weight, label_smoothing=cfg.label_smoothing)
            if teachers:
                kd = distill_loss(logits, teacher_probs(teachers, x, cfg.distill_temp, dtype), cfg.distill_temp)
                loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"loss became {loss.item()} at epoch {epoch + 1} step {i + 1}; "
                                            f"lower --lr (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == labels[idx].to(device)).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.4f}", refresh=False)
        bar.close()
        train_seconds = time.time() - t0
        if ddp:
            import torch.distributed as dist

            _sync_buffers([model] + ([ema] if ema is not None else []))
            totals = torch.tensor([loss_sum, float(correct), float(seen)], dtype=torch.float64)
            dist.all_reduce(totals)
            loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
        swa_on = swa is not None and epoch + 1 >= cfg.swa_start
        if swa_on:  # one equal-weight sample per epoch
            swa.update_parameters(model)
            # Seeded from (seed, epoch) alone, as on every rank: the statistics agree across ranks.
            refresh_bn(swa, images, torch.Generator().manual_seed(cfg.seed * 100_003 + epoch + 2_000_003),
                       to_input, device, dtype)
        eval_model = swa.module if swa_on else ema.module if ema is not None else model
        val_loss, val_acc = _evaluate(eval_model, val_set, device, dtype, rank, world)
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch, stale = val_acc, epoch, 0
        else:
            stale += 1
        metrics = {"epoch": epoch + 1, "train_loss": round(loss_sum / seen, 5), "train_acc": round(correct / seen, 5),
                   "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5), "lr": round(lr, 6),
                   "seconds": round(time.time() - t0, 1), "best_val_acc": round(best_acc, 5),
                   "elapsed": round(elapsed + time.time() - t0, 1),
                   "images_per_s": round(seen / max(train_seconds, 1e-9), 1),  # all ranks together
                   **({"size": size} if size else {})}
        elapsed = metrics["elapsed"]
        history.append(metrics)
        if rank == 0:
            meta = ckpt.make_meta(cfg.model, classes, params=n_params, mflops=round(mflops, 2),
                                  trained={"data": cfg.data, "train_split": cfg.train_split, "val_split": cfg.val_split,
                                           "epoch": epoch + 1, "seed": cfg.seed, "class_set": class_set.describe()},
                                  metrics={"val_acc": round(val_acc, 5), "val_split": cfg.val_split})
            # Order matters for a kill: best model, then the state (which carries the metrics
            # history, so a resume rewrites metrics.jsonl), then the metrics line.
            if improved:
                ckpt.save_model(out / "best.safetensors", eval_model, meta)
            ckpt.save_training_state(state_path, {
                "config": cfg.to_dict(), "epoch": epoch, "best_acc": best_acc, "best_epoch": best_epoch,
                "stale": stale, "step": step, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "swa": swa.state_dict() if swa is not None else None, "history": history})
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(metrics) + "\n")
            _log(f"epoch {epoch + 1}/{cfg.epochs}: loss {metrics['train_loss']:.3f} train acc {metrics['train_acc']:.4f} "
                 f"| val loss {val_loss:.3f} val acc {val_acc:.4f} (best {best_acc:.4f} @ {best_epoch + 1}) "
                 f"| {metrics['seconds']:.0f}s", rank)
        if on_epoch is not None:
            on_epoch(metrics)
        if cfg.patience and stale >= cfg.patience:  # same on every rank: val accuracy is all-reduced
            _log(f"early stop: no better val accuracy for {cfg.patience} epochs", rank)
            stopped = True
        if _reached(cfg, metrics):
            _log(f"target reached: val acc {val_acc:.4f} >= {cfg.stop_at} after {elapsed / 60:.1f} minutes", rank)
            stopped = True
    summary = {"best_val_acc": best_acc, "best_epoch": best_epoch + 1, "out": str(out),
               "model": str(out / "best.safetensors"), "epochs_run": len(history), "stopped_early": stopped,
               "minutes": round(elapsed / 60, 2),
               "target_reached": bool(history and _reached(cfg, history[-1]))}
    if ddp:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary
