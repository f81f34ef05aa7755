"""``fervid tune``: an Optuna study over the model and optimiser, or over augmentation strengths."""
from __future__ import annotations

import argparse

from ..errors import BadInputError
from .train import add_config_flags, config_from_args, given_config_flags

_STUDY_FLAGS = ("space", "models", "storage", "study_name", "pruner", "prune_warmup", "sampler_seed")


def run(args: argparse.Namespace) -> int:
    # Without torch, sklearn or Optuna: one line from cli.main, before any work is done.
    import optuna  # noqa: F401

    from ..analysis.tune import TuneSettings, load_state, tune

    if args.resume:
        given = given_config_flags(args) + [f"--{k.replace('_', '-')}" for k in _STUDY_FLAGS
                                            if getattr(args, k) is not None]
        if given:
            raise BadInputError(f"--resume continues the study of {args.resume} with its saved settings; "
                                f"it cannot take {', '.join(sorted(given))} (only --trials and --timeout)")
        base, settings = load_state(args.resume)
    else:
        if args.out is None:
            raise BadInputError("--out: give the folder for the study (study.db, trials/, best.yaml, plots)")
        base = config_from_args(args)
        models = tuple(m.strip() for m in (args.models or "").split(",") if m.strip())
        settings = TuneSettings(out=args.out, space=args.space or "model", models=models,
                                storage=args.storage or "", study_name=args.study_name or "fervid",
                                pruner=args.pruner or "median",
                                prune_warmup=1 if args.prune_warmup is None else args.prune_warmup,
                                sampler_seed=args.sampler_seed)
    trials = args.trials if args.trials is not None else (None if args.timeout else 20)
    tune(base, settings, trials=trials, timeout=args.timeout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="search hyperparameters with Optuna",
                       description="Optuna study over a base training config (defaults < --config < flags, as in "
                       "`fervid train`). --space model searches architecture, dropout, lr, weight decay, batch "
                       "size, label smoothing and schedule; --space augment searches augmentation strengths with "
                       "the base model. Each trial trains into OUT/trials/NNNN and is scored by its best "
                       "--val-split accuracy; trials trailing the median are pruned after the warm-up epochs. "
                       "Run the same command again (or --resume OUT) to continue the study, or several at once "
                       "to share it. Writes OUT/best.yaml, trials.csv, history.png and importance.png.")
    p.add_argument("--config", help="YAML or JSON base config of TrainConfig fields, as for `fervid train`")
    p.add_argument("--space", choices=("model", "augment"), default=None,
                   help="what to search: model (and optimiser) or augment (default: model)")
    p.add_argument("--models", metavar="LIST", default=None,
                   help="comma list of architectures --space model chooses among (default: all of `fervid models`)")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="stop when the study holds N trials, counted over all workers and earlier runs "
                   "(default: 20, or no limit when --timeout is given)")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="start no new trial after this much wall time (a running trial finishes)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="SQLAlchemy database URL of the study, e.g. postgresql://host/db (default: sqlite OUT/study.db)")
    p.add_argument("--study-name", default=None, help="name of the study in the storage (default: fervid)")
    p.add_argument("--pruner", default=None, metavar="KIND",
                   help="median (stop trials below the median of finished ones at the same epoch), none, or "
                   "threshold:ACC (stop trials below ACC) (default: median)")
    p.add_argument("--prune-warmup", type=int, default=None, metavar="EPOCHS",
                   help="epochs every trial runs before it may be pruned (default: 1)")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="seed of the TPE sampler, for a repeatable single worker (leave unset for several workers)")
    p.add_argument("--resume", metavar="OUT", help="continue the study of OUT with its saved settings "
                   "(only --trials and --timeout may be given)")
    add_config_flags(p, helps={"out": "folder of the study: study.db, trials/NNNN, best.yaml, trials.csv, plots",
                               "limit": "train every trial on a seeded random N of the training faces (0 = all)"})
    p.set_defaults(func=run)
