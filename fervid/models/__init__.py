"""Model registry, in the way of timm: ``create_model(name, num_classes)``.

Every family lives in its own module and registers its variants with
:func:`register_model`; importing this package imports them all so the registry is full.
All models take normalised gray faces ``[N, 1, 48, 48]`` and return logits ``[N, C]``.
"""
from __future__ import annotations

from . import baseline, fastnet, resnet, vgg  # noqa: F401  (each fills the registry)
from .fastnet import init_whitening, train_whitening
from .registry import count_flops, count_params, create_model, describe_model, list_models, register_model

__all__ = ["init_whitening", "train_whitening", "register_model", "create_model", "list_models", "describe_model", "count_params", "count_flops"]
