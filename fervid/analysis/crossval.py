"""Stratified k-fold cross-validation of a training config.

One PublicTest score says little about a config: a second seed or another 3,589 faces
move it by a point or more. Training the same config on k stratified folds of the same
pool gives k held-out scores, so a difference between two configs can be weighed against
the spread between folds. Each fold is a normal ``fervid.training.engine.train`` run in
``OUT/fold-K/`` (checkpoints, resume and bf16 all apply), and a killed cv resumes: a fold
with a ``fold.json`` is done, a fold with a ``last.pt`` continues from it.

Each fold is scored by the model of its *last* epoch, not the epoch with the best held-out
accuracy: choosing the epoch on the fold that is then reported would flatter the score.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..data import FaceSet, class_set_for, load_faces
from ..errors import BadInputError
from ..files import atomic_path, write_text_atomic
from ..models import list_models
from ..training import checkpoint as ckpt
from ..training import engine
from ..training.config import TrainConfig
from ..training.runtime import autocast_dtype, pick_device, predict_logits
from .evaluate import score
from .plots import _figure, _save

STATE_FILE = "cv-config.json"
FOLD_FILE = "fold.json"
COLUMNS = ("fold", "train", "val", "epochs", "accuracy", "macro_f1", "best_epoch_acc", "seconds")
BOX_SIZE = (720, 480)


def check_folds(labels: np.ndarray, classes: tuple[str, ...] | list[str], k: int, where: str = "data") -> None:
    """Refuse a k that stratification cannot honour: every class needs a face in every fold."""
    if k < 2:
        raise BadInputError(f"--folds {k}: cross-validation needs at least 2 folds")
    counts = np.bincount(labels, minlength=len(classes))
    present = [(int(n), c) for n, c in zip(counts, classes) if n > 0]
    if not present:
        raise BadInputError(f"{where}: no faces to cross-validate")
    fewest, name = min(present)
    if k > fewest:
        raise BadInputError(f"--folds {k}: class {name} has only {fewest} faces in {where}; "
                            f"use at most {fewest} folds")


def make_folds(labels: np.ndarray, k: int, seed: int,
               classes: tuple[str, ...] | list[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, held-out indices) per fold, by scikit-learn's seeded StratifiedKFold."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    check_folds(labels, classes or [str(i) for i in range(int(labels.max(initial=0)) + 1)], k)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(a), np.sort(b)) for a, b in skf.split(np.zeros(len(labels)), labels)]


def load_pool(cfg: TrainConfig, splits: str) -> FaceSet:
    """The faces the folds are cut from: ``splits`` of ``cfg.data``, cut to ``cfg.limit`` the way the engine does."""
    faces = load_faces(cfg.data, splits, class_set_for(cfg.data, cfg.classes, cfg.merge, cfg.labels), labels=cfg.labels)
    if cfg.limit and cfg.limit < len(faces):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(faces))[:cfg.limit])
        faces = _subset(faces, keep, faces.name)
    return faces


def _subset(faces: FaceSet, idx: np.ndarray, name: str) -> FaceSet:
    return faces.subset(idx, name)


def _fingerprint(faces: FaceSet) -> str:
    """Identifies the pool, so a resume on changed data is refused instead of mixing folds."""
    h = hashlib.sha256(np.ascontiguousarray(faces.labels).tobytes())
    h.update(np.ascontiguousarray(faces.images).tobytes())
    return h.hexdigest()[:16]


def _score_fold(fold_dir: Path, val: FaceSet) -> dict[str, Any]:
    state = ckpt.load_training_state(fold_dir / "last.pt")
    cfg = TrainConfig.from_dict(state["config"])
    device = pick_device(cfg.device)
    model = ckpt.model_from_state(state, val.classes).to(device)  # the SWA or EMA average, as validated
    logits = predict_logits(model, val.images, device=device, dtype=autocast_dtype(device, cfg.precision))
    s = score(val.labels, logits.argmax(1).numpy(), val.classes)
    history = state.get("history") or []
    return {"accuracy": s.accuracy, "macro_f1": s.macro_f1, "epochs": len(history),
            "best_epoch_acc": float(state["best_acc"]), "best_epoch": int(state["best_epoch"]) + 1,
            "seconds": round(sum(float(m.get("seconds", 0.0)) for m in history), 1)}


def summarize(folds: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation (ddof=1, the usual for k folds) of each score."""
    out: dict[str, dict[str, float | None]] = {}
    for key in ("accuracy", "macro_f1", "best_epoch_acc"):
        v = np.array([f[key] for f in folds], dtype=np.float64)
        out[key] = {"mean": float(v.mean()) if len(v) else None,
                    "std": float(v.std(ddof=1)) if len(v) > 1 else None}
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_table(result: dict[str, Any]) -> str:
    """The per-fold table with a mean ± std line, as ``fervid cv`` prints it."""
    lines = [f"{'fold':>4}  {'train':>6}  {'val':>5}  {'epochs':>6}  {'accuracy':>8}  {'macro-F1':>8}  "
             f"{'seconds':>8}"]
    for f in result["folds"]:
        lines.append(f"{f['fold']:>4}  {f['train']:>6}  {f['val']:>5}  {f['epochs']:>6}  {f['accuracy']:>8.4f}  "
                     f"{f['macro_f1']:>8.4f}  {f['seconds']:>8.1f}")
    s = result["summary"]
    lines.append(f"mean ± std over {len(result['folds'])}/{result['k']} folds: "
                 f"accuracy {_fmt(s['accuracy']['mean'])} ± {_fmt(s['accuracy']['std'])}, "
                 f"macro-F1 {_fmt(s['macro_f1']['mean'])} ± {_fmt(s['macro_f1']['std'])}")
    return "\n".join(lines)


def plot_cv(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Box plot of accuracy and macro-F1 over the folds, every fold drawn as a point on its box."""
    fig = _figure(BOX_SIZE)
    ax = fig.add_subplot()
    keys = [("accuracy", "accuracy"), ("macro_f1", "macro-F1")]
    data = [[f[k] for f in result["folds"]] for k, _ in keys]
    box = ax.boxplot(data, widths=0.45, showmeans=True, meanline=True)
    ax.set_xticks([1, 2], labels=[label for _, label in keys])
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        xs = i + rng.uniform(-0.08, 0.08, len(values))
        ax.scatter(xs, values, s=22, color="tab:red", zorder=3, label="fold" if i == 1 else None)
    for i, (k, _) in enumerate(keys, start=1):
        s = result["summary"][k]
        ax.annotate(f"mean {_fmt(s['mean'])} ± {_fmt(s['std'])}", (i, max(data[i - 1])), textcoords="offset points",
                    xytext=(0, 10), ha="center")
    ax.margins(y=0.15)  # room for the mean ± std labels above the boxes
    ax.set_ylabel("held-out score (last epoch)")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + [box["medians"][0], box["means"][0]], labels + ["median", "mean"], loc="best")
    cfg = result["config"]
    ax.set_title(f"{result['k']}-fold cross-validation: {cfg['model']}, {cfg['epochs']} epochs, "
                 f"{result['n_faces']} faces of {result['splits']}")
    return _save(fig, path, overwrite=True)


def write_outputs(out: Path, result: dict[str, Any]) -> dict[str, Path]:
    """cv.json, cv.csv and cv.png, each written atomically (rewritten as folds finish)."""
    import csv

    paths = {"json": out / "cv.json", "csv": out / "cv.csv", "png": out / "cv.png"}
    write_text_atomic(paths["json"], json.dumps(result, indent=2))
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for f in result["folds"]:
            w.writerow([f"{f[c]:.5f}" if isinstance(f[c], float) and c != "seconds" else f[c] for c in COLUMNS])
        for stat in ("mean", "std"):
            values = [result["summary"][key][stat] for key in ("accuracy", "macro_f1", "best_epoch_acc")]
            w.writerow([stat, "", "", ""] + ["" if v is None else f"{v:.5f}" for v in values] + [""])
    if result["folds"]:
        plot_cv(result, paths["png"])
    return paths


def _fold_config(cfg: TrainConfig, out: Path, i: int, k: int, splits: str) -> TrainConfig:
    # Split names that the data layer cannot parse, on purpose: `fervid train --resume` on a
    # fold alone then refuses instead of quietly training on the whole split.
    return dataclasses.replace(cfg, out=str(out / f"fold-{i}"), limit=0,
                               train_split=f"{splits} (cv fold {i} of {k}: train)",
                               val_split=f"{splits} (cv fold {i} of {k}: held out)")


def run_cv(cfg: TrainConfig, k: int = 5, splits: str = "Training", resume: bool = False,
           progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Cross-validate ``cfg`` into ``cfg.out``; with ``resume``, continue the cv saved there.

    Returns the result that ``cv.json`` holds: settings, one record per fold, mean and std.
    """
    out = Path(cfg.out)
    state_path = out / STATE_FILE
    if resume:
        if not state_path.exists():
            raise BadInputError(f"{out}: nothing to resume (no {STATE_FILE})")
        try:
            saved = json.loads(state_path.read_text())
            k, splits = int(saved["k"]), str(saved["splits"])
            cfg = TrainConfig.from_dict({**saved["config"], "out": str(out)})
        except (ValueError, KeyError, TypeError) as e:
            raise BadInputError(f"{state_path}: not a fervid cv state file ({e})") from None
    elif state_path.exists():
        raise BadInputError(f"{out}: already holds a cv ({STATE_FILE}); use --resume to continue it, or another --out")
    cfg.validate()
    if cfg.model not in list_models():
        raise BadInputError(f"unknown model {cfg.model!r}; available: {', '.join(list_models())}")
    if k < 2:
        raise BadInputError(f"--folds {k}: cross-validation needs at least 2 folds")

    pool = load_pool(cfg, splits)
    check_folds(pool.labels, pool.classes, k, where=f"{cfg.data} ({splits}"
                + (f", limit {cfg.limit})" if cfg.limit else ")"))
    fingerprint = _fingerprint(pool)
    if resume and saved.get("fingerprint") != fingerprint:
        raise BadInputError(f"{out}: the faces of {splits} in {cfg.data} differ from those the cv started on")
    settings = {"k": k, "splits": splits, "seed": cfg.seed, "n_faces": len(pool), "fingerprint": fingerprint,
                "config": cfg.to_dict()}
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(state_path, json.dumps(settings, indent=2))

    folds = make_folds(pool.labels, k, cfg.seed, pool.classes)
    log(f"fervid cv: {cfg.model}, {k} folds of {len(pool)} faces ({splits}), seed {cfg.seed}, into {out}")
    records: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for i, (tr, va) in enumerate(folds):
        fold_dir = out / f"fold-{i}"
        done = fold_dir / FOLD_FILE
        if done.exists():
            records.append(json.loads(done.read_text()))
            log(f"fold {i}/{k}: done before (accuracy {records[-1]['accuracy']:.4f}), skipped")
        else:
            fcfg = _fold_config(cfg, out, i, k, splits)
            train_set = _subset(pool, tr, f"{pool.name} cv {i}/{k} train")
            val_set = _subset(pool, va, f"{pool.name} cv {i}/{k} held out")
            again = (fold_dir / "last.pt").exists()
            if not again:  # a fold killed inside its first epoch: nothing to resume, start it clean
                for name in engine.RUN_FILES:
                    (fold_dir / name).unlink(missing_ok=True)
            log(f"fold {i}/{k}: {'resuming' if again else 'training'} on {len(tr)} faces, holding out {len(va)}")
            engine.train(fcfg, resume=again, progress=progress, train_set=train_set, val_set=val_set)
            record = {"fold": i, "train": int(len(tr)), "val": int(len(va)), **_score_fold(fold_dir, val_set)}
            write_text_atomic(done, json.dumps(record, indent=2))
            records.append(record)
        result = {**{key: v for key, v in settings.items() if key != "fingerprint"},
                  "complete": len(records) == k, "folds": records, "summary": summarize(records)}
        write_outputs(out, result)
    return result
