"""Any model as something to score: a PyTorch network, an exported ONNX model, or an ensemble.

:func:`load_model_any` opens any of them from a path (comma-separated paths: an ensemble);
:func:`model_logits` gives their logits (or TTA log-probabilities) for equalized faces.
An ensemble averages the softmax of its members.

An ensemble is how the project measures what several of its own models know together
(reported apart from any single model, as issue #4 asks) and what a distilled student
should aim for; averaging probabilities rather than logits keeps a member with large
logits from outvoting the rest.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BadInputError
from ..modelfile import split_model_list
from ..preprocess import normalize
from ..probabilities import mean_log_probs, tta_views
from ..recognition.recognize import open_model


class Ensemble:
    """Members (torch modules or ONNX predictors) behind the ``logits()`` interface that
    :func:`model_logits` scores; returns log of the averaged softmax."""

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
        return mean_log_probs([model_logits(m, images, tta=tta, batch_size=batch_size, device=self.device,
                                            precision=self.precision) for m in self.members],
                              floor=1e-12).astype(np.float32)


def load_model_any(path: str | os.PathLike) -> tuple[Any, dict[str, Any], Path]:
    """A model to score, its metadata and the file it came from.

    ``.safetensors`` files and run folders load through :mod:`fervid.training.checkpoint`; an
    exported ``.onnx`` model goes through the ONNX predictor when this build has one;
    comma-separated paths make an :class:`~fervid.analysis.ensemble.Ensemble` of those models.
    """
    paths = split_model_list(str(path))
    if len(paths) > 1:  # an ensemble: every member loads as a model of its own would
        loaded = [load_model_any(q) for q in paths]
        ens = Ensemble([m for m, _, _ in loaded], [meta for _, meta, _ in loaded], [str(q) for _, _, q in loaded])
        return ens, ens.meta, loaded[0][2]
    p = Path(paths[0] if paths else str(path)).expanduser()
    if p.suffix.lower() in (".onnx", ".json"):  # an export's .json sidecar names its .onnx, as in predict
        return _load_onnx(p)
    from ..models.loading import load_model_file

    return load_model_file(p)


def _load_onnx(p: Path) -> tuple[Any, dict[str, Any], Path]:
    session, meta, resolved = open_model(p)
    return OnnxPredictor(session, meta), meta, resolved


class OnnxPredictor:
    """An exported model behind the interface :func:`evaluate` scores, so ONNX Runtime
    figures can be checked against the PyTorch ones on the same faces."""

    def __init__(self, session: Any, meta: dict[str, Any]):
        self.session, self.meta = session, meta
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        self._mean, self._std = float(meta.get("mean", 0.5)), float(meta.get("std", 0.289))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: np.ascontiguousarray(x, np.float32)})[0]

    def logits(self, images: np.ndarray, tta: bool = False, batch_size: int = 256) -> np.ndarray:
        """Logits for equalized uint8 faces; with ``tta`` log of the softmax averaged over the views."""
        outs = []
        for i in range(0, len(images), batch_size):
            x = normalize(images[i:i + batch_size], self._mean, self._std)
            outs.append(mean_log_probs([self._run(v) for v in tta_views(x)]) if tta else self._run(x))
        return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, len(self.meta["classes"])), np.float32)


def model_logits(model: Any, images: np.ndarray, tta: bool = False, batch_size: int = 256,
                 device: str = "cpu", precision: str = "fp32") -> np.ndarray:
    """Logits (or TTA log-probabilities) over the model's classes for equalized uint8 faces.

    ``model`` is a torch module; anything else must offer ``logits(images, tta=...)`` (an
    ONNX predictor does), so the same scoring serves both runtimes.
    """
    try:
        from torch import nn
    except ImportError:  # recognition-only install: only non-torch predictors can exist
        nn = None
    if nn is not None and isinstance(model, nn.Module):
        from ..training.runtime import autocast_dtype, pick_device, predict_logits

        dev = pick_device(device)
        model.to(dev)
        return predict_logits(model, images, batch_size=batch_size, device=dev,
                              dtype=autocast_dtype(dev, precision), tta=tta).numpy()
    if isinstance(model, Ensemble):  # its members run on the device and precision asked for here
        model.device, model.precision = device, precision
    if hasattr(model, "logits"):
        return np.asarray(model.logits(images, tta=tta, batch_size=batch_size), dtype=np.float32)
    raise TypeError(f"cannot evaluate a {type(model).__name__}: expected a torch module or a predictor")
