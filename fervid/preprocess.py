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


def normalize(faces: np.ndarray, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """Equalized uint8 [N, H, W] faces to the float32 [N, 1, H, W] input of every fervid model
    (``mean``, ``std``: a model's own, from its metadata). The one definition of the input:
    training's tensor version (:func:`fervid.training.runtime.to_input`) computes the same."""
    x = np.asarray(faces).astype(np.float32)[:, None] * np.float32(1.0 / 255.0)
    return (x - np.float32(mean)) / np.float32(std)


# --- Alignment: from a detected face in a photo to a FER-2013-like 48x48 crop ------------------
#
# FER-2013 faces are framed by their own (unknown) face detector: roughly brows to chin,
# the face filling the square. A crop is placed from YuNet's output: rotated so the eyes are
# level, centred horizontally on the eye midpoint with the eyes ALIGN_EYE_Y of the way down,
# its side ALIGN_SCALE times the height of YuNet's face box (unclipped). Without a box, the
# side is ALIGN_SCALE_LM times the mean of the eye distance and the eye-to-mouth distance.
#
# How the numbers were chosen. 600 FER PublicTest faces were upscaled to 120-200 px and
# pasted into 480x720 frames; YuNet found 589. Where each FER square landed relative to
# YuNet's output: FER side / box height median 0.988 (IQR 0.913-1.086, coefficient of
# variation 0.174, the steadiest reference tried; landmark lengths: median 2.69, CV 0.20);
# eye midpoint 0.498 across, 0.387 down (IQR 0.347-0.415); FER's own eye lines tilt by a
# median 2.2 degrees. Comparing the aligned 48x48 crop with the equalized original (mean
# absolute difference / correlation): 51.6 / 0.52 at these constants (51.1 / 0.53 at the
# best, scale 0.95), against 3.1 / 0.998 for a crop of exactly the pasted square, 21 / 0.89
# for that square moved by 1 px, 46 / 0.62 moved by 3 px, and 80 / 0.09 for an unrelated
# face: what remains is FER's own framing jitter, which landmarks cannot predict. With a
# vgg_s (PublicTest 57.6%), those pasted faces scored 54.3% aligned against 55.2% as the
# original 48x48 crops (scale 0.95: 54.9%; 0.9: 56.4%; 1.1: 51.7%). On the real-photo set
# (bench/realfaces.py, 1,794 seven-class photos) accuracy was 57.2% at scale 1.0 against
# 56.5% at 0.95, 55.9% at 0.9 and 56.9% at 1.1, with eye_y 0.35-0.39 alike (+-0.2) and 0.31
# or 0.43 lower; levelling the eyes changes it by 0.1 point there (those photos are upright)
# and is kept for tilted heads in video. Scale 1.0, eye_y 0.39 favour the real photos.
# Re-checked with the finished vgg_s (PublicTest 62.7%): 57.8% on the real photos at these
# constants, 56.6-58.9% over scale 0.9-1.1 x eye_y 0.35-0.39 (no clear optimum beyond
# +-1 point, i.e. noise), 58.2% without levelling.
ALIGN_SCALE = 1.0
ALIGN_SCALE_LM = 2.8  # realfaces: 2.5 -> 54.9%, 2.7 -> 56.9%, 2.9 -> 57.3%
ALIGN_EYE_Y = 0.39


def align_matrix(landmarks, face_size: float | None = None, size: int = FACE_SIZE,
                 scale: float | None = None, eye_y: float | None = None,
                 rotate: bool = True) -> tuple[np.ndarray, float]:
    """Affine map from image coordinates to a ``size`` x ``size`` aligned crop, and the crop's
    side length in image pixels. ``landmarks``: YuNet's 5 points (right eye, left eye, nose,
    right and left mouth corner; "right" is the person's right, i.e. image left);
    ``face_size``: the detector's face box height, unclipped (None: from the landmarks)."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    eye_y = ALIGN_EYE_Y if eye_y is None else eye_y
    eyes = (pts[0] + pts[1]) / 2
    if face_size:
        side = (ALIGN_SCALE if scale is None else scale) * float(face_size)
    else:
        mouth = (pts[3] + pts[4]) / 2
        ref = (np.linalg.norm(pts[1] - pts[0]) + np.linalg.norm(mouth - eyes)) / 2
        side = (ALIGN_SCALE_LM if scale is None else scale) * float(ref)
    side = max(side, 2.0)
    angle = float(np.degrees(np.arctan2(pts[1, 1] - pts[0, 1], pts[1, 0] - pts[0, 0]))) if rotate else 0.0
    m = cv2.getRotationMatrix2D((float(eyes[0]), float(eyes[1])), angle, size / side)
    m[0, 2] += size / 2 - eyes[0]
    m[1, 2] += eye_y * size - eyes[1]
    return m, side


def align_face(gray: np.ndarray, landmarks, face_size: float | None = None, size: int = FACE_SIZE,
               scale: float | None = None, eye_y: float | None = None, rotate: bool = True) -> np.ndarray:
    """Eye-levelled, FER-framed, equalized ``size`` x ``size`` crop of a face in a gray image.

    The crop is warped at up to 4x the output size and then shrunk with area averaging, so a
    large face is not aliased; parts outside the image repeat the border.
    """
    m, side = align_matrix(landmarks, face_size, size, scale, eye_y, rotate)
    work = int(min(4 * size, max(size, round(side))))
    crop = cv2.warpAffine(gray, m * (work / size), (work, work), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return equalize(crop)


def crop_face(gray: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """An already cropped face (FER-style, the whole image) to an equalized ``size`` crop."""
    if gray.shape != (size, size):
        gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
    return equalize(gray)


def crop_detections(gray: np.ndarray, detections, size: int = FACE_SIZE) -> np.ndarray:
    """The equalized ``size`` crops of detected faces, uint8 [N, S, S]: eye-levelled alignment
    where the detector gave landmarks, a plain box crop where it did not. One place, so
    recognition and the model-insight views see the very same pixels."""
    out = np.empty((len(detections), size, size), np.uint8)
    for i, d in enumerate(detections):
        if d.landmarks:
            out[i] = align_face(gray, d.landmarks, d.face_size or None, size=size)
        else:
            x, y, w, h = d.box
            out[i] = crop_face(gray[y:y + h, x:x + w], size=size)
    return out
