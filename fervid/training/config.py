"""What a training run is: one dataclass, read from YAML/JSON files and flags, checked before use.

Kept apart from the loop in :mod:`fervid.training.engine` so that tools that only read or write
configs (``tune``, the CLI) need not reason about the loop.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInputError


@dataclass
class AugmentConfig:
    flip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # max rotation, degrees
    shift: float = 0.08  # max translation, fraction of the side
    scale: float = 0.10  # max zoom in or out, fraction
    crop: float = 0.0  # min side fraction of a random crop resized back (0 = off, e.g. 0.85)
    erase: float = 0.5  # probability of erasing one random rectangle
    erase_area: float = 0.25  # max fraction of the face an erased rectangle covers
    flip_mode: str = "random"  # random | alternate (each face flipped in every other epoch, from a random start)


@dataclass
class TrainConfig:
    # data
    data: str = "../shared/datasets/fer2013"
    train_split: str = "Training"
    val_split: str = "PublicTest"
    classes: str = "all"
    merge: str = ""
    labels: str = "auto"  # FER+ target: auto | fer2013 | majority | soft | mix (auto: FER+ majority on FER+, FER-2013's own elsewhere)
    vote_weight: float = 0.5  # labels=mix: the FER+ votes' share of each target (the rest: the original label)
    limit: int = 0  # train on a seeded random N of the training faces (quick experiments, tests)
    # model and optimisation
    model: str = "vgg_s"
    init: str = ""  # start from this fervid .safetensors model's weights (fine-tuning); "" = random init
    dropout: float = -1.0  # dropout rate of the model's head; -1 = the architecture's own default
    epochs: int = 60
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw | muon (Muon for conv weights, SGD for the rest)
    muon_lr: float = 0.02  # with optimizer muon: the conv weights' learning rate (lr is the rest's)
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | onecycle | constant | triangle
    warmup_epochs: float = 1.0
    bias_lr_scale: float = 1.0  # learning rate of biases and norm shifts, as a multiple of lr
    whiten: bool = True  # set a model's patch-whitening layer from training faces and freeze it
    progressive: str = ""  # train sizes in equal parts of the epochs, e.g. "32,40,48"; "" = 48 throughout
    label_smoothing: float = 0.1
    class_weighting: str = "none"  # none | loss | sampler
    mixup: float = 0.0  # Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) of the kept area; 0 = off (with mixup too: half the batches each)
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off
    swa_start: int = 0  # from this epoch on, validate and save the equal average of each epoch's weights (SWA); 0 = off
    teacher: str = ""  # distil from these fervid models (comma-separated: their averaged softmax); "" = off
    distill_alpha: float = 0.5  # weight of the distillation loss against the hard-label loss
    distill_temp: float = 4.0  # softmax temperature of teacher and student in the distillation loss
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # run
    patience: int = 0  # stop after this many epochs without a better val accuracy; 0 = never
    stop_at: float = 0.0  # stop once val accuracy reaches this (time-to-accuracy runs); 0 = never
    stop_at_train: float = 0.0  # ... and train accuracy (on augmented batches) this; 0 = val alone decides
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | bf16 | fp32
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    out: str = "runs/exp"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a config file's mapping; unknown keys and wrong types are one-line errors."""
        d = dict(d)
        aug = d.pop("augment", None) or {}
        if not isinstance(aug, dict):
            raise BadInputError(f"config key 'augment' must be a mapping of augmentation strengths, got {aug!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        aug_names = {f.name for f in dataclasses.fields(AugmentConfig)}
        if unknown or set(aug) - aug_names:
            raise BadInputError(f"unknown config key(s): {', '.join(unknown + sorted(set(aug) - aug_names))}")
        return cls(**_typed(cls, d, ""), augment=AugmentConfig(**_typed(AugmentConfig, aug, "augment.")))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Refuse values that would fail deep inside training (or, worse, silently train something else)."""
        choices = {"optimizer": ("sgd", "adamw", "muon"), "schedule": ("cosine", "onecycle", "constant", "triangle"),
                   "class_weighting": ("none", "loss", "sampler"), "precision": ("auto", "bf16", "fp32"),
                   "labels": ("auto", "fer2013", "majority", "soft", "mix")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise BadInputError(f"unknown {name.replace('_', ' ')} {getattr(self, name)!r} "
                                    f"(use {', '.join(allowed)})")
        if self.augment.flip_mode not in ("random", "alternate"):
            raise BadInputError(f"unknown flip mode {self.augment.flip_mode!r} (use random, alternate)")
        self.train_sizes()  # a malformed progressive list is refused here, not at its epoch
        a = self.augment
        checks = [("epochs", self.epochs >= 1), ("batch_size", self.batch_size >= 1), ("lr", self.lr > 0),
                  ("limit", self.limit >= 0), ("patience", self.patience >= 0), ("threads", self.threads >= 0),
                  ("warmup_epochs", self.warmup_epochs >= 0), ("mixup", self.mixup >= 0),
                  ("cutmix", self.cutmix >= 0),
                  ("label_smoothing", 0 <= self.label_smoothing < 1), ("ema", 0 <= self.ema < 1),
                  ("bias_lr_scale", self.bias_lr_scale > 0), ("muon_lr", self.muon_lr > 0),
                  ("stop_at", 0 <= self.stop_at <= 1), ("vote_weight", 0 <= self.vote_weight <= 1), ("stop_at_train", 0 <= self.stop_at_train <= 1),
                  ("swa_start", 0 <= self.swa_start <= self.epochs),
                  ("dropout", self.dropout == -1 or 0 <= self.dropout < 1),
                  ("distill_alpha", 0 <= self.distill_alpha <= 1), ("distill_temp", self.distill_temp > 0),
                  ("aug_flip", 0 <= a.flip <= 1), ("aug_erase", 0 <= a.erase <= 1),
                  ("aug_erase_area", 0 < a.erase_area <= 1), ("aug_crop", 0 <= a.crop < 1),
                  ("aug_rotate", a.rotate >= 0), ("aug_shift", a.shift >= 0), ("aug_scale", 0 <= a.scale < 1)]
        for name, ok in checks:
            if not ok:
                value = getattr(a, name[4:]) if name.startswith("aug_") else getattr(self, name)
                raise BadInputError(f"{name.replace('_', '-')} {value!r} is out of range")

    def train_sizes(self) -> list[int]:
        """The ``progressive`` face sizes, in order ([] = full size throughout)."""
        try:
            sizes = [int(v) for v in self.progressive.split(",") if v.strip()]
        except ValueError:
            sizes = [0]
        if any(not 16 <= v <= 96 for v in sizes) or len(sizes) > self.epochs:
            raise BadInputError(f"progressive {self.progressive!r}: write sizes 16-96 px, e.g. 32,40,48, "
                                f"no more of them than epochs")
        return sizes

    def train_size(self, epoch: int) -> int:
        """Face side for training epoch ``epoch`` (0-based): the list split into equal parts."""
        sizes = self.train_sizes()
        return sizes[min(len(sizes) - 1, epoch * len(sizes) // self.epochs)] if sizes else 0


def _typed(cls: type, d: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``d`` with each value checked against its field's type (YAML reads ``5e-2`` as a string: accepted)."""
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = {}
    for k, v in d.items():
        t = types[k]
        if t in ("int", "float") and isinstance(v, str):
            try:
                v = int(v) if t == "int" else float(v)
            except ValueError:
                pass
        ok = {"str": isinstance(v, str), "bool": isinstance(v, bool),
              "int": isinstance(v, int) and not isinstance(v, bool),
              "float": isinstance(v, (int, float)) and not isinstance(v, bool)}.get(t, True)
        if not ok:
            raise BadInputError(f"config key {prefix}{k}: expected {t}, got {v!r}")
        out[k] = float(v) if t == "float" else v
    return out


def apply_overrides(base: TrainConfig, overrides: dict[str, Any], out: str | None = None) -> TrainConfig:
    """The base config with some fields replaced (``augment.<name>`` for augmentation ones),
    checked like any config: a tuning trial's settings."""
    d = base.to_dict()
    for k, v in overrides.items():
        if k.startswith("augment."):
            d["augment"][k[len("augment."):]] = v
        else:
            d[k] = v
    if out is not None:
        d["out"] = out
    cfg = TrainConfig.from_dict(d)
    cfg.validate()
    return cfg
