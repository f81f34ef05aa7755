"""Reading untrusted uploads for ``fervid serve``: size-capped, in memory, checked before decoding.

Everything here exists so that a hostile or broken request costs a clear 4xx and little
memory, never a 500 or a file on disk:

* Bodies are read in chunks and refused (413) as soon as they pass the cap, and a
  ``Content-Length`` above the cap is refused before any byte is read.
* Multipart forms are parsed with Starlette's parser but kept in memory: its default spools
  file parts above 1 MB to a temporary file on disk, and no uploaded image may touch disk.
* Videos are the exception to "in memory": OpenCV reads them from files, so they are
  streamed to a private temporary folder chunk by chunk (:func:`save_upload`); an upload
  then costs one chunk of memory (plus Starlette's 1 MB multipart spool), not 3-4 copies.
* Uploads in progress are counted (:class:`Slots`): past the limit a request is answered
  503 with ``Retry-After`` at once instead of holding its body in memory while it waits.
* Images are recognised by their first bytes (not by the client's word), and their pixel
  count is read from the header (Pillow, lazily: ``Image.open`` does not decode) before
  OpenCV decodes them, so a 50 KB PNG that claims 30000x30000 pixels (a decompression
  bomb) is refused without allocating 2.7 GB.
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Literal

import cv2
import numpy as np

from ..images import header_size as read_header
from ..images import looks_truncated
from ..opencv_log import quiet_opencv

#: Formats OpenCV decodes in every build we support, keyed by name, with their magic bytes.
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "bmp": (b"BM",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}
#: Image formats people send that we recognise but do not decode: answered with 415, not 422.
_UNSUPPORTED_MAGIC: dict[str, tuple[bytes, ...]] = {
    "GIF": (b"GIF87a", b"GIF89a"),
    "PDF": (b"%PDF",),
    "SVG": (b"<svg", b"<?xml"),
    "ICO": (b"\x00\x00\x01\x00",),
}
#: Declared Content-Types accepted for images (the bytes are still sniffed).
IMAGE_TYPES = {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/bmp",
               "image/x-ms-bmp", "image/x-bmp", "image/tiff"}
#: Types that say nothing about the content; the bytes decide.
NEUTRAL_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP or TIFF"
#: Bytes allowed on top of the file caps for multipart framing and small form fields.
MULTIPART_OVERHEAD = 64 * 1024


class UploadError(Exception):
    """A request the client must fix; becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class Slots:
    """A non-blocking count of uploads in progress, per kind (``image``, ``video``).

    Waiting for a slot would hold the request (and the client's connection, and for images
    the body) anyway; answering 503 with ``Retry-After`` at once keeps memory bounded by
    ``limit`` uploads and tells well-behaved clients when to come back. One event loop per
    process mutates the counts, so no lock is needed.
    """

    def __init__(self, limits: dict[str, int]) -> None:
        self.limits = dict(limits)
        self.active = {k: 0 for k in limits}

    @contextlib.contextmanager
    def take(self, kind: str) -> Iterator[None]:
        if self.active[kind] >= self.limits[kind]:
            raise UploadError(503, f"server busy: {self.limits[kind]} {kind} uploads already in progress; "
                                   "retry in a moment", headers={"Retry-After": "1"})
        self.active[kind] += 1
        try:
            yield
        finally:
            self.active[kind] -= 1


@dataclass
class Upload:
    """One uploaded file, in memory."""

    filename: str
    content_type: str
    data: bytes
    path: Path | None = None  # a video streamed to disk (then ``data`` is empty)


def media_type(value: str | None) -> str:
    """``'Image/PNG; charset=x'`` -> ``'image/png'``."""
    return (value or "").split(";", 1)[0].strip().lower()


def mb(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.3g} MB"


async def capped(stream: AsyncIterator[bytes], content_length: str | None, limit: int,
                 what: str) -> AsyncIterator[bytes]:
    """The chunks of a request body, refused with 413 once they add up to more than ``limit``
    (and at once when ``Content-Length`` says so)."""
    too_big = f"{what} is larger than the {mb(limit)} limit"
    if content_length:
        try:
            declared = int(content_length)
        except ValueError:
            raise UploadError(400, "invalid Content-Length header") from None
        if declared > limit:
            raise UploadError(413, too_big)
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise UploadError(413, too_big)
        yield chunk


async def read_body(stream: AsyncIterator[bytes], content_length: str | None, limit: int,
                    what: str) -> bytes:
    """The request body, refused with 413 once it is larger than ``limit`` bytes."""
    buf = bytearray()
    async for chunk in capped(stream, content_length, limit, what):
        buf += chunk
    return bytes(buf)


async def parse_multipart(headers, body: bytes, max_files: int) -> list[tuple[str, Upload | str]]:
    """``(field name, Upload or text value)`` for every part of an in-memory multipart body."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    class _InMemoryParser(MultiPartParser):
        spool_max_size = 0  # SpooledTemporaryFile(max_size=0) never rolls over to disk

    async def once() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await _InMemoryParser(headers, once(), max_files=max_files, max_fields=100).parse()
    except MultiPartException as e:
        if "Too many files" in str(e):
            raise UploadError(413, f"too many files in one request: at most {max_files}") from None
        raise UploadError(400, f"malformed multipart form: {e}") from None
    items: list[tuple[str, Upload | str]] = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                items.append((name, value))
            else:
                items.append((name, Upload(value.filename or "", media_type(value.content_type),
                                           value.file.read())))
    finally:
        await form.close()
    return items


async def read_upload(request: Any, limit: int, kind: Literal["image", "video"]) -> Upload:
    """The one file of a request: multipart field ``file``, or the raw body with its media type."""
    ctype = media_type(request.headers.get("content-type"))
    clen = request.headers.get("content-length")
    if ctype == "multipart/form-data":
        body = await read_body(request.stream(), clen, limit + MULTIPART_OVERHEAD, "upload")
        items = await parse_multipart(request.headers, body, max_files=1)
        files = [v for k, v in items if k == "file" and isinstance(v, Upload)]
        if not files:
            raise UploadError(400, f"no file: send the {kind} in the multipart field 'file'")
        if len(files[0].data) > limit:
            raise UploadError(413, f"{kind} is larger than the {mb(limit)} limit")
        if not files[0].data:
            raise UploadError(400, "the uploaded file is empty")
        return files[0]
    accepted = ctype.startswith(f"{kind}/") or ctype in NEUTRAL_TYPES
    if ctype and not accepted:
        raise UploadError(415, f"unsupported media type {ctype!r}: send multipart/form-data with the {kind} "
                               f"in field 'file', or the {kind} itself as the body with its {kind}/* type")
    body = await read_body(request.stream(), clen, limit, kind)
    if not body:
        raise UploadError(400, f"no file: the request body is empty (send the {kind} in the multipart "
                               "field 'file', or as the raw body)")
    if not ctype:
        raise UploadError(415, f"missing Content-Type: label the body with its {kind}/* media type")
    return Upload("", ctype, body)


async def save_upload(request: Any, limit: int, kind: Literal["video"], dest: Path) -> Upload:
    """The one file of a request streamed to ``dest`` (multipart field ``file``, or the raw
    body), never whole in memory; the same refusals as :func:`read_upload`."""
    import anyio.to_thread
    from starlette.formparsers import MultiPartException, MultiPartParser

    ctype = media_type(request.headers.get("content-type"))
    clen = request.headers.get("content-length")
    if ctype == "multipart/form-data":  # Starlette spools the part to a temporary file past 1 MB
        stream = capped(request.stream(), clen, limit + MULTIPART_OVERHEAD, "upload")
        try:
            form = await MultiPartParser(request.headers, stream, max_files=1, max_fields=100).parse()
        except MultiPartException as e:
            if "Too many files" in str(e):
                raise UploadError(413, "too many files in one request: at most 1") from None
            raise UploadError(400, f"malformed multipart form: {e}") from None
        try:
            files = [v for k, v in form.multi_items() if k == "file" and not isinstance(v, str)]
            if not files:
                raise UploadError(400, f"no file: send the {kind} in the multipart field 'file'")
            part = files[0]

            def copy() -> int:
                part.file.seek(0)
                with open(dest, "wb") as fh:
                    shutil.copyfileobj(part.file, fh, 1 << 20)
                    return fh.tell()

            size = await anyio.to_thread.run_sync(copy)
            upload = Upload(part.filename or "", media_type(part.content_type), b"", dest)
        finally:
            await form.close()
    else:
        if ctype and not (ctype.startswith(f"{kind}/") or ctype in NEUTRAL_TYPES):
            raise UploadError(415, f"unsupported media type {ctype!r}: send multipart/form-data with the {kind} "
                                   f"in field 'file', or the {kind} itself as the body with its {kind}/* type")
        size = 0
        with open(dest, "wb") as fh:
            async for chunk in capped(request.stream(), clen, limit, kind):
                fh.write(chunk)
                size += len(chunk)
        if size and not ctype:
            raise UploadError(415, f"missing Content-Type: label the body with its {kind}/* media type")
        if not size:
            raise UploadError(400, f"no file: the request body is empty (send the {kind} in the multipart "
                                   "field 'file', or as the raw body)")
        upload = Upload("", ctype, b"", dest)
    if size > limit:
        raise UploadError(413, f"{kind} is larger than the {mb(limit)} limit")
    if not size:
        raise UploadError(400, "the uploaded file is empty")
    return upload


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with, if it is one we decode."""
    for name, magics in _MAGIC.items():
        if data.startswith(magics):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def _sniff_unsupported(data: bytes) -> str | None:
    head = data[:256].lstrip()
    for name, magics in _UNSUPPORTED_MAGIC.items():
        if head.startswith(magics):
            return name
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF"
    return None


def check_image_type(declared: str, data: bytes) -> str:
    """The sniffed format of an upload, or the 400/415/422 that says why it is not usable."""
    if not data:
        raise UploadError(400, "the uploaded file is empty")
    if declared not in IMAGE_TYPES and declared not in NEUTRAL_TYPES:
        raise UploadError(415, f"unsupported media type {declared!r}: send a {SUPPORTED_TEXT} image")
    fmt = sniff(data)
    if fmt is None:
        other = _sniff_unsupported(data)
        if other:
            raise UploadError(415, f"{other} files are not supported: send a {SUPPORTED_TEXT} image")
        raise UploadError(422, f"not a valid image: the data is corrupt or not {SUPPORTED_TEXT}")
    return fmt


def header_size(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) from the image header without decoding pixels; None without Pillow.

    The same header reader as ``fervid predict``; its refusals become HTTP errors here.
    """
    try:
        return read_header(data, strict=True)
    except OverflowError as e:  # Pillow's own, far higher, limit
        raise UploadError(413, f"image has over {e.args[0] / 1e6:.0f} megapixels "
                               f"(a decompression bomb?); the limit is {max_pixels / 1e6:.1f} megapixels") from None
    except ValueError:
        raise UploadError(422, "corrupt image: its header cannot be read") from None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise UploadError(413, f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels; "
                               f"the limit is {max_pixels / 1e6:.1f} megapixels")


def decode_image(data: bytes, declared: str, max_pixels: int) -> np.ndarray:
    """Checked upload bytes -> BGR uint8 array (EXIF orientation applied, as browsers do).

    Without Pillow the pixel limit is checked after decoding (OpenCV's own limit of 2^30
    pixels still guards against the worst); with it, before.
    """
    check_image_type(declared, data)
    size = header_size(data, max_pixels)
    if size is not None:
        _check_pixels(*size, max_pixels)

    if looks_truncated(data):
        raise UploadError(422, "corrupt image: the file is truncated")

    try:
        with quiet_opencv():  # the client gets the error; the server log gets no OpenCV noise
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise UploadError(422, "corrupt image: it cannot be decoded")
    _check_pixels(image.shape[1], image.shape[0], max_pixels)
    return image
