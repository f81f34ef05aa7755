"""``fervid train``: flags and an optional YAML/JSON file over :class:`fervid.training.engine.TrainConfig`."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ..errors import BadInputError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _one_line_parse_error(e: Exception) -> str:
    """PyYAML's messages span several lines with a caret drawing; errors here are one line."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {getattr(e, 'problem', None) or 'syntax error'}"
    return " ".join(str(e).split())


def load_config_file(path: str) -> dict:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise BadInputError(f"{p}: cannot read config ({e.strerror})") from None
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:
        raise BadInputError(f"{p}: not valid {'YAML' if p.suffix.lower() in ('.yaml', '.yml') else 'JSON'} "
                            f"({_one_line_parse_error(e)})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{p}: config must be a mapping of option names to values")
    return data


def add_config_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                     helps: dict[str, str] | None = None) -> None:
    """One flag per TrainConfig field (and --aug-* per augmentation field), default None = keep.

    ``cv`` and ``tune`` reuse these so every training option means the same everywhere;
    they ``skip`` the fields they set themselves (cv picks each fold's data) and may
    reword a help text (``out`` is their own output folder).
    """
    from ..training.config import AugmentConfig, TrainConfig

    texts = {
        "data": "FER-2013 source (fer2013.csv or a folder in the Kaggle layout) or FER+ (the FER2013Train/... "
                "folders, or fer2013new.csv beside fer2013.csv)",
        "labels": "training target: auto, fer2013 (original labels), majority or soft (FER+ votes), "
                  "or mix (the original labels with --vote-weight of the votes; validated on the original "
                  "labels); auto = majority on FER+, the original labels on FER-2013",
        "vote_weight": "with --labels mix: the FER+ votes' share of each target, 0..1",
        "train_split": "split(s) to train on: Training, PublicTest, PrivateTest, train, test, all",
        "val_split": "split for validation, checkpoint selection and early stopping",
        "classes": "class set: all (FER+: with contempt), fer2013, no-disgust, no-disgust-fear or a comma list",
        "merge": "fold dropped classes into kept ones, e.g. disgust:angry",
        "limit": "train on a seeded random N of the training faces (0 = all)",
        "model": "architecture (see `fervid models`)",
        "dropout": "dropout rate of the model's head, 0..1 (-1 = the architecture's default)",
        "init": "start from the weights of this fervid .safetensors model (same architecture and classes)",
        "schedule": "cosine, onecycle or constant (all with linear warmup)",
        "class_weighting": "none, loss (inverse-frequency weights) or sampler (balanced sampling)",
        "mixup": "mixup Beta alpha (0 = off)",
        "cutmix": "CutMix Beta alpha (0 = off; with --mixup, half the batches each)",
        "ema": "EMA decay of weights, e.g. 0.999 (0 = off)",
        "swa_start": "from this epoch on, validate and save the SWA average of each epoch's weights (0 = off)",
        "teacher": "distil from these fervid models (comma-separated; their softmax is averaged)",
        "distill_alpha": "weight of the distillation loss, 0..1 (the hard-label loss gets the rest)",
        "distill_temp": "softmax temperature of the distillation loss",
        "bias_lr_scale": "learning rate of biases and norm shifts, as a multiple of --lr",
        "whiten": "set a FastNet's patch-whitening layer from training faces and freeze it (false = train it)",
        "progressive": "train face sizes in equal parts of the epochs, e.g. 32,40,48 (empty = 48 throughout)",
        "stop_at": "stop once val accuracy reaches this, e.g. 0.70 (0 = off); the minutes it took are recorded",
        "stop_at_train": "with --stop-at, also require this train accuracy",
        "patience": "early stopping patience in epochs (0 = off)", "precision": "auto, bf16 or fp32",
        "device": "auto, cpu, cuda or cuda:N", "out": "run folder for checkpoints and metrics",
        **(helps or {}),
    }
    for f in dataclasses.fields(TrainConfig):
        if f.name == "augment" or f.name in skip:
            continue
        typ = _bool if f.type in (bool, "bool") else {"int": int, "float": float}.get(str(f.type), None) or (
            f.type if f.type in (int, float) else str)
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=typ, default=None,
                       help=f"{texts.get(f.name, f.name.replace('_', ' '))} (default: {f.default})")
    for f in dataclasses.fields(AugmentConfig):
        p.add_argument("--aug-" + f.name.replace("_", "-"), dest="aug_" + f.name,
                       type=str if str(f.type) == "str" else float, default=None,
                       help=f"augmentation {f.name.replace('_', ' ')} (default: {f.default})")


def given_config_flags(args: argparse.Namespace) -> list[str]:
    """The config flags (and --config) given on the command line, as the user typed them.

    A resumed run (train, cv, tune) replays its saved config exactly; silently ignoring
    a flag would let the user believe they changed something, so callers refuse these.
    """
    from ..training.config import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return sorted(f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                  if v is not None and (k == "config" or k.startswith("aug_") or k in fields))


def config_from_args(args: argparse.Namespace):
    """TrainConfig from defaults < --config file < flags."""
    from ..training.config import TrainConfig

    data = load_config_file(args.config) if getattr(args, "config", None) else {}
    aug = dict(data.pop("augment", None) or {})
    for k, v in vars(args).items():
        if v is None:
            continue
        if k.startswith("aug_"):
            aug[k[4:]] = v
        elif k in {f.name for f in dataclasses.fields(TrainConfig)}:
            data[k] = v
    data["augment"] = aug
    return TrainConfig.from_dict(data)


def _write_curves(run_dir: Path) -> None:
    """curves.png beside metrics.jsonl, so every finished run can be judged at a glance (rank 0 only)."""
    import os

    from ..analysis.plots import METRICS_FILE, plot_curves

    if os.environ.get("RANK", "0") != "0" or not (run_dir / METRICS_FILE).exists():
        return
    try:
        plot_curves(run_dir / METRICS_FILE, run_dir / "curves.png", title=f"training curves: {run_dir.name}")
    except BadInputError as e:  # a plot must never turn a finished training into a failure
        print(f"fervid train: no curves plotted: {e}")
    else:
        print(f"curves: {run_dir / 'curves.png'}")


#: Flags a resumed run may change: they set how fast it runs, not what it learns (a run moved
#: to a machine with more cores, or given the cores a finished neighbour freed). A different
#: thread count can change float sums in their last bits, so bitwise equality with an
#: uninterrupted run holds only at the same count.
RESUME_SETTINGS = ("--threads",)


def run(args: argparse.Namespace) -> int:
    import os

    from ..files import check_output, output_errors
    from ..training.engine import TrainConfig, train  # without torch: one line from cli.main

    if args.resume:
        given = [f for f in given_config_flags(args) if f not in RESUME_SETTINGS]
        if given:
            raise BadInputError(f"--resume continues {args.resume} with its saved config; "
                                f"it cannot take {', '.join(given)}")
        cfg = TrainConfig(out=args.resume, threads=args.threads or 0)
    else:
        cfg = config_from_args(args)
        # The run records where its data is, wherever it is resumed from: a relative path
        # saved as given would be looked up from the resuming shell's folder instead.
        if cfg.data and not Path(cfg.data).expanduser().is_absolute() and Path(cfg.data).expanduser().exists():
            cfg.data = str(Path(cfg.data).expanduser().resolve())
    check_output(cfg.out, folder=True)  # before the data is read and the model built
    with output_errors(cfg.out):  # a full disk mid-run: one line, not torch's traceback
        summary = train(cfg, resume=bool(args.resume), progress=not args.no_progress)
    _write_curves(Path(summary["out"]))  # rank 0 only, checked inside
    if os.environ.get("RANK", "0") == "0":
        print(f"best val accuracy {summary['best_val_acc']:.4f} at epoch {summary['best_epoch']}; "
              f"model: {summary['model']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on FER-2013",
                       description="Train a model. Defaults < --config file < flags. "
                       "Run under `torchrun --nproc-per-node N -m fervid train ...` for data-parallel training.")
    p.add_argument("--config", help="YAML or JSON file of TrainConfig fields (augment: {...} for augmentation)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    add_config_flags(p)
    p.set_defaults(func=run)
