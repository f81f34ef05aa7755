"""Ensembles of fervid models for scoring: the softmax of each member, averaged.

An ensemble is how the project measures what several of its own models know together
(reported apart from any single model, as issue #4 asks) and what a distilled student
should aim for; averaging probabilities rather than logits keeps a member with large
logits from outvoting the rest.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import BadInputError


def split_model_list(spec: str) -> list[str]:
    """``a.safetensors,b.onnx`` -> its paths; a single path is a one-member list."""
    return [p.strip() for p in str(spec).split(",") if p.strip()]


class Ensemble:
    """Members (torch modules or ONNX predictors) behind the ``logits()`` interface that
    :func:`fervid.evaluate.model_logits` scores; returns log of the averaged softmax."""

    def __init__(self, members: Sequence[Any], metas: Sequence[dict[str, Any]], names: Sequence[str],
                 device: str = "cpu", precision: str = "fp32"):
        classes = [list(m["classes"]) for m in metas]
        for name, c in zip(names[1:], classes[1:]):
            if c != classes[0]:
                raise BadInputError(f"ensemble member {name}: classes {','.join(c)} differ from "
                                    f"{names[0]}'s {','.join(classes[0])}")
        self.members, self.names = list(members), list(names)
        self.device, self.precision = device, precision
        self.meta = {**metas[0], "arch": "ensemble(" + "+".join(str(m.get("arch", "?")) for m in metas) + ")",
                     "members": list(names)}

    def logits(self, images: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
        from .evaluate import _log_softmax, model_logits

        probs = [np.exp(_log_softmax(model_logits(m, images, tta=tta, batch_size=batch_size, device=self.device,
                                                  precision=self.precision).astype(np.float64)))
                 for m in self.members]
        return np.log(np.clip(np.mean(probs, axis=0), 1e-12, None)).astype(np.float32)
