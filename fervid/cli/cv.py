"""``fervid cv``: stratified k-fold cross-validation of any training config (the flags of ``fervid train``)."""
from __future__ import annotations

import argparse

from ..errors import BadInputError
from .train import add_config_flags, config_from_args, given_config_flags


def run(args: argparse.Namespace) -> int:
    from ..analysis.crossval import format_table, run_cv  # without torch or sklearn: one line from cli.main
    from ..training.config import TrainConfig

    if args.resume:
        given = given_config_flags(args) + (["--folds"] if args.folds is not None else []) \
            + (["--splits"] if args.splits is not None else [])
        if given:
            raise BadInputError(f"--resume continues the cv in {args.resume} with its saved settings; "
                                f"it cannot take {', '.join(sorted(given))}")
        cfg = TrainConfig(out=args.resume)
    else:
        if args.out is None:
            raise BadInputError("--out: give the folder the cv writes its folds and table to (e.g. runs/cv-vgg_s)")
        cfg = config_from_args(args)
    result = run_cv(cfg, k=5 if args.folds is None else args.folds, splits=args.splits or "Training",
                    resume=bool(args.resume), progress=not args.no_progress)
    print(format_table(result))
    print(f"table: {cfg.out}/cv.csv, {cfg.out}/cv.json; box plot: {cfg.out}/cv.png")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cv", help="k-fold cross-validation of a training config",
                       description="Stratified k-fold cross-validation: train the config (defaults < --config "
                       "< flags, as in `fervid train`) on k-1 folds of the chosen splits and score the last "
                       "epoch's model on the held-out fold, k times. Writes OUT/fold-K/ (normal run folders), "
                       "OUT/cv.csv, OUT/cv.json and the box plot OUT/cv.png. A killed cv continues with "
                       "--resume OUT: finished folds are kept, the unfinished one resumes from its last.pt.")
    p.add_argument("--config", help="YAML or JSON file of TrainConfig fields, as for `fervid train`")
    p.add_argument("-k", "--folds", type=int, default=None, help="number of folds, 2 to the smallest class count "
                   "(default: 5)")
    p.add_argument("--splits", default=None, help="split(s) to pool and cut into folds, comma-separated: Training, "
                   "PublicTest, PrivateTest, train, test, all (default: Training)")
    p.add_argument("--resume", metavar="OUT", help="continue the cv in OUT (settings come from OUT/cv-config.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    add_config_flags(p, skip=("train_split", "val_split"), helps={
        "out": "folder for the folds (OUT/fold-K), cv.csv, cv.json and cv.png",
        "limit": "cross-validate a seeded random N of the pooled faces (0 = all)"})
    p.set_defaults(func=run)
