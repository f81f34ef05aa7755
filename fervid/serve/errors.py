"""The answers of ``fervid serve`` when something goes wrong: ``{"error": "..."}`` and a status.

Every failure a client can cause is a 4xx it can act on (503 with ``Retry-After`` when the
server is full); a client that hung up gets one log line; anything unexpected is logged
here, once, and answered with a bare 500, never a traceback.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from ..errors import FervidError
from .schemas import ErrorResponse
from .uploads import UploadError

log = logging.getLogger("fervid.serve")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(UploadError)
    async def _upload_error(request: Request, exc: UploadError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _disconnect(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody is left to answer; what the operator needs is that it happened, in one line.
        log.info("%s %s: client disconnected before the upload was complete; request dropped",
                 request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(FervidError)
    async def _fervid_error(request: Request, exc: FervidError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = [str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path")]
            parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
        return error_response(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error (logged on the server)")


ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 500, 503)}
