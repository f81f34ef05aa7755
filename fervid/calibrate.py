"""Class priors and calibration: what the shipped probabilities mean, and how far to trust them.

A classifier trained with cross-entropy learns ``p(class | face)`` under its *training*
class frequencies: FER-2013 has 16 times more happy faces than disgusted ones, so a face the
net finds ambiguous leans to happy. Where the classes a user meets are equally likely (or
follow some other known mix), the same network answers better after *logit adjustment*:
multiply each probability by ``target prior / training prior`` and renormalise (Menon et
al. 2021, "Long-tail learning via logit adjustment"). ``--prior`` picks the target:

* ``fer2013`` (default): the probabilities as trained, untouched;
* ``uniform``: every class equally likely (divide by the training frequencies);
* ``PATH``: a small JSON (``{"happy": 2, ...}``) or CSV (``class,weight`` rows) of relative
  weights, one per model class.

Every command, the Python API and the service resolve ``--prior`` through
:func:`resolve_prior`, so a bad prior is the same one-line error everywhere. The second half
is measurement: :func:`expected_calibration_error` and :func:`fervid.analysis.plots.plot_reliability` back the
calibration figures of ``fervid evaluate``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import BadInputError
from .files import read_input

#: The names ``--prior`` takes besides a file path.
PRIOR_NAMES = ("fer2013", "uniform")
DEFAULT_PRIOR = "fer2013"
#: Faces per class in FER-2013's Training split (shared/README.md), the training prior of every
#: model trained on it whose metadata does not carry its own ``trained.class_counts``.
FER2013_TRAIN_COUNTS: dict[str, int] = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215,
                                        "sad": 4830, "surprise": 3171, "neutral": 4965}
#: Largest prior file read: a class->weight table is a few hundred bytes.
MAX_PRIOR_BYTES = 64_000
ECE_BINS = 15


def training_prior(meta: dict[str, Any], classes: Sequence[str]) -> np.ndarray:
    """The class frequencies the model was trained under, in ``classes`` order (sums to 1).

    From ``meta["trained"]["class_counts"]`` when the model records them, else FER-2013's
    Training counts (every fervid model so far is trained on that split).
    """
    trained = meta.get("trained") if isinstance(meta.get("trained"), dict) else {}
    counts = trained.get("class_counts") if isinstance(trained.get("class_counts"), dict) else FER2013_TRAIN_COUNTS
    missing = [c for c in classes if not isinstance(counts.get(c), (int, float)) or not counts[c] > 0]
    if missing:
        raise BadInputError(f"--prior: the training frequency of class(es) {', '.join(missing)} is unknown "
                            "for this model (its metadata has no trained.class_counts); use --prior fer2013")
    freq = np.array([float(counts[c]) for c in classes])
    return freq / freq.sum()


def _read_prior_file(path: Path) -> dict[str, float]:
    """class -> weight from a JSON object or a two-column CSV (header optional)."""
    data = read_input(path, MAX_PRIOR_BYTES, "a prior file", "--prior")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInputError(f"{path}: --prior file is not UTF-8 text") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise BadInputError(f"{path}: --prior file is not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(raw, dict):
            raise BadInputError(f"{path}: --prior JSON must be an object of class -> weight")
        items = list(raw.items())
    else:
        rows = [r for r in csv.reader(io.StringIO(text)) if r and any(x.strip() for x in r)]
        if rows and len(rows[0]) >= 2 and _number(rows[0][1]) is None:
            rows = rows[1:]  # a header such as class,weight
        bad = [r for r in rows if len(r) != 2]
        if bad:
            raise BadInputError(f"{path}: --prior CSV rows must be class,weight (got {','.join(bad[0])!r})")
        items = [(r[0], r[1]) for r in rows]
    weights: dict[str, float] = {}
    for name, value in items:
        key = str(name).strip().lower()
        v = _number(value)
        if v is None or not math.isfinite(v) or v < 0:
            raise BadInputError(f"{path}: --prior weight of {key!r} must be a number >= 0, got {value!r}")
        if key in weights:
            raise BadInputError(f"{path}: --prior names class {key!r} twice")
        weights[key] = v
    return weights


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def resolve_prior(spec: str | None, classes: Sequence[str], meta: dict[str, Any]) -> np.ndarray | None:
    """Multipliers for the probabilities of ``classes`` (the model's), or None for ``fer2013``.

    The one place a prior is validated: unknown names, unreadable files, missing or unknown
    classes and weights that are all zero each give one BadInputError line.
    """
    spec = DEFAULT_PRIOR if spec is None or str(spec).strip() == "" else str(spec).strip()
    if spec.lower() == DEFAULT_PRIOR:
        return None
    train = training_prior(meta, classes)
    if spec.lower() == "uniform":
        target = np.full(len(classes), 1.0 / len(classes))
    else:
        path = Path(spec).expanduser()
        if not path.exists() and not path.is_symlink():
            raise BadInputError(f"--prior {spec}: not {' or '.join(PRIOR_NAMES)} and no such file")
        weights = _read_prior_file(path)
        unknown = sorted(set(weights) - set(classes))
        missing = [c for c in classes if c not in weights]
        if unknown or missing:
            what = (f"names class(es) {', '.join(unknown)} the model does not predict" if unknown
                    else f"has no weight for {', '.join(missing)}")
            raise BadInputError(f"{path}: --prior {what} (the model predicts {', '.join(classes)})")
        target = np.array([weights[c] for c in classes])
        if not target.sum() > 0:
            raise BadInputError(f"{path}: --prior weights are all zero")
        target = target / target.sum()
    return target / train


def apply_prior(probs: np.ndarray, multipliers: np.ndarray | None) -> np.ndarray:
    """Probabilities [N, C] re-weighted by ``multipliers`` [C] and renormalised (None: unchanged)."""
    if multipliers is None or not len(probs):
        return probs
    p = probs * multipliers
    return p / p.sum(axis=1, keepdims=True)


# --- measuring calibration --------------------------------------------------------------------

def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Equal-width confidence bins over (0, 1]: count, mean confidence and accuracy in each."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # bin k holds (edges[k], edges[k+1]]; a confidence of exactly 0 falls in the first bin
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    out = []
    for k in range(bins):
        sel = idx == k
        n = int(sel.sum())
        out.append({"lower": float(edges[k]), "upper": float(edges[k + 1]), "count": n,
                    "confidence": float(confidence[sel].mean()) if n else 0.0,
                    "accuracy": float(correct[sel].mean()) if n else 0.0})
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over equal-width bins
    (Guo et al. 2017), the figure calibration papers quote; 0 for a perfectly calibrated model."""
    n = len(confidence)
    if n == 0:
        return 0.0
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(confidence, correct, bins)))
