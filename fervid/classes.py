"""Class names and class sets: which expressions a model predicts, and how source classes fold into them.

Kept apart from the readers (:mod:`fervid.data`, :mod:`fervid.ferplus`) because every
source shares one numbering: FER-2013's seven classes in its CSV order, then FER+'s
contempt. A label stored in any cache means the same class whichever file it came from,
so one :meth:`ClassSet.label_map` serves every reader.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BadInputError

#: Class names in the CSV's numbering (0 angry ... 6 neutral).
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: Every class any source has: FER-2013's, then FER+'s contempt (label 7).
ALL_CLASSES: tuple[str, ...] = FER_CLASSES + ("contempt",)
#: FER+'s eight emotions, in fervid's numbering (a FER+ model's first seven outputs are FER-2013's).
FERPLUS_CLASSES: tuple[str, ...] = ALL_CLASSES


def presets(universe: tuple[str, ...] = FER_CLASSES) -> dict[str, tuple[str, ...]]:
    """Named class sets over the classes a source has (``all`` on FER+ includes contempt)."""
    return {
        "all": universe,
        "fer2013": FER_CLASSES,  # the seven FER-2013 classes, e.g. with --merge contempt:disgust on FER+
        "no-disgust": tuple(c for c in universe if c != "disgust"),
        "no-disgust-fear": tuple(c for c in universe if c not in ("disgust", "fear")),
    }


PRESET_CLASS_SETS: dict[str, tuple[str, ...]] = presets(FER_CLASSES)


@dataclass(frozen=True)
class ClassSet:
    """Which classes a model predicts, and which source classes fold into which.

    ``merge`` maps a source class to a kept class (``disgust -> angry``); classes
    neither kept nor merged are dropped from the data.
    """

    classes: tuple[str, ...] = FER_CLASSES
    merge: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, spec: str = "all", merge: str | None = None,
              universe: tuple[str, ...] = FER_CLASSES) -> "ClassSet":
        """``spec``: a preset (all, fer2013, no-disgust, no-disgust-fear) or a comma list of names.
        ``merge``: comma list of ``src:dst`` pairs, e.g. ``disgust:angry``. ``universe`` is
        what the presets mean: a FER-2013 source's seven classes, or FER+'s eight."""
        spec = (spec or "all").strip().lower()
        named = presets(universe)
        if spec in named:
            classes = named[spec]
        else:
            classes = tuple(c.strip() for c in spec.split(",") if c.strip())
            unknown = [c for c in classes if c not in ALL_CLASSES]
            if unknown or not classes:
                raise BadInputError(
                    f"unknown class set {spec!r}: use one of {', '.join(named)} "
                    f"or a comma list of {', '.join(ALL_CLASSES)}")
            if len(set(classes)) != len(classes):
                raise BadInputError(f"class set {spec!r} names a class twice")
        pairs: list[tuple[str, str]] = []
        for item in (merge or "").split(","):
            if not item.strip():
                continue
            src, sep, dst = item.partition(":")
            src, dst = src.strip().lower(), dst.strip().lower()
            if not sep or src not in ALL_CLASSES or dst not in classes or src in classes:
                raise BadInputError(
                    f"bad merge {item!r}: write SRC:DST with SRC a dropped class and DST a kept one")
            pairs.append((src, dst))
        return cls(tuple(classes), tuple(pairs))

    def label_map(self) -> np.ndarray:
        """Array mapping each source label (0..7, :data:`ALL_CLASSES`) to an index into ``classes``, or -1 to drop."""
        out = np.full(len(ALL_CLASSES), -1, dtype=np.int64)
        for i, name in enumerate(self.classes):
            out[ALL_CLASSES.index(name)] = i
        for src, dst in self.merge:
            out[ALL_CLASSES.index(src)] = self.classes.index(dst)
        return out

    def check_within(self, universe: tuple[str, ...], where: str) -> None:
        """Refuse classes the source has no faces of (contempt on FER-2013): a class never
        seen in training would be an output that is never right."""
        outside = [c for c in self.classes if c not in universe]
        if outside:
            raise BadInputError(f"{where} has no {', '.join(outside)} faces (its classes: {', '.join(universe)})")

    def describe(self) -> str:
        text = ",".join(self.classes)
        if self.merge:
            text += " (merged " + ", ".join(f"{s}->{d}" for s, d in self.merge) + ")"
        return text
