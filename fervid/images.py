"""Reading images safely: the header checked before any decoding, then OpenCV decodes.

Used wherever fervid opens a picture: ``fervid predict`` and the Python API (files, arrays,
PIL images), the FER-2013 folder reader (truncated PNGs), and the service's uploads. Torch-free.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import BadInputError
from .files import read_input
from .opencv_log import quiet_opencv

# --- images ---------------------------------------------------------------------------------

def looks_truncated(data: bytes) -> bool:
    """True for a JPEG whose last scan has no end marker, or a PNG without its IEND chunk.

    Some OpenCV builds decode such files into a half-grey image with only a warning; a
    prediction on half an image is worse than an error.
    """
    if data[:2] == b"\xff\xd8":
        sos = data.rfind(b"\xff\xda")
        return sos < 0 or data.rfind(b"\xff\xd9") < sos
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-64:]
    return False


#: Largest image :func:`read_image` decodes, in pixels (a 10,000 x 10,000 photo is 100 million).
#: Checked from the header before decoding, so a small file whose header claims gigapixels (a
#: decompression bomb) costs nothing; OpenCV's own limit (2^30) would still cost 3 GB first.
MAX_PIXELS = 150_000_000


def header_size(data: bytes, strict: bool = False) -> tuple[int, int] | None:
    """(width, height) from an image's header, without decoding pixels.

    None when Pillow is missing or cannot parse the format (OpenCV then decides alone), or,
    with ``strict``, ``ValueError`` for a header Pillow cannot read (the service refuses
    those). Raises ``OverflowError(limit)`` for a header beyond Pillow's own hard limit,
    whose size Pillow does not report.
    """
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it OpenCV's limit applies
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: MAX_PIXELS is the limit here
        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.size
        except Image.DecompressionBombError:
            raise OverflowError(2 * (Image.MAX_IMAGE_PIXELS or 0)) from None
        except Exception:  # a format (or a header) Pillow cannot read: let OpenCV try
            if strict:
                raise ValueError("image header cannot be read") from None
            return None


#: Largest image file :func:`read_image` reads, in bytes (``--max-image-mb``). An uncompressed 8-bit
#: RGB image of MAX_PIXELS is 450 MB; photos are a few MB. Checked with ``stat`` before reading.
MAX_IMAGE_BYTES = 256_000_000

#: First bytes of every format OpenCV decodes (JPEG, PNG, BMP, TIFF, WebP, GIF, PNM, PFM, JPEG 2000,
#: OpenEXR, Radiance HDR, Sun raster, AVIF/HEIF): anything else is refused from its first bytes.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a",
                b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xffO\xffQ", b"v/1\x01", b"#?RADIANCE", b"#?RGBE",
                b"\x59\xa6\x6a\x95", b"PF\n", b"Pf\n", b"PF\r", b"Pf\r")


def image_head_problem(head: bytes) -> str | None:
    """Why the first bytes of a file cannot start an image OpenCV decodes, or None.

    Decided from the header alone, so a large file that is no image (a 2 GB file of zeros
    named ``.jpg``) is refused after reading 64 KB of it.
    """
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    if head[4:8] == b"ftyp":
        return None
    if len(head) > 2 and head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return None
    return "not an image OpenCV can decode (no image header: unsupported format, or not an image)"


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_BYTES,
               flag: str = "") -> np.ndarray:
    """Read an image file as BGR uint8, or raise BadInputError naming the file and the problem.

    EXIF orientation is applied (as viewers do), 16-bit images are scaled to 8 bits, palette,
    gray and alpha images become BGR; for animated images, the first frame. Only regular
    files are opened, and the size and header are checked before the rest is read
    (``max_bytes``; ``flag`` names the option that raises it in the message).
    """

    p = Path(path)
    return decode_image(read_input(p, max_bytes, "an image", flag, check_head=image_head_problem), p, max_pixels)


def decode_image(data: bytes, name: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The checks and decoding of :func:`read_image` for bytes already read (from object storage,
    a Ray dataset's ``bytes`` column); ``name`` is what error messages call the image."""
    p = name
    problem = image_head_problem(data[:64]) if data else None
    if problem:
        raise BadInputError(f"{p}: {problem}")
    if not data:
        raise BadInputError(f"{p}: empty file (0 bytes)")
    if looks_truncated(data):
        raise BadInputError(f"{p}: truncated image file")
    try:
        size = header_size(data)
    except OverflowError as e:
        raise BadInputError(f"{p}: image has over {e.args[0] / 1e6:.0f} megapixels (a decompression bomb?); "
                            f"fervid reads up to {max_pixels / 1e6:g} megapixels") from None
    if size is not None and size[0] * size[1] > max_pixels:
        raise BadInputError(f"{p}: image is {size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f} megapixels; "
                            f"fervid reads up to {max_pixels / 1e6:g} megapixels")
    try:
        with quiet_opencv():  # our one line replaces OpenCV's "[ERROR] can't read header"
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV's own size limit, or a decoder that throws instead of failing
        raise BadInputError(f"{p}: OpenCV cannot decode this image (too large, corrupt or unsupported)") from None
    if image is None or image.size == 0:
        raise BadInputError(f"{p}: not an image OpenCV can decode (corrupt or unsupported format)")
    return image


def as_bgr(image: Any, color: str = "bgr") -> np.ndarray:
    """Any supported image (path, numpy BGR/BGRA/RGB/gray, PIL.Image) as uint8 BGR or gray HxW."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if type(image).__module__.startswith("PIL."):
        mode = image.mode
        arr = np.asarray(image.convert("L" if mode in ("L", "I", "I;16", "F", "1") else "RGB"))
        return arr if arr.ndim == 2 else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"unsupported image type {type(image).__name__} "
                            "(give a path, a numpy array or a PIL.Image)")
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or min(arr.shape[:2]) < 1:
        raise BadInputError(f"unsupported image shape {arr.shape} (expected HxW, HxWx3 or HxWx4)")
    if arr.dtype != np.uint8:
        if arr.dtype == np.uint16:
            arr = (arr >> 8).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool:
            # float64 and NaN/inf mapped first: a float32 cast of large values overflows (with a warning)
            arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
            arr = np.clip(arr * 255.0 if arr.size and float(arr.max()) <= 1.0 else arr, 0, 255).astype(np.uint8)
        else:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    if color.lower() not in ("bgr", "rgb"):
        raise ValueError(f"color must be 'bgr' or 'rgb', not {color!r}")
    if arr.ndim == 3 and color.lower() == "rgb":
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if arr.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    return np.ascontiguousarray(arr)
