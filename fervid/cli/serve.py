"""``fervid serve``: the HTTP API (``/v1/...``, docs at ``/docs``) and the browser page at ``/``."""
from __future__ import annotations

import argparse
import os
import socket
import sys

from .common import add_recognizer_flags, recognizer_settings

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="HTTP API and browser page (upload, webcam) for recognition",
        description="Serve recognition over HTTP: POST /v1/predict, /v1/predict/batch, /v1/video; "
        "GET /v1/model, /healthz, the API docs at /docs and a browser page at /. Uploaded images stay "
        "in memory; an uploaded video is held in a private temporary file only while it is read.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; there is no "
                   "authentication, so think before using 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    add_recognizer_flags(p, threads=False)  # its --threads: inferences at once, below
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="server processes, each with its own copy of the model (default: 1)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="inferences that may run at once in each process (default: CPU cores / workers)")
    p.add_argument("--max-upload-mb", type=float, default=8.0, metavar="MB",
                   help="largest image upload, in MB; larger ones get 413 (default: 8)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                   help="largest image, in pixels (width x height), checked before decoding (default: 40000000)")
    p.add_argument("--max-batch-files", type=int, default=16, metavar="N",
                   help="most images in one /v1/predict/batch request (default: 16)")
    p.add_argument("--max-batch-mb", type=float, default=32.0, metavar="MB",
                   help="largest /v1/predict/batch request, in MB (default: 32)")
    p.add_argument("--max-video-mb", type=float, default=50.0, metavar="MB",
                   help="largest video upload, in MB (default: 50)")
    p.add_argument("--max-video-seconds", type=float, default=60.0, metavar="S",
                   help="longest video accepted, in seconds (default: 60)")
    p.add_argument("--max-uploads", type=int, default=32, metavar="N",
                   help="image requests received or processed at once; more are answered 503 with "
                   "Retry-After (default: 32)")
    p.add_argument("--max-video-uploads", type=int, default=4, metavar="N",
                   help="video requests received or processed at once; more are answered 503 (default: 4)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="server log level (default: info)")
    p.set_defaults(func=run)


def _check_port(host: str, port: int) -> None:
    """Refuse a busy port in one line before loading anything (uvicorn would log a traceback-ish error)."""
    from ..errors import BadInputError

    if not 0 < port < 65536:
        raise BadInputError(f"--port must be 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise BadInputError(f"--host {host}: cannot be resolved ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise BadInputError(f"{host}:{port}: cannot listen there ({e.strerror}); choose another --port "
                                "or --host") from None


def run(args: argparse.Namespace) -> int:
    import uvicorn  # without the serve extra: one line from cli.main

    from ..errors import BadInputError
    from ..serve import app as serve
    from ..serve import config as serve_config

    settings = recognizer_settings(args, threads=1)  # first: a bad flag is one line before any work
    if args.workers < 1:
        raise BadInputError(f"--workers must be >= 1, got {args.workers}")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    from ..modelfile import portable_reference

    model = portable_reference(args.model or None)  # workers may not share our cwd
    config = serve_config.ServeConfig(
        model=model, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
        max_batch_files=args.max_batch_files, max_batch_mb=args.max_batch_mb, max_video_mb=args.max_video_mb,
        max_video_seconds=args.max_video_seconds, max_uploads=args.max_uploads,
        max_video_uploads=args.max_video_uploads, concurrency=threads, min_confidence=settings.min_confidence,
        min_face=settings.min_face, classes=list(settings.classes) if settings.classes else None,
        detect_size=settings.detect_size, face_check=settings.face_check,
        prior=os.path.abspath(settings.prior) if os.path.exists(settings.prior) else settings.prior)
    _check_port(args.host, args.port)
    import logging

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
    # Load once here, so a bad model is a one-line error before the port opens.
    recognizer = serve_config.load_recognizer(config)
    if args.host not in LOOPBACK:
        print(f"fervid serve: warning: listening on {args.host}, reachable from other machines; the API has "
              "no authentication", file=sys.stderr)
    print(f"fervid serve: http://{args.host}:{args.port}/ (API docs at /docs), {args.workers} worker(s), "
          f"{threads} inference thread(s) each; Ctrl-C stops", file=sys.stderr)
    if args.workers == 1:
        app = serve.create_app(config.model, recognizer=recognizer, **serve_config.settings_of(config))
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    else:
        os.environ[serve_config.ENV_CONFIG] = serve_config.config_to_env(config)
        uvicorn.run("fervid.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level)
    return 0
