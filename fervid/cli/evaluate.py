"""``fervid evaluate``: score a model on a FER-2013 split, write a JSON report and confusion matrices.

The last line printed is always ``accuracy: <float>`` (the plain figure), so scripts and
scorers can read it without parsing the table above it.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from .common import add_prior_flag


def default_out_dir(model_path: Path, split: str, ensemble: bool = False) -> Path:
    """``<model dir>/eval-<model file>-<split>`` beside the model when that folder is writable, else
    ``./fervid-eval/eval-<model>-<split>``.

    Named after the model file (``best-safetensors``, ``model-onnx``...), so two models in one
    folder (``best.safetensors`` and its ``best.onnx``, or ``a.onnx`` and ``b.onnx``) never claim
    the same report folder.

    An ensemble's report goes to ``eval-ensemble-<split>`` beside its first member, so it
    never replaces that member's own report. The shipped model's folder is the installed
    package (writable in an editable install or a user's venv): reports never go there, so
    scoring the bundled model leaves the install as it was.
    """
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "+", split.strip()) or "split"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", model_path.name).strip("-") or "model"
    tag = f"ensemble-{tag}" if ensemble else f"{stem}-{tag}"
    from ..recognition.recognize import ASSETS

    folder = model_path.parent
    if folder.resolve() != ASSETS and os.access(folder, os.W_OK):
        return folder / f"eval-{tag}"
    return Path("fervid-eval") / f"eval-{tag}"


def run(args: argparse.Namespace) -> int:
    from ..analysis.evaluate import (
        evaluate,
        format_report,
        load_eval_faces,
        load_soft_faces,
        report_paths,
        write_report,
    )
    from ..analysis.predictors import load_model_any
    from ..ferplus import label_mode, scoring_labels
    from ..files import check_output
    from ..modelfile import split_model_list

    if args.threads:
        try:
            import torch
        except ImportError:  # an .onnx model can be scored without torch
            pass
        else:
            torch.set_num_threads(args.threads)
    model, meta, path = load_model_any(args.model)
    ensemble = len(split_model_list(args.model)) > 1
    out_dir = Path(args.out_dir) if args.out_dir else default_out_dir(path, args.split, ensemble)
    check_output(out_dir, folder=True)  # before minutes of inference
    if not args.overwrite:  # fail before minutes of inference, not after
        for p in report_paths(out_dir, args.tta).values():
            if p.exists():
                from ..errors import BadInputError

                raise BadInputError(f"{p}: already exists (use --overwrite to replace it)")
    mode = label_mode(args.data, args.labels)
    faces = load_eval_faces(args.data, args.split, meta, classes=args.classes, merge=args.merge, labels=mode)
    soft = load_soft_faces(args.data, args.split, meta, args.classes, args.merge) if mode == "soft" else None
    report = evaluate(model, meta, faces, tta=args.tta, batch_size=args.batch_size, device=args.device,
                      precision=args.precision, model_name=args.model if ensemble else str(path),
                      soft=soft, labels=scoring_labels(mode), prior=args.prior)
    paths = write_report(report, out_dir, overwrite=args.overwrite)
    print(format_report(report))
    print(f"report: {paths['report']}  confusion matrix: {paths['confusion']}  "
          f"reliability diagram: {paths['reliability']}")
    print(f"accuracy: {report.accuracy:.4f}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a model on a labelled FER-2013 or FER+ split",
                       description="Score a fervid model on a FER-2013 or FER+ split: accuracy, macro-F1, per-class "
                       "precision/recall/F1, confusion matrix PNG and a JSON report. The last line printed "
                       "is 'accuracy: <float>'.")
    p.add_argument("--model", required=True,
                   help="model: a .safetensors file, a training run folder (its best model) or an exported .onnx (or its .json); "
                   "several, comma-separated, score their ensemble (softmax averaged)")
    p.add_argument("--data", required=True,
                   help="FER-2013 source (fer2013.csv or a folder in the Kaggle layout) or FER+ (the FER2013Train/... "
                   "folders, or fer2013new.csv beside fer2013.csv)")
    p.add_argument("--labels", default="auto", choices=("auto", "fer2013", "majority", "soft"),
                   help="labels to score against: on FER+ the majority vote (auto, majority: the protocol the "
                   "literature reports), soft (the majority, plus the cross-entropy to the vote distributions) "
                   "or fer2013 (the original labels); FER-2013 sources have only fer2013 (default: auto)")
    p.add_argument("--split", default="test",
                   help="split(s): Training, PublicTest, PrivateTest, train, test (test folder, or Usage "
                   "PublicTest+PrivateTest in a CSV), all; comma-separated to combine (default: test)")
    p.add_argument("--classes", default=None,
                   help="score only a subset of the model's classes (preset or comma list): faces of other "
                   "classes are dropped and predictions are taken over the kept classes")
    p.add_argument("--merge", default=None,
                   help="fold classes the model does not predict into ones it does, e.g. disgust:angry")
    p.add_argument("--tta", action="store_true",
                   help="also score with test-time augmentation (flip + shifted crops), reported beside the plain figures")
    add_prior_flag(p)
    p.add_argument("--batch-size", type=int, default=256, help="faces per forward pass (default: 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "auto"),
                   help="inference precision; fp32 (default) gives exact figures")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    p.add_argument("--out-dir", default=None,
                   help="folder for report.json, confusion.png and reliability.png (default: <model dir>/eval-<model>-<split>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report in --out-dir")
    p.set_defaults(func=run)
