"""Turning a face into what the classifier eats, identically for training and recognition.

Every face is histogram-equalized: the public FER-2013 Training copy already is, while
PublicTest and users' photos are raw, so equalizing everything makes both look alike
(re-equalizing an equalized face moves it by ~2.6 grey levels). Normalisation
constants live here too, so exported models and the PyTorch path cannot disagree.
"""
from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 48
#: An equalized face is roughly uniform on 0..255: mean 0.5, std 1/sqrt(12) ~ 0.289.
MEAN = 0.5
STD = 0.289


def to_gray(image: np.ndarray) -> np.ndarray:
    """BGR, BGRA or gray uint8 image to gray uint8."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    raise ValueError(f"unsupported image shape {image.shape}")


def equalize(face: np.ndarray) -> np.ndarray:
    """Histogram-equalize one gray uint8 face."""
    return cv2.equalizeHist(np.ascontiguousarray(face, dtype=np.uint8))


def equalize_batch(faces: np.ndarray) -> np.ndarray:
    """Equalize each face of a uint8 [N, H, W] stack (a fresh array)."""
    out = np.empty_like(faces, dtype=np.uint8)
    for i in range(faces.shape[0]):
        out[i] = cv2.equalizeHist(np.ascontiguousarray(faces[i], dtype=np.uint8))
    return out


def normalize(faces: np.ndarray) -> np.ndarray:
    """Equalized uint8 [N, H, W] faces to the float32 [N, 1, H, W] input of every fervid model."""
    x = faces.astype(np.float32)[:, None] * (1.0 / 255.0)
    return (x - MEAN) / STD
