"""``fervid serve``: an HTTP API and a browser page over the same recognition pipeline as the CLI.

The service adds transport, not recognition: every prediction is ``Recognizer.predict``,
every annotated image is ``fervid.recognition.draw``, every video is ``fervid.recognition.video.iter_video``, so an
answer over HTTP equals ``fervid predict`` on the same file. What lives here is what a
network service needs on top:

* The model is loaded once per process (in the lifespan), and inference runs in worker
  threads behind a ``CapacityLimiter`` sized to the cores, so the event loop stays free and
  concurrent requests overlap instead of queueing behind each other. ONNX Runtime and
  OpenCV release the GIL while they compute, so threads do scale.
* Several processes (``--workers``) are started by uvicorn from the import string
  ``fervid.serve.app:app_from_env``; the settings travel in ``FERVID_SERVE_CONFIG`` (JSON).
* Every failure is ``{"error": "..."}`` with a 4xx status the client can act on; anything
  unexpected is logged here and answered with a bare 500, never a traceback.
* Uploaded images stay in memory (see :mod:`fervid.serve.uploads`). Videos are the one
  exception: OpenCV reads them from a file, so the upload is streamed into a private
  temporary folder (mode 0700) and deleted in ``finally`` as soon as it has been read.
* Uploads in progress are bounded (``max_uploads``, ``max_video_uploads``): past them the
  answer is 503 with ``Retry-After``, so memory stays flat however many clients come.
* A client that disconnects mid-upload is one log line, not an unhandled exception.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import queue
import shutil
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Literal

import anyio
import anyio.to_thread
import cv2
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from .. import __version__
from ..calibrate import PRIOR_NAMES
from ..errors import BadInputError, FervidError
from ..recognition.draw import color_for, draw_faces
from ..recognition.frames import open_video
from ..recognition.recognize import served_accuracy
from ..recognition.video import csv_header, csv_row, iter_video
from .config import ENV_CONFIG, ServeConfig, load_recognizer
from .errors import ERRORS, install_error_handlers
from .schemas import BatchResponse, ModelResponse, PredictResponse, VideoResponse, image_body, video_body
from .uploads import (
    MULTIPART_OVERHEAD,
    Slots,
    Upload,
    UploadError,
    decode_image,
    mb,
    media_type,
    parse_multipart,
    read_body,
    read_upload,
    save_upload,
)

log = logging.getLogger("fervid.serve")
STATIC = Path(__file__).resolve().parent.parent / "static"
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"}
#: Frame cap for videos whose frame rate is unknown (treated as this many frames per second).
FALLBACK_FPS = 30.0
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: "
                               "mediastream:; connect-src 'self'; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _bytes(megabytes: float) -> int:
    return int(megabytes * 1_000_000)


def _rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded (nested), so answers carry measurement precision, not float noise."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    return value


def _face_json(face: Any) -> dict[str, Any]:
    """A ``fervid.recognition.recognize.Face`` as its ``to_dict()`` gives it (as the CLI does), rounded for the wire."""
    return _rounded(face.to_dict())


def _colors(classes: list[str]) -> dict[str, str]:
    """``fervid.recognition.draw``'s colour of each class as CSS hex, so the page matches annotated images."""
    return {c: "#{2:02x}{1:02x}{0:02x}".format(*color_for(c)) for c in classes}


def _prior_label(prior: str) -> str:
    """The prior as clients may see it: its name, or only the file name of a prior file (not the server's path)."""
    return prior if prior.lower() in PRIOR_NAMES else f"file:{Path(prior).name}"


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 2)


class Service:
    """The loaded model, its limits, and the threads it runs in (one per process).

    ``Recognizer.predict`` is not thread-safe (OpenCV's face detector keeps per-call
    state), so the process holds a small pool of recognizers, one per inference thread,
    all loaded at startup; a call borrows one for its duration. The limiter guarantees a
    free one is always there. ``recognizer`` (optional) is an already loaded first member.
    """

    def __init__(self, config: ServeConfig, recognizer: Any = None) -> None:
        self.config = config
        self.size = config.concurrency or os.cpu_count() or 1
        self.limiter = anyio.CapacityLimiter(self.size)
        self.recognizer = recognizer  # the first of the pool: its meta and classes describe the model
        self._pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.slots = Slots({"image": config.max_uploads, "video": config.max_video_uploads})
        self._loaded = 0

    def _new_recognizer(self) -> Any:
        return load_recognizer(self.config)

    def load(self) -> None:
        """Fill the pool (idempotent); the first load raises ModelFileError for a bad model."""
        if self.recognizer is None:
            self.recognizer = self._new_recognizer()
        if self._loaded == 0:
            self._pool.put(self.recognizer)
            self._loaded = 1
        while self._loaded < self.size:
            self._pool.put(self._new_recognizer())
            self._loaded += 1
        log.info("model loaded: %s (%s, %d classes), %d inference thread(s)", self.config.model or "default",
                 self.recognizer.meta.get("arch"), len(self.recognizer.classes), self.size)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(recognizer, *args)`` in a worker thread with a recognizer of its own."""
        def call() -> Any:
            recognizer = self._pool.get_nowait()  # never empty: the limiter admits at most `size`
            try:
                return fn(recognizer, *args)
            finally:
                self._pool.put(recognizer)

        return await anyio.to_thread.run_sync(call, limiter=self.limiter)

    # -- images ---------------------------------------------------------------------------
    def predict_image(self, recognizer: Any, upload: Upload, annotate: bool = False, fmt: str = "png") -> dict[str, Any]:
        """Decode, recognise and (optionally) draw one upload; runs in a worker thread."""
        t0 = time.perf_counter()
        image = decode_image(upload.data, upload.content_type, self.config.max_pixels)
        t1 = time.perf_counter()
        faces = recognizer.predict(image)
        t2 = time.perf_counter()
        out: dict[str, Any] = {"width": int(image.shape[1]), "height": int(image.shape[0]),
                               "faces": faces, "decode": t1 - t0, "inference": t2 - t1}
        if annotate:
            drawn = draw_faces(image, faces)
            ext, params = (".png", []) if fmt == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])
            ok, buf = cv2.imencode(ext, drawn if drawn is not None else image, params)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode the annotated image as {fmt}")
            out["encoded"] = buf.tobytes()
        return out

    # -- videos ---------------------------------------------------------------------------
    def process_video(self, recognizer: Any, upload: Upload, every: int, smoothing: float) -> dict[str, Any]:
        """The per-frame table of an uploaded video; runs in a worker thread.

        The upload is written to a private temporary folder because OpenCV only reads
        videos from files; the folder is removed in ``finally``, whatever happens.
        """
        name = Path(upload.filename).name or "upload"
        suffix = Path(name).suffix.lower()
        cfg = self.config
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix="fervid-serve-")  # 0700: private to this user
        path = Path(tmp) / ("upload" + (suffix if suffix in VIDEO_SUFFIXES else ""))
        try:
            if upload.path is not None:  # streamed to disk by the endpoint: moved, not copied
                os.replace(upload.path, path)
            else:
                path.write_bytes(upload.data)
            try:
                reader = open_video(path)
            except BadInputError as e:
                raise UploadError(422, str(e).replace(str(path), name)) from None
            with reader:
                info = reader.info
                if info.width * info.height > cfg.max_pixels:
                    raise UploadError(413, f"{name}: frames are {info.width}x{info.height}, more than the "
                                           f"{cfg.max_pixels / 1e6:.1f} megapixel limit")
                fps = info.fps or FALLBACK_FPS
                max_frames = int(cfg.max_video_seconds * fps) + 1
                if info.fps and info.frame_count > max_frames:
                    raise UploadError(422, f"{name}: video is {info.frame_count / info.fps:.1f} s long; "
                                           f"the limit is {cfg.max_video_seconds:g} s")
                classes = list(recognizer.classes)
                rows: list[list[Any]] = [csv_header(classes)]
                frames: list[dict[str, Any]] = []
                timings: dict[str, float] = {}
                for result in iter_video(recognizer, reader, every, smoothing, keep_image=False,
                                         live=False, timings=timings):
                    if result.index >= max_frames:
                        raise UploadError(422, f"{name}: video is longer than the "
                                               f"{cfg.max_video_seconds:g} s limit")
                    if result.analysed:
                        frames.append(_rounded(result.to_dict()))
                        rows += [csv_row(result, tf, classes) for tf in result.faces]
                count = reader.frames_read
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.rmdir(tmp)
        return {"filename": name, "frames": count, "analysed": len(frames), "fps": info.fps,
                "duration": round(count / info.fps, 3) if info.fps else None,
                "width": info.width, "height": info.height, "classes": classes, "results": frames,
                "rows": rows,
                "timing": {"decode_ms": _ms(timings.get("decode", 0.0)),
                           "inference_ms": _ms(timings.get("recognize", 0.0) + timings.get("track", 0.0)),
                           "total_ms": _ms(time.perf_counter() - t0)}}


def create_app(model: str | os.PathLike | None = None, *, recognizer: Any = None,
               **settings: Any) -> FastAPI:
    """The FastAPI app. ``settings`` are :class:`ServeConfig` fields (``max_upload_mb``, ...).

    ``recognizer`` injects an already loaded ``Recognizer`` (the CLI loads it first so a bad
    model fails before the port opens); otherwise the model loads once in the lifespan.
    """
    config = ServeConfig(model=str(model) if model is not None else None, **settings)
    service = Service(config, recognizer)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await anyio.to_thread.run_sync(service.load)
        yield

    app = FastAPI(title="fervid", version=__version__, lifespan=lifespan,
                  description="Facial expression recognition (FER-2013 classes) on images and short "
                              "videos. Errors are `{\"error\": \"...\"}` with a 4xx status.")
    app.state.service = service
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    @app.get("/healthz", tags=["service"], summary="Liveness: the model is loaded")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", tags=["service"], response_model=ModelResponse, summary="The loaded model")
    async def model_info() -> dict[str, Any]:
        meta = dict(service.recognizer.meta or {})

        metrics = meta.get("metrics") or {}
        accuracy = served_accuracy(meta)
        return {"arch": meta.get("arch"), "classes": list(service.recognizer.classes),
                "input_size": meta.get("input_size"), "accuracy": accuracy, "prior": _prior_label(service.recognizer.prior), "metrics": metrics,
                "params": meta.get("params"), "mflops": meta.get("mflops"), "fervid_version": __version__,
                "colors": _colors(service.recognizer.classes),
                "limits": {k: v for k, v in asdict(config).items() if k.startswith("max_")}}

    @app.post("/v1/predict", tags=["recognition"], response_model=PredictResponse,
              summary="Recognise the expressions of every face in one image",
              responses={**ERRORS, 200: {"content": {"image/png": {}, "image/jpeg": {}},
                                         "description": "JSON, or the annotated image with `annotate=true`"}},
              openapi_extra=image_body("file"))
    async def predict(request: Request,
                      annotate: bool = Query(False, description="return the annotated image instead of JSON"),
                      fmt: Literal["png", "jpeg"] = Query("png", alias="format",
                                                          description="image format with annotate=true")
                      ) -> Response:
        t0 = time.perf_counter()
        with service.slots.take("image"):
            upload = await read_upload(request, _bytes(config.max_upload_mb), "image")
            res = await service.run(service.predict_image, upload, annotate, fmt)
        total = time.perf_counter() - t0
        if annotate:
            timing = f"decode;dur={_ms(res['decode'])}, inference;dur={_ms(res['inference'])}, total;dur={_ms(total)}"
            return Response(res["encoded"], media_type=f"image/{fmt}",
                            headers={"Server-Timing": timing, "X-Faces": str(len(res["faces"]))})
        return JSONResponse(_image_result(res, total))

    @app.post("/v1/predict/batch", tags=["recognition"], response_model=BatchResponse,
              summary="Recognise several images; each gets its own result or error",
              responses=ERRORS, openapi_extra=image_body("files", many=True))
    async def predict_batch(request: Request) -> JSONResponse:
        with service.slots.take("image"):
            return await _batch(request)

    async def _batch(request: Request) -> JSONResponse:
        ctype = media_type(request.headers.get("content-type"))
        if ctype != "multipart/form-data":
            raise UploadError(415, "send multipart/form-data with the images in the field 'files'")
        body = await read_body(request.stream(), request.headers.get("content-length"),
                               _bytes(config.max_batch_mb) + MULTIPART_OVERHEAD, "batch")
        items = await parse_multipart(request.headers, body, max_files=config.max_batch_files)
        uploads = [v for k, v in items if k in ("files", "file") and isinstance(v, Upload)]
        if not uploads:
            raise UploadError(400, "no files: send the images in the multipart field 'files'")
        results: list[dict[str, Any]] = [{} for _ in uploads]

        async def one(i: int, up: Upload) -> None:
            t0 = time.perf_counter()
            try:
                if len(up.data) > _bytes(config.max_upload_mb):
                    raise UploadError(413, f"image is larger than the {mb(_bytes(config.max_upload_mb))} limit")
                res = await service.run(service.predict_image, up)
                results[i] = {"filename": up.filename, "status": 200,
                              **_image_result(res, time.perf_counter() - t0)}
            except UploadError as e:
                results[i] = {"filename": up.filename, "status": e.status, "error": e.message}
            except FervidError as e:
                results[i] = {"filename": up.filename, "status": 422, "error": str(e)}
            except Exception:
                log.exception("batch item %d (%s) failed", i, up.filename)
                results[i] = {"filename": up.filename, "status": 500, "error": "internal server error"}

        async with anyio.create_task_group() as tg:
            for i, up in enumerate(uploads):
                tg.start_soon(one, i, up)
        failed = sum(1 for r in results if r["status"] != 200)
        return JSONResponse({"count": len(results), "failed": failed, "results": results})

    @app.post("/v1/video", tags=["recognition"], response_model=VideoResponse,
              summary="Per-frame expressions of a short video (JSON, or CSV with format=csv)",
              responses={**ERRORS, 200: {"content": {"text/csv": {}},
                                         "description": "JSON, or with format=csv the same table as "
                                                        "`fervid video --csv`"}},
              openapi_extra=video_body())
    async def video(request: Request,
                    every: int = Query(1, ge=1, le=1000, description="analyse every N-th frame"),
                    smoothing: float = Query(0.5, ge=0.0, lt=1.0, description="temporal smoothing, 0 = off"),
                    fmt: Literal["json", "csv"] = Query("json", alias="format")) -> Response:
        with service.slots.take("video"):
            folder = Path(tempfile.mkdtemp(prefix="fervid-serve-"))  # 0700: private to this user
            try:
                upload = await save_upload(request, _bytes(config.max_video_mb), "video", folder / "body")
                res = await service.run(service.process_video, upload, every, smoothing)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        rows = res.pop("rows")
        if fmt == "csv":
            buf = io.StringIO()
            csv.writer(buf).writerows(rows)
            stem = "".join(c for c in Path(res["filename"]).stem if c.isalnum() or c in "-_") or "video"
            return Response(buf.getvalue(), media_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{stem}.csv"'})
        return JSONResponse(res)

    return app


def _image_result(res: dict[str, Any], total: float) -> dict[str, Any]:
    return {"width": res["width"], "height": res["height"], "faces": [_face_json(f) for f in res["faces"]],
            "timing": {"decode_ms": _ms(res["decode"]), "inference_ms": _ms(res["inference"]),
                       "total_ms": _ms(total)}}


def app_from_env() -> FastAPI:
    """App factory for ``uvicorn --factory fervid.serve.app:app_from_env`` (one per worker process)."""
    raw = os.environ.get(ENV_CONFIG, "{}")
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as e:
        raise FervidError(f"{ENV_CONFIG}: not valid JSON ({e})") from None
    known = {f.name for f in fields(ServeConfig)}
    unknown = set(settings) - known
    if unknown:
        raise FervidError(f"{ENV_CONFIG}: unknown settings {sorted(unknown)}")
    model = settings.pop("model", None)
    return create_app(model, **settings)
