"""From logits to probabilities, in numpy: softmax, log-softmax and test-time augmentation.

One implementation each, for every runtime: recognition (ONNX Runtime), scoring of exported
models and ensembles, export checks. PyTorch code keeps its own tensors but takes its TTA
views from :data:`TTA_SHIFTS`, so both runtimes average the same views.
"""
from __future__ import annotations

import numpy as np

#: Test-time views beside the face and its mirror: the face shifted 2 pixels (dy, dx) each way.
TTA_SHIFTS = ((-2, 0), (2, 0), (0, -2), (0, 2))


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis, computed stably."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tta_views(x: np.ndarray) -> list[np.ndarray]:
    """The views TTA averages over, for normalised faces ``[N, 1, S, S]``: the faces, their mirror
    images and the shifted copies of :data:`TTA_SHIFTS` (rolled, as ``torch.roll`` does)."""
    return [x, x[..., ::-1]] + [np.roll(x, shift=s, axis=(-2, -1)) for s in TTA_SHIFTS]


def mean_log_probs(logits: list[np.ndarray], floor: float = 1e-8) -> np.ndarray:
    """Log of the mean softmax of several logit arrays (views of a face, or models of an ensemble)."""
    probs = np.mean([np.exp(log_softmax(np.asarray(z, np.float64))) for z in logits], axis=0)
    return np.log(np.clip(probs, floor, None))
