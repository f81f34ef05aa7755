"""The faces of a split, labelled in a class set: the one entry point training and evaluation use.

It picks the reader: :mod:`fervid.fer2013` for ``fer2013.csv`` and Kaggle's folder layout,
:mod:`fervid.ferplus` for FER+ votes. Both give equalized 48x48 faces in a :class:`FaceSet`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .classes import ALL_CLASSES, FER_CLASSES, FERPLUS_CLASSES, PRESET_CLASS_SETS, ClassSet  # noqa: F401  (re-exported)
from .errors import BadInputError
from .fer2013 import FaceSet, RawFer, read_source, split_mask, splits_found  # noqa: F401  (re-exported)
from .ferplus import LABELS_FILE, PIXELS_CSV, VOTES_CSV, ferplus_source, label_mode, majority_labels, read_ferplus, soft_targets
from .preprocess import equalize_batch


def class_set_for(source: str | os.PathLike, spec: str = "all", merge: str | None = None,
                  labels: str = "auto") -> ClassSet:
    """The class set ``spec``/``merge`` means on ``source`` with ``labels``: ``all`` is FER+'s
    eight classes on FER+ votes and FER-2013's seven otherwise; a class the labels never
    give (contempt with FER-2013 labels) is refused rather than trained as a dead output."""
    mode = label_mode(source, labels)
    universe = FER_CLASSES if mode in ("fer2013", "mix") else FERPLUS_CLASSES
    class_set = ClassSet.parse(spec, merge, universe)
    class_set.check_within(universe, f"{source} with {mode} labels")
    return class_set


def load_faces(source: str | os.PathLike, split: str, class_set: ClassSet | None = None,
               use_cache: bool = True, labels: str = "auto", vote_weight: float = 0.5) -> FaceSet:
    """The faces of ``split`` in ``source``, equalized, relabelled to ``class_set``.

    ``labels`` picks the target on FER+ sources (see :mod:`fervid.ferplus`): ``fer2013``
    (the original labels), ``majority``, ``soft`` or ``mix`` (the original labels with
    ``vote_weight`` of the vote distribution); ``auto`` is FER-2013's own labels on
    FER-2013 and the FER+ majority on FER+.
    """
    mode = label_mode(source, labels)
    class_set = class_set or class_set_for(source, "all", None, mode)
    plus = ferplus_source(source, mode)
    if plus is not None:
        return load_ferplus_faces(plus, split, class_set, mode, use_cache=use_cache, vote_weight=vote_weight)
    raw = read_source(source, use_cache=use_cache)
    mapped = class_set.label_map()[raw.labels]
    mask = split_mask(raw, split) & (mapped >= 0)
    if not mask.any():
        raise BadInputError(f"{source}: split {split!r} has no faces of classes "
                            f"{class_set.describe()} (splits found: {', '.join(splits_found(raw))})")
    hard = mapped[mask]
    counts = {c: int((hard == i).sum()) for i, c in enumerate(class_set.classes)}
    if raw.equalized is not None:  # from the cache: a copy out of the memory map
        images = np.asarray(raw.equalized[mask])
    else:
        images = equalize_batch(np.asarray(raw.images[mask]))
    return FaceSet(images, hard, class_set.classes, name=f"{Path(source).name}:{split}", counts=counts)


def load_ferplus_faces(source: Path, split: str, class_set: ClassSet, mode: str,
                       use_cache: bool = True, vote_weight: float = 0.5) -> FaceSet:
    """The faces of ``split`` with ``mode`` labels (fer2013, majority, soft, mix) in ``class_set``;
    ``vote_weight`` is the votes' share of a ``mix`` target."""
    raw = read_ferplus(source, use_cache=use_cache)
    lmap = class_set.label_map()
    dist = None
    if mode in ("fer2013", "mix"):
        if not (raw.labels >= 0).any():
            raise BadInputError(f"{source}: no original FER-2013 labels here: --labels fer2013 needs "
                                f"{LABELS_FILE} beside the FER+ folders (or {VOTES_CSV} beside {PIXELS_CSV})")
        source_label = raw.labels
        if mode == "mix":
            dist = soft_targets(raw.votes)
    elif mode == "majority":
        source_label = majority_labels(raw.votes)
    else:
        dist = soft_targets(raw.votes)
        source_label = np.where(dist.sum(1) > 0, dist.argmax(1), -1)
    mapped = np.where(source_label >= 0, lmap[np.clip(source_label, 0, None)], -1)
    mask = split_mask(raw, split) & (mapped >= 0)
    if not mask.any():
        raise BadInputError(f"{source}: split {split!r} has no faces of classes {class_set.describe()} "
                            f"with {mode} labels (splits found: {', '.join(splits_found(raw))})")
    hard = mapped[mask]
    targets = None
    if dist is not None:  # a dropped class's share goes; a merged one's joins its class
        targets = np.zeros((len(hard), len(class_set.classes)), np.float64)
        for s, d in enumerate(lmap):
            if d >= 0:
                targets[:, d] += dist[mask, s]
        total = targets.sum(1, keepdims=True)
        targets = np.divide(targets, total, out=np.zeros_like(targets), where=total > 0)
        if mode == "mix":  # the original label, with the votes' share where FER+ kept the face
            onehot = np.eye(len(class_set.classes))[hard]
            w = np.where(total > 0, float(vote_weight), 0.0)
            targets = (1.0 - w) * onehot + w * targets
        targets = targets.astype(np.float32)
    counts = {c: int((hard == i).sum()) for i, c in enumerate(class_set.classes)}
    return FaceSet(np.asarray(raw.equalized[mask]), hard, class_set.classes,
                   name=f"{source.name}:{split} ({mode} labels)", counts=counts, targets=targets)
