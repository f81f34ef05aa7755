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
from .ferplus import ferplus_source, label_mode, load_ferplus_faces
from .preprocess import equalize_batch


def class_set_for(source: str | os.PathLike, spec: str = "all", merge: str | None = None,
                  labels: str = "auto") -> ClassSet:
    """The class set ``spec``/``merge`` means on ``source`` with ``labels``: ``all`` is FER+'s
    eight classes on FER+ votes and FER-2013's seven otherwise; a class the labels never
    give (contempt with FER-2013 labels) is refused rather than trained as a dead output."""
    mode = label_mode(source, labels)
    universe = FER_CLASSES if mode == "fer2013" else FERPLUS_CLASSES
    class_set = ClassSet.parse(spec, merge, universe)
    class_set.check_within(universe, f"{source} with {mode} labels")
    return class_set


def load_faces(source: str | os.PathLike, split: str, class_set: ClassSet | None = None,
               use_cache: bool = True, labels: str = "auto") -> FaceSet:
    """The faces of ``split`` in ``source``, equalized, relabelled to ``class_set``.

    ``labels`` picks the target on FER+ sources (see :mod:`fervid.ferplus`): ``fer2013``
    (the original labels), ``majority`` or ``soft``; ``auto`` is FER-2013's own labels on
    FER-2013 and the FER+ majority on FER+.
    """
    mode = label_mode(source, labels)
    class_set = class_set or class_set_for(source, "all", None, mode)
    plus = ferplus_source(source, mode)
    if plus is not None:
        return load_ferplus_faces(plus, split, class_set, mode, use_cache=use_cache)
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
