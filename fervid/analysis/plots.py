"""Figures for reports: a normalised confusion matrix and training curves, as PNG files.

Figures are built on matplotlib's object API with the Agg canvas, never ``pyplot``: no
global figure state, no GUI backend picked from the environment, so plotting works the
same on a headless server, in a test and inside a web service thread. Sizes are fixed
(layout is squeezed inside the canvas rather than cropped with ``bbox_inches``) so a
report's images always have the same pixel size.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BadInputError
from ..files import atomic_path

DPI = 100
#: Pixel size (width, height) of a confusion-matrix PNG and of a curves PNG.
CONFUSION_SIZE = (760, 640)
CURVES_SIZE = (1200, 480)
#: Pixel size of a reliability-diagram PNG.
RELIABILITY_SIZE = (520, 520)
METRICS_FILE = "metrics.jsonl"
_REQUIRED = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def _figure(size: tuple[int, int]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def plot_confusion(matrix: np.ndarray | Sequence[Sequence[float]], classes: Sequence[str],
                   path: str | os.PathLike, title: str = "", overwrite: bool = True) -> Path:
    """Row-normalised confusion matrix (true class per row) with every cell annotated.

    Rows are normalised here if they are counts, so each row reads as "where the faces
    of this class went"; a class with no faces keeps a row of zeros rather than NaNs.
    """
    m = np.asarray(matrix, dtype=np.float64)
    n = len(classes)
    if m.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {m.shape} for {n} classes")
    sums = m.sum(axis=1, keepdims=True)
    if m.max(initial=0.0) > 1.0 + 1e-9 or not np.allclose(sums[sums > 0], 1.0):
        m = np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)
    fig = _figure(CONFUSION_SIZE)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=list(classes), rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fontsize = 10 if n <= 8 else max(5, int(80 / n))
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if v > 0.5 else "black")
    if title:
        ax.set_title(title)
    return _save(fig, path, overwrite)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Epoch records from a run folder or its ``metrics.jsonl``.

    A training run killed mid-write may leave a partial last line; anything else that is
    not a JSON object with the engine's fields is reported with its line number.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.exists():
        raise BadInputError(f"{p}: no such metrics file (give a run folder or its {METRICS_FILE})")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{p}: cannot read metrics ({getattr(e, 'strerror', None) or e})") from None
    rows: list[dict[str, Any]] = []
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    for k, (lineno, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if k == len(numbered) - 1 and rows:
                break  # torn last line of a run that was killed while writing
            raise BadInputError(f"{p}:{lineno}: not a JSON line (is this a fervid metrics.jsonl?)") from None
        if not isinstance(row, dict):
            raise BadInputError(f"{p}:{lineno}: expected a JSON object per line")
        missing = [f for f in _REQUIRED if f not in row]
        if missing:
            raise BadInputError(f"{p}:{lineno}: missing field(s) {', '.join(missing)}")
        try:
            for f in _REQUIRED:
                row[f] = float(row[f])
        except (TypeError, ValueError):
            raise BadInputError(f"{p}:{lineno}: non-numeric value in {f!r}") from None
        rows.append(row)
    if not rows:
        raise BadInputError(f"{p}: no epochs recorded yet (empty metrics file)")
    return rows


def _by_epoch(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """A resumed run can repeat an epoch number; the last record wins (the one the run went on from)."""
    return {int(r["epoch"]): r for r in rows}


def best_epoch(rows: list[dict[str, Any]]) -> int | None:
    """The epoch with the highest val accuracy (the earliest on ties, as the engine keeps it)."""
    by_epoch = _by_epoch(rows)
    scored = [(e, float(r["val_acc"])) for e, r in sorted(by_epoch.items()) if math.isfinite(float(r["val_acc"]))]
    if not scored:
        return None
    top = max(v for _, v in scored)
    return next(e for e, v in scored if v == top)


def plot_curves(metrics: str | os.PathLike | list[dict[str, Any]], path: str | os.PathLike,
                title: str = "", overwrite: bool = True) -> Path:
    """Accuracy and loss, train against val, per epoch; the best val-accuracy epoch is marked."""
    from matplotlib.ticker import MaxNLocator

    rows = read_metrics(metrics) if not isinstance(metrics, list) else metrics
    if not rows:
        raise BadInputError("no epochs to plot")
    by_epoch = _by_epoch(rows)
    epochs = sorted(by_epoch)
    get = lambda key: np.array([float(by_epoch[e].get(key, math.nan)) for e in epochs])  # noqa: E731
    val_acc = get("val_acc")
    top = best_epoch(rows)
    best = epochs.index(top) if top is not None else None
    fig = _figure(CURVES_SIZE)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for ax, key, label in ((ax_acc, "acc", "accuracy"), (ax_loss, "loss", "loss")):
        ax.plot(epochs, get(f"train_{key}"), marker="o", markersize=3, label="train")
        ax.plot(epochs, get(f"val_{key}"), marker="o", markersize=3, label="val")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if best is not None:
            ax.axvline(epochs[best], color="grey", linestyle="--", linewidth=1,
                       label=f"best epoch {epochs[best]}")
        ax.legend(loc="best")
    if best is not None:
        ax_acc.scatter([epochs[best]], [val_acc[best]], s=80, color="red", zorder=5)
        ax_acc.annotate(f"{val_acc[best]:.4f}", (epochs[best], val_acc[best]), textcoords="offset points",
                        xytext=(6, -14), color="red")
    fig.suptitle(title or f"training curves ({len(epochs)} epochs)")
    return _save(fig, path, overwrite)


def plot_reliability(bins: list[dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration
    (bars under the diagonal: the model is more confident than it is right)."""
    fig = _figure(RELIABILITY_SIZE)
    ax = fig.add_subplot()
    centers = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = (bins[0]["upper"] - bins[0]["lower"]) * 0.95 if bins else 1.0
    ax.bar(centers, [b["accuracy"] for b in bins], width=width, color="#4c72b0", label="accuracy")
    ax.bar(centers, [b["confidence"] - b["accuracy"] if b["count"] else 0.0 for b in bins],
           bottom=[b["accuracy"] for b in bins], width=width, color="#dd8452", alpha=0.45,
           label="confidence - accuracy")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path, overwrite=True)
