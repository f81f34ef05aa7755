"""Fuzzing the readers of untrusted files: images (files and uploads) and fer2013.csv.

Each reader must return a usable result or raise its one-line error type, whatever the
bytes; anything else (a cv2.error, a ValueError, a crash in the detector on a strange
shape) is a bug. Inputs are valid files mutated (truncated, bytes flipped or inserted,
header fields rewritten) plus raw noise, so most examples get past the magic bytes and
reach the decoders. Bounded by ``max_examples`` (about 20-30 s in all on one core).
"""
from __future__ import annotations

import csv
import io
import struct
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fervid.errors import BadInputError  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _seeds() -> list[bytes]:
    """Small valid files of every format the readers sniff, to mutate."""
    rng = np.random.default_rng(0)
    photo = cv2.resize(cv2.imread(str(ROOT / "fervid" / "assets" / "sample.jpg")), (64, 48))
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    out = [cv2.imencode(ext, img)[1].tobytes() for ext, img in
           ((".jpg", photo), (".png", photo), (".png", gray), (".bmp", photo), (".tiff", photo),
            (".webp", photo), (".png", (photo.astype(np.uint16) * 257)), (".jpg", gray),
            (".png", rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)))]
    try:
        from PIL import Image

        buf = io.BytesIO()
        im = Image.fromarray(photo[:, :, ::-1].copy())
        im.save(buf, format="GIF", save_all=True, append_images=[im.rotate(20)])
        out.append(buf.getvalue())
        buf = io.BytesIO()
        im.convert("CMYK").save(buf, format="JPEG")
        out.append(buf.getvalue())
    except ImportError:
        pass
    return out


SEEDS = _seeds()


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "zero", "size"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=64))
        elif op == "zero":
            data[i:i + draw(st.integers(1, 256))] = bytes(min(256, len(data) - i))
        elif op == "size" and data[:4] == b"\x89PNG":  # rewrite IHDR width/height, fix the CRC
            w, h = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
            data[16:24] = struct.pack(">II", w, h)
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


image_bytes = st.one_of(mutated(), st.binary(max_size=2048))


@pytest.fixture(scope="module")
def recognizer():
    from fervid.recognition.recognize import Recognizer

    return Recognizer(ROOT / "fervid" / "assets" / "model.onnx", threads=1)


@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory(prefix="fervid-fuzz-") as d:
        yield Path(d)


@settings(FUZZ, max_examples=300)
@given(data=image_bytes)
def test_image_files_decode_or_refuse_in_one_line(data, recognizer, scratch):
    """read_image + the detector and classifier on whatever decodes: only BadInputError may escape."""
    from fervid.images import read_image

    path = scratch / "fuzz.img"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except BadInputError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
    for face in recognizer.predict(image):
        x, y, w, h = face.box
        assert 0 <= x and 0 <= y and w >= 1 and h >= 1 and x + w <= image.shape[1] and y + h <= image.shape[0]
        assert abs(sum(face.probabilities.values()) - 1.0) < 1e-4


@settings(FUZZ, max_examples=300)
@given(data=image_bytes, declared=st.sampled_from(["", "image/png", "image/jpeg", "application/octet-stream",
                                                   "text/plain"]))
def test_uploads_decode_or_answer_4xx(data, declared):
    from fervid.serve.uploads import UploadError, decode_image

    try:
        image = decode_image(data, declared, max_pixels=4_000_000)
    except UploadError as e:
        assert 400 <= e.status < 500 and e.message and "\n" not in e.message
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[0] * image.shape[1] <= 4_000_000


# --- fer2013.csv ---------------------------------------------------------------------------------

_PIXELS = " ".join(["128"] * 48 * 48)
_cell = st.one_of(
    st.just(_PIXELS),
    st.integers(-3, 300).map(str),
    st.sampled_from(["Training", "PublicTest", "PrivateTest", "Validation", "", " ", "nan", "1e3", "0x10"]),
    st.lists(st.integers(-1, 256), min_size=0, max_size=2400).map(lambda v: " ".join(map(str, v))),
    st.text(max_size=40),
)
_header = st.one_of(
    st.just(["emotion", "pixels", "Usage"]),
    st.permutations(["emotion", "pixels", "Usage"]).map(list),
    st.lists(st.sampled_from(["emotion", "pixels", "Usage", "EMOTION", " pixels ", "x", ""]), max_size=5),
)


@st.composite
def fer_csv(draw) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # now and then, no structure at all
        return draw(st.binary(max_size=3000))
    header = draw(_header)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.booleans()):  # a valid row, so later rows are reached
            w.writerow([{"emotion": str(draw(st.integers(0, 6))), "pixels": _PIXELS}.get(h.strip().lower(), "Training")
                        for h in header])
        else:
            w.writerow(draw(st.lists(_cell, max_size=5)))
    text = buf.getvalue()
    if draw(st.booleans()):
        text = "\ufeff" + text  # Excel's BOM
    return text.encode(draw(st.sampled_from(["utf-8", "utf-16", "latin-1"])), errors="replace")


@settings(FUZZ, max_examples=250)
@given(data=fer_csv())
def test_fer_csv_reads_or_refuses_in_one_line(data, scratch):
    from fervid.data import read_source

    path = scratch / "fer2013.csv"
    path.write_bytes(data)
    try:
        raw = read_source(path, use_cache=False)
    except BadInputError as e:
        assert str(path) in str(e) and "\n" not in str(e), str(e)
        return
    n = len(raw.labels)
    assert n > 0 and raw.images.shape == (n, 48, 48) and raw.images.dtype == np.uint8
    assert raw.labels.min() >= 0 and raw.labels.max() <= 6 and len(raw.usage) == n


# --- arrays given to the Python API -----------------------------------------------------------------

@st.composite
def any_array(draw) -> np.ndarray:
    from hypothesis.extra import numpy as hnp

    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64, np.bool_]))
    h, w = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    shape = draw(st.sampled_from([(h, w), (h, w, 1), (h, w, 3), (h, w, 4), (h, w, 2), (h,), (h, w, 3, 1)]))
    return draw(hnp.arrays(dtype, shape, elements=None if dtype is not np.float64 else
                           st.floats(allow_nan=True, allow_infinity=True, width=64)))


@settings(FUZZ, max_examples=200)
@given(array=any_array(), color=st.sampled_from(["bgr", "rgb"]))
def test_arrays_predict_or_refuse_in_one_line(array, color, recognizer):
    """Recognizer.predict on numpy arrays of any dtype and shape: faces, or one BadInputError line."""
    try:
        faces = recognizer.predict(array, color=color)
    except BadInputError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(faces, list)
