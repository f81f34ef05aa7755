"""Hyperparameter search with Optuna over the normal training engine.

Why this shape:

* Every trial is an ordinary ``fervid.training.engine.train`` run in ``OUT/trials/NNNN/``, so a
  trial can be inspected, plotted and evaluated like any run, and tuning never trains
  in a way ``fervid train`` would not.
* The study lives in a database (SQLite ``OUT/study.db`` by default, any SQLAlchemy URL
  otherwise) opened with ``load_if_exists``: running the same command again continues the
  study, and several processes or machines pointed at one database share it. ``--trials``
  is a target for the whole study, not per process, so two workers together run N.
* Each epoch's validation accuracy is reported to the trial; a pruner stops trials that
  trail the median after the warm-up epochs. The engine calls ``on_epoch`` after it has
  written the epoch's checkpoint and metrics, so a pruned trial leaves a consistent run.
* Workers send heartbeats; a trial whose worker was killed is marked failed after
  ``GRACE_S`` seconds and does not count towards the target.

The study records the base config and search space it was made with, and refuses a
worker that brings different ones: mixed trials would make the best one meaningless.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..data import class_set_for, load_faces
from ..errors import BadInputError
from ..ferplus import scoring_labels
from ..files import write_text_atomic
from ..models import list_models
from ..training import engine
from ..training.config import TrainConfig, apply_overrides
from .tune_report import write_reports

SPACES = ("model", "augment")
STATE_FILE = "tune.json"
HEARTBEAT_S, GRACE_S = 20, 60
#: Learning-rate ranges (log-uniform) per optimiser: SGD wants ~10x AdamW's rate.
LR_RANGE = {"sgd": (3e-3, 0.2), "adamw": (1e-4, 1e-2)}
BATCH_SIZES = [32, 64, 128, 256]
#: Base-config fields that may differ between workers of one study (they change where and
#: how fast a trial runs, not what it learns).
LOCAL_FIELDS = ("out", "device", "threads", "precision")


@dataclass
class TuneSettings:
    """What a study searches and where it lives (saved as ``OUT/tune.json``)."""

    out: str
    space: str = "model"
    models: tuple[str, ...] = ()  # architectures to choose among; () = every registered model
    storage: str = ""  # SQLAlchemy URL; "" = sqlite:///OUT/study.db
    study_name: str = "fervid"
    pruner: str = "median"  # median | none | threshold:ACC
    prune_warmup: int = 1  # epochs every trial runs before it may be pruned
    sampler_seed: int | None = None  # leave unset when several workers share a study

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(Path(self.out) / 'study.db').resolve()}"


def suggest(trial: Any, settings: TuneSettings, base: TrainConfig) -> dict[str, Any]:
    """Draw one trial's overrides of the base config (keys: config fields, ``augment.*``).

    Width is not searched separately: the registry's variants (vgg_tiny..vgg_l) are the widths.
    """
    if settings.space == "model":
        models = list(settings.models)
        p: dict[str, Any] = {"model": trial.suggest_categorical("model", models) if len(models) > 1 else models[0]}
        p["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)  # baseline doubles it in its dense layer
        p["lr"] = trial.suggest_float("lr", *LR_RANGE[base.optimizer], log=True)
        p["weight_decay"] = trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True)
        p["batch_size"] = trial.suggest_categorical("batch_size", BATCH_SIZES)
        p["label_smoothing"] = trial.suggest_float("label_smoothing", 0.0, 0.2)
        p["schedule"] = trial.suggest_categorical("schedule", ["cosine", "onecycle", "constant"])
        return p
    p = {"augment.flip": trial.suggest_float("augment.flip", 0.0, 0.5),
         "augment.rotate": trial.suggest_float("augment.rotate", 0.0, 20.0),
         "augment.shift": trial.suggest_float("augment.shift", 0.0, 0.15),
         "augment.scale": trial.suggest_float("augment.scale", 0.0, 0.25),
         "augment.erase": trial.suggest_float("augment.erase", 0.0, 0.8)}
    # crop is "off" (0) or a minimum side fraction: a switch plus a range, not one odd scale.
    crop = trial.suggest_categorical("augment.crop_on", [False, True])
    p["augment.crop"] = trial.suggest_float("augment.crop", 0.7, 0.95) if crop else 0.0
    return p


def _pruner(settings: TuneSettings):
    import optuna

    name = settings.pruner.strip().lower()
    if name == "median":  # compare with finished trials only once there are a few of them
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=settings.prune_warmup)
    if name == "none":
        return optuna.pruners.NopPruner()
    if name.startswith("threshold:"):
        try:
            lower = float(name.split(":", 1)[1])
        except ValueError:
            lower = -1.0
        if 0.0 <= lower <= 1.0:
            return optuna.pruners.ThresholdPruner(lower=lower, n_warmup_steps=settings.prune_warmup)
    raise BadInputError(f"--pruner {settings.pruner!r}: use median, none or threshold:ACC (ACC in 0..1)")


def check_settings(base: TrainConfig, settings: TuneSettings) -> TuneSettings:
    """Refuse a bad space, model or budget before any data is read; fill in the model list."""
    if settings.space not in SPACES:
        raise BadInputError(f"--space {settings.space!r}: use {' or '.join(SPACES)}")
    base.validate()
    models = tuple(settings.models) or (tuple(list_models()) if settings.space == "model" else ())
    for m in models + ((base.model,) if settings.space == "augment" else ()):
        if m not in list_models():
            raise BadInputError(f"unknown model {m!r}; available: {', '.join(list_models())}")
    if settings.prune_warmup < 0:
        raise BadInputError(f"--prune-warmup {settings.prune_warmup}: must be 0 or more epochs")
    _pruner(settings)
    return dataclasses.replace(settings, models=models)


def _identity(base: TrainConfig, settings: TuneSettings) -> dict[str, Any]:
    """What every worker of a study must agree on."""
    cfg = {k: v for k, v in base.to_dict().items() if k not in LOCAL_FIELDS}
    return {"space": settings.space, "models": list(settings.models), "config": cfg}


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _differences(a[k], b[k], f"{prefix}{k}.")
        elif a.get(k) != b.get(k):
            out.append(f"{prefix}{k} {a.get(k)!r} vs {b.get(k)!r}")
    return out


def open_study(base: TrainConfig, settings: TuneSettings):
    """Create or load the study, refusing one that was made with another config or space."""
    import optuna
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    url = settings.storage_url()
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(seed=settings.sampler_seed, n_startup_trials=5)

    def drop_checkpoint(study: Any, ft: Any) -> None:
        """A killed worker's trial, found stale: its resumable state is of no use (trials never resume)."""
        (Path(settings.out) / "trials" / f"{ft.number:04d}" / "last.pt").unlink(missing_ok=True)

    # Optuna 4.9 renamed failed_trial_callback (deprecated, gone in 6); the extra allows >= 3.6.
    stale_kw = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in \
        inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback"
    for attempt in range(5):  # two workers creating a new database at once can collide once
        try:
            storage = optuna.storages.RDBStorage(
                url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, **{stale_kw: drop_checkpoint})
            study = optuna.create_study(study_name=settings.study_name, storage=storage, direction="maximize",
                                        sampler=sampler, pruner=_pruner(settings), load_if_exists=True)
            break
        except (ArgumentError, NoSuchModuleError, ValueError) as e:
            raise BadInputError(f"--storage {url}: not a usable database URL ({type(e).__name__})") from None
        except SQLAlchemyError as e:  # locked, or the other worker's schema half there (IntegrityError)
            if attempt == 4:
                why = " ".join(str(getattr(e, "orig", None) or e).split())
                raise BadInputError(f"--storage {url}: cannot open ({why})") from None
            time.sleep(1.0 + attempt)
    if settings.sampler_seed is not None:
        # Offset by the trials already there: a resumed seeded study must not replay the
        # random start-up draws of its first run (it would retrain the same configs).
        study.sampler = optuna.samplers.TPESampler(seed=settings.sampler_seed + len(study.trials),
                                                   n_startup_trials=5)
    ident = _identity(base, settings)
    held = study.user_attrs.get("fervid")
    if held is None:
        study.set_user_attr("fervid", ident)
    elif held != ident:
        diff = "; ".join(_differences(held, ident)[:3])
        raise BadInputError(f"study {settings.study_name!r} in {url} was made with other settings ({diff}); "
                            f"use the same flags, --resume, or another --study-name")
    return study


def _objective(trial: Any, base: TrainConfig, settings: TuneSettings, train_set: Any, val_set: Any) -> float:
    import optuna

    overrides = suggest(trial, settings, base)
    trial.set_user_attr("overrides", overrides)
    run_dir = Path(settings.out) / "trials" / f"{trial.number:04d}"
    cfg = apply_overrides(base, overrides, out=str(run_dir))

    def on_epoch(m: dict[str, Any]) -> None:
        trial.report(m["val_acc"], m["epoch"])
        trial.set_user_attr("epochs_run", m["epoch"])
        # At the last epoch the work is done: pruning then would only throw the score away.
        if m["epoch"] < cfg.epochs and trial.should_prune():
            trial.set_user_attr("stopped", f"pruned after epoch {m['epoch']} (val acc {m['val_acc']:.4f})")
            raise optuna.TrialPruned(f"val acc {m['val_acc']:.4f} at epoch {m['epoch']}")

    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        # The engine's per-epoch log goes to the trial's folder; the console gets one line a trial.
        with open(run_dir / "train.log", "a") as log, contextlib.redirect_stdout(log):
            summary = engine.train(cfg, progress=False, on_epoch=on_epoch, train_set=train_set, val_set=val_set)
    except engine.TrainingDivergedError as e:  # a bad region of the space: tell the sampler, go on
        trial.set_user_attr("stopped", f"diverged: {e}")
        raise optuna.TrialPruned(str(e)) from None
    finally:  # only a resume needs last.pt, and trials are never resumed: keep the disk small
        (run_dir / "last.pt").unlink(missing_ok=True)
    return float(summary["best_val_acc"])


def _counted(study: Any) -> int:
    """Trials that use up the target: finished or running (a failed one is a killed one, redone)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))


def load_state(out: str | Path) -> tuple[TrainConfig, TuneSettings]:
    """The base config and settings a study in ``out`` was started with (``tune --resume``)."""
    path = Path(out) / STATE_FILE
    if not path.exists():
        raise BadInputError(f"{out}: nothing to resume (no {STATE_FILE})")
    try:
        saved = json.loads(path.read_text())
        settings = TuneSettings(**{**saved["settings"], "out": str(out), "models": tuple(saved["settings"]["models"])})
        base = TrainConfig.from_dict({**saved["config"], "out": str(out)})
    except (ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{path}: not a fervid tune state file ({e})") from None
    return base, settings


def _comparable(state: dict[str, Any]) -> dict[str, Any]:
    """A tune.json without what may differ between runs of one study (paths, devices, sampler seed)."""
    return {"settings": {k: v for k, v in state.get("settings", {}).items() if k != "sampler_seed"},
            "config": {k: v for k, v in state.get("config", {}).items() if k not in LOCAL_FIELDS}}


def _save_state(base: TrainConfig, settings: TuneSettings, check_only: bool = False) -> None:
    """OUT/tune.json; an OUT that holds another study is refused, the same one is continued.

    ``check_only`` refuses a mismatch without writing, so that a study that then fails to
    open (a bad --storage) leaves no state behind that a corrected command would trip over.
    """
    path = Path(settings.out) / STATE_FILE
    mine = {"settings": {**dataclasses.asdict(settings), "out": None, "models": list(settings.models)},
            "config": {**base.to_dict(), "out": None}}
    if path.exists():
        try:
            held = json.loads(path.read_text())
        except ValueError:
            held = {}
        if _comparable(held) != _comparable(mine):
            diff = "; ".join(_differences(_comparable(held), _comparable(mine))[:3])
            raise BadInputError(f"{settings.out}: holds another study ({diff}); use --resume {settings.out} "
                                f"or another --out")
        return
    if not check_only:
        write_text_atomic(path, json.dumps(mine, indent=2))


def tune(base: TrainConfig, settings: TuneSettings, trials: int | None = 20, timeout: float | None = None,
         log: Callable[[str], None] = print) -> Any:
    """Run trials until the study holds ``trials`` (finished + running) or ``timeout`` seconds pass.

    No trial starts after the timeout; one that is running finishes. Returns the study;
    ``OUT/best.yaml``, ``trials.csv`` and the plots are rewritten after every trial.
    """
    import optuna

    if trials is not None and trials < 1:
        raise BadInputError(f"--trials {trials}: must be at least 1")
    if timeout is not None and timeout <= 0:
        raise BadInputError(f"--timeout {timeout}: must be a positive number of seconds")
    settings = check_settings(base, settings)
    out = Path(settings.out)
    class_set = class_set_for(base.data, base.classes, base.merge, base.labels)
    train_set = load_faces(base.data, base.train_split, class_set, labels=base.labels)
    val_set = load_faces(base.data, base.val_split, class_set, labels=scoring_labels(base.labels))
    _save_state(base, settings, check_only=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and stale-trial handling are "experimental" in Optuna 5 and warn on every call.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = open_study(base, settings)
    _save_state(base, settings)
    start = time.monotonic()
    log(f"fervid tune: study {settings.study_name!r} in {settings.storage_url()}, space {settings.space}, "
        f"{_counted(study)} trial(s) so far; target {trials or 'none'}, timeout {timeout or 'none'} s")

    def after_trial(study: Any, ft: Any) -> None:
        note = ft.user_attrs.get("stopped", "")
        value = "-" if ft.value is None else f"{ft.value:.4f}"
        try:
            best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            best = "-"
        secs = ft.duration.total_seconds() if ft.duration else 0.0
        log(f"trial {ft.number}: {ft.state.name.lower()} {value} in {secs:.0f}s {note and '(' + note + ') '}"
            f"| best {best} | {json.dumps(ft.user_attrs.get('overrides', {}))}")
        write_reports(study, base, out, quiet=True, importance=secs > 30)

    while True:
        optuna.storages.fail_stale_trials(study)
        if trials is not None and _counted(study) >= trials:
            break
        if timeout is not None and time.monotonic() - start >= timeout:
            log(f"timeout: {timeout:g} s passed, no new trial started")
            break
        study.optimize(lambda t: _objective(t, base, settings, train_set, val_set), n_trials=1,
                       callbacks=[after_trial], gc_after_trial=True)
    for line in write_reports(study, base, out):
        log(line)
    return study
