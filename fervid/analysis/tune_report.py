"""What a study leaves behind: ``best.yaml``, ``trials.csv``, ``history.png`` and ``importance.png``.

Everything is rebuilt from the study's database, never kept in memory, so any worker can
rewrite the reports after any trial (atomically: a reader never sees half a file) and
the reports of a study shared by several workers always cover all of their trials.
Plots use matplotlib's object API like :mod:`fervid.analysis.plots` (no pyplot global state).
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from ..files import atomic_path, write_text_atomic
from ..training.config import TrainConfig, apply_overrides
from .plots import _figure, _save

HISTORY_SIZE = (900, 480)
IMPORTANCE_SIZE = (760, 420)
CSV_HEAD = ("number", "state", "value", "epochs_run", "seconds", "started", "finished", "stopped")


def _trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]


def write_trials_csv(study: Any, path: Path) -> int:
    """One row per trial with its state, score and the config values it tried; returns the row count."""
    trials = _trials(study)
    keys = sorted({k for t in trials for k in t.user_attrs.get("overrides", {})})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_HEAD + tuple(keys))
        for t in trials:
            o = t.user_attrs.get("overrides", {})
            w.writerow([t.number, t.state.name.lower(), "" if t.value is None else f"{t.value:.5f}",
                        t.user_attrs.get("epochs_run", ""),
                        f"{t.duration.total_seconds():.1f}" if t.duration else "",
                        t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else "",
                        t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else "",
                        t.user_attrs.get("stopped", "")] + [o.get(k, "") for k in keys])
    return len(trials)


def write_best_yaml(study: Any, base: TrainConfig, path: Path) -> Any | None:
    """The base config with the best trial's values, as ``fervid train --config`` reads it.

    ``out`` is left out (give ``--out``); ``epochs`` and ``limit`` are those the trials
    were scored with, so a full run usually raises the one and clears the other.
    """
    import yaml

    try:
        best = study.best_trial
    except ValueError:  # no complete trial yet
        return None
    cfg = apply_overrides(base, best.user_attrs.get("overrides", {})).to_dict()
    cfg.pop("out")
    head = (f"# fervid tune: best of study {study.study_name!r}, trial {best.number}: "
            f"{base.val_split} accuracy {best.value:.4f} after {best.user_attrs.get('epochs_run', '?')} epoch(s).\n"
            f"# Train it: fervid train --config {path.name} --out runs/tuned"
            f" (for a full run raise epochs and set limit: 0).\n")
    write_text_atomic(path, head + yaml.safe_dump(cfg, sort_keys=False))
    return best


def plot_history(study: Any, path: Path) -> Path:
    """Score of every trial in order, pruned trials at their last reported epoch, and the best so far."""
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState

    fig = _figure(HISTORY_SIZE)
    ax = fig.add_subplot()
    trials = _trials(study)
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [(t.number, t.intermediate_values[max(t.intermediate_values)]) for t in trials
              if t.state == TrialState.PRUNED and t.intermediate_values]
    if pruned:
        ax.scatter(*zip(*pruned), marker="x", color="grey", label="pruned (last epoch it ran)")
    if done:
        ax.scatter(*zip(*done), color="tab:blue", zorder=3, label="complete")
        xs, best, top = [], [], -math.inf
        for n, v in done:
            top = max(top, v)
            xs.append(n)
            best.append(top)
        last = max(t.number for t in trials)  # carry the line on past pruned trials to the latest one
        if last > xs[-1]:
            xs.append(last)
            best.append(top)
        ax.step(xs, best, where="post", color="tab:red", label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend(loc="best")
    title = f"study {study.study_name!r}: {len(done)} complete, {len(pruned)} pruned"
    if done:
        title += f"; best {max(v for _, v in done):.4f}"
    ax.set_title(title)
    return _save(fig, path, overwrite=True)


def plot_importance(study: Any, path: Path) -> str:
    """fANOVA importance of each searched parameter; returns why it was not drawn, or ''."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    n = len(done)
    if n < 2:
        return f"no importance plot yet: it needs at least 2 complete trials (the study has {n})"
    if len({t.value for t in done}) < 2:
        return f"no importance plot yet: all {n} complete trials scored the same ({done[0].value:.4f})"
    try:
        imp = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as e:
        return f"no importance plot: {' '.join(str(e).split())}"
    if not imp:
        return "no importance plot: the complete trials share no varied parameter"
    names = list(imp)[::-1]
    fig = _figure(IMPORTANCE_SIZE)
    ax = fig.add_subplot()
    ax.barh(names, [imp[k] for k in names], color="tab:blue")
    for i, k in enumerate(names):
        ax.text(imp[k], i, f" {imp[k]:.2f}", va="center")
    ax.set_xlim(0, max(imp.values()) * 1.2 or 1.0)
    ax.set_xlabel("fANOVA importance (share of the score's variance)")
    ax.set_title(f"parameter importance over {n} complete trials")
    _save(fig, path, overwrite=True)
    return ""


def write_reports(study: Any, base: TrainConfig, out: Path, quiet: bool = False,
                  importance: bool = True) -> list[str]:
    """All four reports; returns one line per report for the console (``quiet``: none).

    fANOVA fits a random forest (seconds on a busy CPU): after short trials the caller
    may skip ``importance`` and leave it to the end of the run.
    """
    out = Path(out)
    lines = [f"trials: {out / 'trials.csv'} ({write_trials_csv(study, out / 'trials.csv')} trials)"]
    best = write_best_yaml(study, base, out / "best.yaml")
    if best is None:
        lines.append("no best.yaml: no trial has completed (pruned trials do not count)")
    else:
        lines.append(f"best: trial {best.number}, {base.val_split} accuracy {best.value:.4f}: "
                     f"{out / 'best.yaml'}")
    plot_history(study, out / "history.png")
    lines.append(f"history: {out / 'history.png'}")
    if importance:
        why = plot_importance(study, out / "importance.png")
        lines.append(why or f"importance: {out / 'importance.png'}")
    return [] if quiet else lines
