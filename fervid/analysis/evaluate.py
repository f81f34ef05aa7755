"""Scoring a trained model on a labelled FER-2013 split: the numbers a report or a paper quotes.

The model's own class list (its metadata) decides how the data is relabelled, so a
6-class model is scored on the faces of its 6 classes and never on a numbering it was
not trained with. Asking for a subset of the model's classes (a 5-class task with a
7-class model) drops the other classes' faces and takes the argmax over the kept
classes only, which is what "renormalising the softmax over the subset" amounts to.
Every figure comes from scikit-learn so it matches what others compute from the same
predictions; classes stay named from the data to the JSON.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..calibrate import DEFAULT_PRIOR, expected_calibration_error, reliability_bins, resolve_prior
from ..data import ClassSet, FaceSet, load_faces
from ..errors import BadInputError
from ..ferplus import scoring_labels
from ..files import write_text_atomic
from ..probabilities import log_softmax
from .plots import plot_confusion, plot_reliability
from .predictors import model_logits

REPORT_FILE = "report.json"
CONFUSION_FILE = "confusion.png"
CONFUSION_TTA_FILE = "confusion-tta.png"
RELIABILITY_FILE = "reliability.png"


@dataclass
class Scores:
    """Figures for one way of predicting (plain, or with test-time augmentation)."""

    accuracy: float
    macro_f1: float
    loss: float  # mean cross-entropy, softmax renormalised over the evaluated classes
    per_class: dict[str, dict[str, float]]  # class -> precision, recall, f1, support
    confusion: list[list[int]]  # counts, true class per row, columns in the same class order
    ece: float = float("nan")  # expected calibration error of the top-class probability, 15 bins
    reliability: list[dict[str, float]] = field(default_factory=list)  # the bins behind ece

    def confusion_normalized(self) -> np.ndarray:
        """Rows sum to 1 (a class without faces keeps a zero row)."""
        m = np.asarray(self.confusion, dtype=np.float64)
        sums = m.sum(axis=1, keepdims=True)
        return np.divide(m, sums, out=np.zeros_like(m), where=sums > 0)


@dataclass
class EvalReport:
    """Everything ``fervid evaluate`` reports; ``to_dict`` is its JSON form."""

    classes: list[str]  # classes scored (the model's, or the --classes subset)
    model_classes: list[str]
    counts: dict[str, int]  # faces per class in the data
    plain: Scores
    tta: Scores | None = None
    model: str = ""
    arch: str = ""
    data: str = ""
    seconds: float = 0.0
    prior: str = "fer2013"
    predicted: np.ndarray | None = field(default=None, repr=False)  # indices into classes (plain)
    labels: str = ""  # which labels the faces carry (fer2013, majority: FER+ sources)
    #: FER+ --labels soft: mean cross-entropy of the softmax against each face's vote distribution
    soft_loss: float | None = None
    soft_n: int = 0  # faces the soft figure is over (FER+ keeps a slightly different set than the majority)

    @property
    def n(self) -> int:
        return int(sum(self.counts.values()))

    @property
    def accuracy(self) -> float:
        return self.plain.accuracy

    @property
    def macro_f1(self) -> float:
        return self.plain.macro_f1

    def predicted_names(self) -> list[str]:
        return [] if self.predicted is None else [self.classes[i] for i in self.predicted]

    def to_dict(self) -> dict[str, Any]:
        d = {
            "model": self.model, "arch": self.arch, "data": self.data, "n": self.n, "prior": self.prior,
            "classes": list(self.classes), "model_classes": list(self.model_classes),
            "counts": dict(self.counts), "seconds": round(self.seconds, 3),
            "accuracy": self.plain.accuracy, "macro_f1": self.plain.macro_f1, "ece": self.plain.ece,
            "plain": asdict(self.plain), "tta": asdict(self.tta) if self.tta else None,
            "labels": self.labels, "soft_loss": self.soft_loss, "soft_n": self.soft_n,
        }
        for s in ("plain", "tta"):
            if d[s] is not None:
                d[s]["confusion_normalized"] = [[round(v, 5) for v in row]
                                                for row in getattr(self, s).confusion_normalized().tolist()]
        return d


def scored_class_set(meta: dict[str, Any], classes: str | None = None, merge: str | None = None) -> ClassSet:
    """The class set to relabel data with: the model's classes, or a subset of them.

    ``merge`` (``src:dst``) folds a class the model does not predict into one it does,
    for models trained that way (``disgust:angry``).
    """
    model_classes = list(meta["classes"])
    full = ClassSet.parse(",".join(model_classes))
    if not classes:
        return ClassSet.parse(",".join(model_classes), merge) if merge else full
    subset = ClassSet.parse(classes, merge)
    outside = [c for c in subset.classes if c not in model_classes]
    if outside:
        raise BadInputError(f"--classes names {', '.join(outside)}, which the model does not predict "
                            f"(it predicts {', '.join(model_classes)})")
    return subset


def load_eval_faces(source: str | os.PathLike, split: str, meta: dict[str, Any],
                    classes: str | None = None, merge: str | None = None, labels: str = "auto") -> FaceSet:
    """The faces of ``split`` in ``source`` labelled in the model's (or the subset's) classes.

    On FER+ the labels are the majority (the protocol the literature reports) unless
    ``labels`` asks for the original FER-2013 ones; ``soft`` scores accuracy on the majority too.
    """
    return load_faces(source, split, scored_class_set(meta, classes, merge), labels=scoring_labels(labels))


def load_soft_faces(source: str | os.PathLike, split: str, meta: dict[str, Any],
                    classes: str | None = None, merge: str | None = None) -> FaceSet:
    """The faces of ``split`` with FER+'s vote distributions as ``targets``, for :func:`evaluate`'s ``soft``."""
    return load_faces(source, split, scored_class_set(meta, classes, merge), labels="soft")


def score(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str],
          log_probs: np.ndarray | None = None) -> Scores:
    """scikit-learn's figures for named classes.

    Macro-F1 averages over the classes present in the labels or the predictions, as
    ``sklearn.metrics.f1_score(average="macro")`` does by default, so a class absent
    from a small split does not count as a zero; the per-class table lists every class.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i, c in enumerate(classes)}
    loss, ece, bins = float("nan"), float("nan"), []
    if log_probs is not None and len(y_true):
        loss = float(-log_probs[np.arange(len(y_true)), y_true].mean())
        confidence = np.exp(log_probs[np.arange(len(y_true)), y_pred])  # the probability of the answer given
        correct = np.asarray(y_pred) == np.asarray(y_true)
        ece, bins = expected_calibration_error(confidence, correct), reliability_bins(confidence, correct)
    return Scores(accuracy=float(accuracy_score(y_true, y_pred)),
                  macro_f1=float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
                  loss=loss, per_class=per_class,
                  confusion=confusion_matrix(y_true, y_pred, labels=labels).tolist(), ece=ece, reliability=bins)


def _columns(model_classes: Sequence[str], classes: Sequence[str]) -> list[int]:
    missing = [c for c in classes if c not in model_classes]
    if missing:
        raise BadInputError(f"the data has class(es) {', '.join(missing)} that the model does not predict "
                            f"(it predicts {', '.join(model_classes)})")
    return [list(model_classes).index(c) for c in classes]


def evaluate(model: Any, meta: dict[str, Any], faces: FaceSet, tta: bool = False, batch_size: int = 256,
             device: str = "cpu", precision: str = "fp32", model_name: str = "",
             soft: FaceSet | None = None, labels: str = "", prior: str | None = None) -> EvalReport:
    """Score ``model`` on ``faces`` (labelled in ``faces.classes``, a subset of the model's classes).

    With ``tta`` both the plain and the test-time-augmented figures are computed, so a
    report can show what augmentation buys instead of replacing one number by another.
    ``soft`` (faces with FER+ vote distributions) adds the cross-entropy against those,
    the figure a model trained on them is fitted to. ``labels`` names the labels ``faces``
    carry, for the report. ``prior`` re-weights the probabilities exactly as recognition's
    ``--prior`` does (:func:`fervid.calibrate.resolve_prior`), so both ways can be scored on the same faces.
    """
    if len(faces) == 0:
        raise BadInputError(f"{faces.name or 'data'}: no faces to evaluate")
    if batch_size < 1:
        raise BadInputError(f"batch size must be at least 1, got {batch_size}")
    model_classes = list(meta["classes"])
    cols = _columns(model_classes, faces.classes)
    multipliers = resolve_prior(prior, model_classes, meta)
    log_weights = None if multipliers is None else np.log(multipliers[cols])
    t0 = time.time()
    results: dict[str, Scores] = {}
    predicted = None
    for mode in (("plain", "tta") if tta else ("plain",)):
        z = model_logits(model, faces.images, tta=mode == "tta", batch_size=batch_size,
                         device=device, precision=precision)
        logp = log_softmax(z[:, cols].astype(np.float64))
        if log_weights is not None:  # p * w renormalised, in logs
            logp = log_softmax(logp + log_weights)
        pred = logp.argmax(axis=1)
        results[mode] = score(faces.labels, pred, faces.classes, logp)
        if mode == "plain":
            predicted = pred
    soft_loss = None
    if soft is not None and len(soft):
        if soft.targets is None:
            raise BadInputError(f"{soft.name or 'data'}: no vote distributions to score against")
        z = model_logits(model, soft.images, batch_size=batch_size, device=device, precision=precision)
        logp = log_softmax(z[:, _columns(model_classes, soft.classes)].astype(np.float64))
        soft_loss = float(-(soft.targets * logp).sum(axis=1).mean())
    counts = faces.counts or {c: int((faces.labels == i).sum()) for i, c in enumerate(faces.classes)}
    return EvalReport(classes=list(faces.classes), model_classes=model_classes, counts=dict(counts),
                      plain=results["plain"], tta=results.get("tta"), model=model_name,
                      arch=str(meta.get("arch", "")), data=faces.name, seconds=time.time() - t0,
                      predicted=predicted, labels=labels, soft_loss=soft_loss, soft_n=len(soft) if soft else 0,
                      prior=str(prior or DEFAULT_PRIOR))


def format_report(report: EvalReport) -> str:
    """Per-class table, then the summary figures, as the CLI prints them."""
    width = max(8, *(len(c) for c in report.classes))
    tta = report.tta
    head = f"{'class':<{width}}  precision  recall     f1  support" + ("  recall(tta)" if tta else "")
    lines = [f"model {report.model or report.arch} ({report.arch}) on {report.data}: "
             f"{report.n} faces, {len(report.classes)} classes", "", head, "-" * len(head)]
    for c in report.classes:
        pc = report.plain.per_class[c]
        line = f"{c:<{width}}  {pc['precision']:9.4f}  {pc['recall']:6.4f}  {pc['f1']:.4f}  {pc['support']:7d}"
        if tta:
            line += f"  {tta.per_class[c]['recall']:11.4f}"
        lines.append(line)
    lines.append("-" * len(head))
    lines.append(f"macro-F1: {report.plain.macro_f1:.4f}   loss: {report.plain.loss:.4f}   "
                 f"ECE: {report.plain.ece:.4f} (prior {report.prior})")
    if report.soft_loss is not None:
        lines.append(f"cross-entropy to the FER+ vote distributions: {report.soft_loss:.4f} ({report.soft_n} faces)")
    if tta:
        lines.append(f"tta: accuracy {tta.accuracy:.4f}   macro-F1 {tta.macro_f1:.4f}   loss {tta.loss:.4f}   "
                     f"ECE {tta.ece:.4f}")
    return "\n".join(lines)


def report_paths(out_dir: str | os.PathLike, tta: bool) -> dict[str, Path]:
    out = Path(out_dir)
    paths = {"report": out / REPORT_FILE, "confusion": out / CONFUSION_FILE, "reliability": out / RELIABILITY_FILE}
    if tta:
        paths["confusion_tta"] = out / CONFUSION_TTA_FILE
    return paths


def write_report(report: EvalReport, out_dir: str | os.PathLike, overwrite: bool = False) -> dict[str, Path]:
    """JSON report, confusion-matrix PNG(s) and reliability diagram in ``out_dir``; refuses to
    replace files unless told."""
    paths = report_paths(out_dir, report.tta is not None)
    if not overwrite:
        existing = [str(p) for p in paths.values() if p.exists()]
        if existing:
            raise BadInputError(f"{existing[0]}: already exists (use --overwrite to replace it)")
    title = f"{report.arch} on {report.data}: accuracy {report.plain.accuracy:.4f}"
    plot_confusion(report.plain.confusion_normalized(), report.classes, paths["confusion"], title=title)
    if report.tta is not None:
        plot_confusion(report.tta.confusion_normalized(), report.classes, paths["confusion_tta"],
                       title=f"{report.arch} on {report.data} with TTA: accuracy {report.tta.accuracy:.4f}")
    plot_reliability(report.plain.reliability, paths["reliability"],
                     title=f"{report.arch} on {report.data}, prior {report.prior}: ECE {report.plain.ece:.4f}")
    write_text_atomic(paths["report"], json.dumps(report.to_dict(), indent=2) + "\n")
    return paths
